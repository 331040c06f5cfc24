"""pyvlm on DeepStream batches (issue #16), through real pipelines with the contract fakes (tests/fakes).

Each frame of an NVMM batch belongs to a source (``source_id``); answers about one source's frames must land on
that source's later frames only. A frame's answer becomes display meta text (what nvdsosd draws: the DS 9 binding
accepts no plain user meta on a frame), an object's answer a JSON user meta of type TEXT_META_TYPE on that object.
The test models answer what they saw (the image's mean and size), so every answer can be checked against the
surface it was computed on.
"""

from __future__ import annotations

import json

import nvds
import pytest

import text_models  # noqa: F401  (tests/ is on the path: the pipelines load text_models:...)
from pyinfer._gi import Gst, structure
from pyinfer.elements._vlm_ds import TEXT_META_TYPE

W, H = 320, 240


def _expected(surface) -> str:
    return f"mean {float(surface.hwc()[..., :3].mean()):.3f} {W}x{H}"


def _run(run_pipeline, vlm: str, mux: str = "batch-size=4 num-batches=5", infer: str = "", pace_us: int = 0):
    desc = f"fakenvstreammux width={W} height={H} {mux} ! "
    if infer:
        desc += f"pyinfer {infer} ! "
    if pace_us:  # batches pushed as a live muxer would, not all at once
        desc += f"identity sleep-time={pace_us} ! "
    desc += f"pyvlm name=v {vlm} ! fakesink"
    pipeline = Gst.parse_launch(desc)
    messages: list[dict] = []

    def on_message(_bus, msg):
        with structure(msg) as s:
            if s is not None and s.get_name() == "pyinfer-text":
                messages.append({k: s.get_value(k) for k in ("text", "source-id", "source-frame", "object")})

    bus = pipeline.get_bus()
    bus.enable_sync_message_emission()
    bus.connect("sync-message::element", on_message)
    result = run_pipeline(pipeline)
    return result, messages


def test_sync_frame_answers_become_display_text_on_their_own_frame(run_pipeline):
    result, messages = _run(run_pipeline, "mode=sync text-model=text_models:mean")
    assert result.ok, result.error
    frames = [(bm, f) for bm in nvds.HISTORY for f in bm.frames]
    assert len(frames) == 20
    for bm, f in frames:
        texts = [t["display_text"] for dm in f.display_metas for t in dm.texts]
        assert texts == [_expected(bm.surfaces[f.batch_id])], (f.source_id, f.frame_number)
        assert not f.objects
    assert len(messages) == 20
    assert {(m["source-id"], m["source-frame"]) for m in messages} == {(s, n) for s in range(4) for n in range(5)}


def test_async_answers_stay_with_their_source(run_pipeline):
    """Four sources in each batch; the model is slow: answers land on later frames of the same source only."""
    result, messages = _run(run_pipeline, "text-model=text_models:mean model-config=0.05 queue-size=2",
                            "batch-size=4 num-batches=40", pace_us=20_000)  # fmt: skip
    assert result.ok, result.error
    answer_of = {(m["source-id"], m["source-frame"]): m["text"] for m in messages}
    by_source_text: dict[str, int] = {}
    for (sid, _n), text in answer_of.items():
        by_source_text[text] = sid
    shown = 0
    for bm in nvds.HISTORY:
        for f in bm.frames:
            for dm in f.display_metas:
                for t in dm.texts:
                    assert by_source_text[t["display_text"]] == f.source_id  # never another camera's answer
                    shown += 1
    assert shown > 40
    # the model read whole batches: every source got answers
    assert {sid for sid, _ in answer_of} == {0, 1, 2, 3}
    surfaces = {(f.source_id, f.frame_number): bm.surfaces[f.batch_id] for bm in nvds.HISTORY for f in bm.frames}
    for key, text in answer_of.items():
        assert text == _expected(surfaces[key])  # the answer names the frame it was computed on


def test_secondary_answers_become_user_meta_on_their_objects(run_pipeline, embedded_model):
    result, messages = _run(
        run_pipeline, "mode=sync process-mode=secondary text-model=text_models:mean unique-id=21",
        "batch-size=2 num-batches=3", f"model-engine={embedded_model.path} unique-id=1",
    )  # fmt: skip
    assert result.ok, result.error
    objects = [(bm, f, o) for bm in nvds.HISTORY for f in bm.frames for o in f.objects]
    assert len(objects) > 5
    for bm, f, o in objects:
        metas = [u for u in o.user_meta if u.meta_type == TEXT_META_TYPE]
        assert len(metas) == 1, (f.frame_number, o.index)
        record = metas[0].data
        assert record["unique_id"] == 21 and record["source_frame"] == f.frame_number
        r = o.rect_params
        left, top = max(0, int(r.left)), max(0, int(r.top))
        right, bottom = min(W, -int(-(r.left + r.width) // 1)), min(H, -int(-(r.top + r.height) // 1))
        crop = bm.surfaces[f.batch_id].hwc()[top:bottom, left:right, :3]
        assert record["text"] == f"mean {float(crop.mean()):.3f} {right - left}x{bottom - top}"
        json.dumps(record)  # plain JSON, as set_user_data_json takes it
        assert not f.display_metas  # no frame-level answer in secondary mode
    assert len(messages) == len(objects)


def test_operate_on_class_ids_limits_the_objects_under_deepstream(run_pipeline, embedded_model):
    result, _ = _run(run_pipeline, "mode=sync process-mode=secondary text-model=text_models:mean "
                     "operate-on-class-ids=0", "batch-size=2 num-batches=3",
                     f"model-engine={embedded_model.path}")  # fmt: skip
    assert result.ok, result.error
    objects = [o for bm in nvds.HISTORY for f in bm.frames for o in f.objects]
    assert {o.class_id for o in objects} - {0}  # there are objects of other classes
    for o in objects:
        has = any(u.meta_type == TEXT_META_TYPE for u in o.user_meta)
        assert has == (o.class_id == 0)


def test_more_frame_texts_than_a_display_meta_holds_take_another(monkeypatch):
    from pyservicemaker import osd

    from pyinfer.elements import _vlm_ds

    class FakeBuffer:
        def __init__(self, _gst):
            self.batch_meta = bm

    frame = nvds.make_batch([__import__("numpy").zeros((H, W, 3), "uint8")])
    bm = __import__("pyservicemaker").BatchMetadata(frame)
    sm = type("SM", (), {"Buffer": FakeBuffer})
    texts = [{"text": f"t{i}"} for i in range(20)]
    assert _vlm_ds.write_batch(sm, object(), {0: (texts, {})}) == 20
    metas = frame.frames[0].display_metas
    assert [len(dm.texts) for dm in metas] == [16, 4] and not any(dm.dropped for dm in metas)
    assert [t["display_text"] for dm in metas for t in dm.texts] == [f"t{i}" for i in range(20)]
    assert isinstance(osd.Text(), osd.Text)


@pytest.mark.parametrize("api", ["pyds"])
def test_pyds_only_is_refused_with_a_message_saying_why(run_pipeline, monkeypatch, api):
    import sys

    monkeypatch.setitem(sys.modules, "pyservicemaker", None)  # as on DeepStream <= 7.0: no pyservicemaker
    result, _ = _run(run_pipeline, "text-model=text_models:mean", "batch-size=2 num-batches=2")
    assert not result.ok
    assert "pyservicemaker" in result.error.message and "pyds" in result.error.message
