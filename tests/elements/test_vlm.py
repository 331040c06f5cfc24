"""pyvlm (issue #16): a slow model beside the video. The video never waits for it; answers land on later frames
of the same stream and object with the number of the frame the model read; the queue stays bounded; a prompt set
while playing applies between model calls; a broken model is an ERROR on the bus, never a hang or a lost buffer.

Frames carry their number in their pixels and the test models (``tests/text_models.py``) answer what they read,
so every answer can be checked against the frame it names.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

import text_models
from pyinfer._gi import Gst, structure
from pyinfer.detections import Detections
from pyinfer.elements._base import writable
from pyinfer.elements.msgconv import read_payloads
from pyinfer.meta import read_detections, roi
from pyinfer.meta.text import read_texts

W, H = 96, 64


def numbered(i: int) -> np.ndarray:
    frame = np.zeros((H, W, 3), np.uint8)
    frame[..., 0], frame[..., 1] = i % 256, i // 256
    return frame


@dataclass
class Run:
    texts: list = field(default_factory=list)  # per buffer out: its TextResults
    detections: list = field(default_factory=list)
    latency_s: list = field(default_factory=list)  # per buffer: time from pyvlm's sink pad to its src pad
    messages: list = field(default_factory=list)  # pyinfer-text element messages, as dicts
    warnings: list = field(default_factory=list)
    payloads: list = field(default_factory=list)  # per buffer out: pymsgconv's messages (after="pymsgconv")
    frames: list = field(default_factory=list)  # per buffer out: its pixels
    final: Gst.Message | None = None
    element: Gst.Element | None = None
    pushed: int = 0

    @property
    def error(self):
        return self.final.parse_error() if self.final is not None and self.final.type == Gst.MessageType.ERROR else None


def play(props: str, frames: int, *, pace_s: float = 0.01, objects=None, fmt: str = "RGB", during=None,
         after: str = "", timeout_s: float = 60.0) -> Run:  # fmt: skip
    """Push ``frames`` numbered frames (``pace_s`` apart) through ``pyvlm props``; ``objects(i)`` gives frame i's
    detections to attach upstream; ``during(i, element)`` runs before frame i is pushed; ``after``: elements
    between pyvlm and the appsink."""
    tail = f"{after} ! " if after else ""
    pipeline = Gst.parse_launch(f"appsrc name=src format=time ! pyvlm name=v {props} ! {tail}appsink name=sink "
                                "sync=false")  # fmt: skip
    run = Run(element=pipeline.get_by_name("v"))
    sink, src = pipeline.get_by_name("sink"), pipeline.get_by_name("src")
    entered: dict[int, float] = {}

    def on_in(pad, info):
        entered[info.get_buffer().pts] = time.monotonic()
        return Gst.PadProbeReturn.OK

    def on_out(pad, info):
        pts = info.get_buffer().pts
        run.latency_s.append(time.monotonic() - entered.pop(pts, time.monotonic()))
        return Gst.PadProbeReturn.OK

    run.element.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, on_in)
    run.element.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, on_out)

    def on_sample(appsink):
        buf = appsink.emit("pull-sample").get_buffer()
        run.texts.append(read_texts(buf))
        run.detections.append(read_detections(buf))
        payloads = read_payloads(buf)
        run.payloads.append([json.loads(t) for t in payloads.texts] if payloads is not None else [])
        ok, info = buf.map(Gst.MapFlags.READ)
        assert ok
        run.frames.append(np.frombuffer(bytes(info.data), np.uint8).reshape(H, W, 3))
        buf.unmap(info)
        return Gst.FlowReturn.OK

    sink.set_property("emit-signals", True)
    sink.connect("new-sample", on_sample)
    caps = Gst.Caps.from_string(f"video/x-raw,format={fmt},width={W},height={H},framerate=30/1")
    src.set_property("caps", caps)

    def feed():
        for i in range(frames):
            if during is not None:
                during(i, run.element)
            frame = numbered(i) if objects is None else objects(i)[0]
            if fmt == "BGR":
                frame = frame[..., ::-1]
            buf = Gst.Buffer.new_wrapped(np.ascontiguousarray(frame).tobytes())
            buf.pts, buf.duration = i * Gst.SECOND // 30, Gst.SECOND // 30
            if objects is not None:
                dets, tracks = objects(i)[1:]
                with writable(buf):
                    metas = roi.write_detections(buf, dets, unique_id=1)
                    for k, t in enumerate(tracks):
                        if t is not None:
                            roi.set_track_id(metas[k], t)
            if src.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                break
            run.pushed += 1
            time.sleep(pace_s)
        src.emit("end-of-stream")

    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PLAYING)
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    kinds = Gst.MessageType.EOS | Gst.MessageType.ERROR | Gst.MessageType.WARNING | Gst.MessageType.ELEMENT
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = bus.timed_pop_filtered(int(0.5 * Gst.SECOND), kinds)
            if msg is None:
                continue
            if msg.type == Gst.MessageType.ELEMENT:
                with structure(msg) as s:
                    if s is not None and s.get_name() == "pyinfer-text":
                        run.messages.append({k: s.get_value(k) for k in ("text", "prompt", "source-frame", "object")})
                continue
            if msg.type == Gst.MessageType.WARNING:
                run.warnings.append(msg.parse_warning()[0].message)
                continue
            run.final = msg
            break
        feeder.join(10)
    finally:
        pipeline.set_state(Gst.State.NULL)
    assert run.final is not None, "no EOS or ERROR in time"
    return run


def test_the_video_never_waits_for_a_slow_model():
    # The model takes 1 s per call; 60 frames 10 ms apart all leave at once, far inside one call.
    run = play("text-model=text_models:slow model-config=1.0", 60)
    assert run.final.type == Gst.MessageType.EOS, run.error
    assert len(run.texts) == 60 == run.pushed  # no buffer lost or held
    assert max(run.latency_s) < 0.5, max(run.latency_s)  # a model call is 1 s: no buffer waited for one


def test_answers_land_on_later_frames_with_the_frame_they_were_computed_on():
    run = play("text-model=text_models:slow model-config=0.05", 80)
    assert run.final.type == Gst.MessageType.EOS, run.error
    assert len(run.texts) == 80
    seen = 0
    for n, texts in enumerate(run.texts):
        for t in texts:
            assert t.object_index == -1
            assert t.text == f"value {t.source_frame}"  # the model read the frame the record names
            assert t.source_frame < n  # answers come later than the frame they are about
            assert t.source_pts == t.source_frame * Gst.SECOND // 30
            assert t.box == (0.0, 0.0, W, H)
            seen += 1
    assert seen > 20  # most frames after the first answer carry one
    assert run.messages and all(m["text"] == f"value {m['source-frame']}" for m in run.messages)
    sources = [t[0].source_frame for t in run.texts if t]
    assert sources == sorted(sources) and len(set(sources)) > 3  # newer answers replace older ones


def test_sync_mode_answers_every_offered_frame_on_itself():
    """mode=sync: each offered frame waits for its own answer, none is dropped, and the answer is on that frame."""
    run = play("mode=sync text-model=text_models:slow model-config=0.02 interval=1 queue-size=1", 30, pace_s=0.0)
    assert run.final.type == Gst.MessageType.EOS, run.error
    assert len(run.texts) == 30 == run.pushed
    for n, texts in enumerate(run.texts):
        if n % 2 == 0:  # offered: answered on itself
            assert [t.source_frame for t in texts] == [n]
            assert texts[0].text == f"value {n}"
        else:  # not offered: the answer of the frame before
            assert [t.source_frame for t in texts] == [n - 1]
    assert run.element.get_property("answered") == 15 == run.element.get_property("submitted")
    assert run.element.get_property("dropped") == 0  # queue-size does not apply: nothing is dropped
    assert min(run.latency_s[::2]) >= 0.015  # an offered frame waited for the model (its call takes 20 ms)


def test_sync_mode_secondary_answers_each_object_on_its_own_frame():
    run = play("mode=sync process-mode=secondary text-model=text_models:colour model-config=0.0", 12,
               objects=_objects)  # fmt: skip
    assert run.final.type == Gst.MessageType.EOS, run.error
    for n, texts in enumerate(run.texts):
        assert texts and all(t.source_frame == n for t in texts)
        assert sorted(t.object_index for t in texts) == list(range(len(texts)))


@pytest.mark.parametrize(("props", "stops"), [("", True), ("on-error=skip", False)])
def test_sync_mode_a_failing_model_follows_on_error(props, stops):
    run = play(f"mode=sync text-model=text_models:raising {props}", 20, pace_s=0.0)
    if stops:
        assert run.error is not None and "the slow model broke" in run.error[0].message
        assert run.pushed < 20 or len(run.texts) < 20  # the stream stopped at the first frame
    else:
        assert run.final.type == Gst.MessageType.EOS, run.error
        assert len(run.texts) == 20 and not any(run.texts)
        assert any("the slow model broke" in w for w in run.warnings)


def test_bgr_frames_reach_the_model_as_rgb():
    run = play("text-model=text_models:slow model-config=0.02", 30, fmt="BGR")
    assert run.final.type == Gst.MessageType.EOS, run.error
    texts = [t for ts in run.texts for t in ts]
    assert texts and all(t.text == f"value {t.source_frame}" for t in texts)


@pytest.mark.parametrize("policy", ["oldest", "newest"])
def test_the_queue_bound_holds_under_a_slower_model(policy):
    run = play(f"text-model=text_models:slow model-config=0.3 queue-size=2 drop-policy={policy}", 60)
    assert run.final.type == Gst.MessageType.EOS, run.error
    assert len(run.texts) == 60
    queue = run.element._queue
    assert queue.peak <= 2
    assert queue.submitted == 60
    assert run.element.get_property("dropped") > 0
    assert run.element.get_property("answered") + run.element.get_property("dropped") <= queue.submitted
    if policy == "oldest":  # the model answers the freshest frames: the second answer is a late frame
        answered = sorted({m["source-frame"] for m in run.messages})
        assert answered[0] == 0 and (len(answered) < 2 or answered[1] > 10), answered
    else:  # the first frames offered are answered, later ones dropped while the queue is full
        answered = sorted({m["source-frame"] for m in run.messages})
        assert len(answered) >= 2 and answered == list(range(len(answered))), answered


def test_interval_offers_every_nth_frame():
    run = play("text-model=text_models:slow model-config=0.01 interval=4 queue-size=16", 40, pace_s=0.02)
    assert run.final.type == Gst.MessageType.EOS, run.error
    assert run.element._queue.submitted == 8
    assert {m["source-frame"] for m in run.messages} <= {0, 5, 10, 15, 20, 25, 30, 35}


def test_a_prompt_set_while_playing_applies_between_model_calls():
    text_models.CALLS.clear()

    def change(i, element):
        if i == 30:
            element.set_property("prompt", "how many?")

    run = play("text-model=text_models:recording model-config=0.03 prompt=describe batch-size=2 queue-size=4", 80,
               during=change)  # fmt: skip
    assert run.final.type == Gst.MessageType.EOS, run.error
    prompts = [p for _, p in text_models.CALLS]
    assert prompts[0] == "describe" and prompts[-1] == "how many?"
    switch = prompts.index("how many?")
    assert set(prompts[:switch]) == {"describe"} and set(prompts[switch:]) == {"how many?"}  # one switch
    for ts in run.texts:
        for t in ts:  # each answer says the prompt it was given, and the record carries that prompt
            assert t.text == f"{t.prompt}|value {t.source_frame}"
    late = [t for ts in run.texts[-10:] for t in ts]
    assert late and all(t.prompt == "how many?" for t in late)


def _objects(i: int):
    """Three objects moving right 1 px a frame: red (track 7), green (track 9), blue (untracked)."""
    frame = np.zeros((H, W, 3), np.uint8)
    boxes = np.array([[4 + i % 8, 4, 24 + i % 8, 20], [40, 30, 70, 60], [4 + i % 8, 40, 20 + i % 8, 60]], np.float32)
    for (x0, y0, x1, y1), c in zip(boxes.astype(int).tolist(), text_models.COLOURS.values()):
        frame[y0:y1, x0:x1] = c
    dets = Detections(xyxy=boxes, confidence=np.ones(3, np.float32), class_id=np.array([0, 1, 0], np.int32),
                      labels=("a", "b"))  # fmt: skip
    return frame, dets, [7, 9, None]


def test_object_answers_land_on_their_own_objects():
    run = play("text-model=text_models:colour model-config=0.05 process-mode=secondary queue-size=2", 60,
               objects=_objects)  # fmt: skip
    assert run.final.type == Gst.MessageType.EOS, run.error
    names = list(text_models.COLOURS)
    got = 0
    for n, texts in enumerate(run.texts):
        for t in texts:
            assert 0 <= t.object_index < 3
            assert t.source_frame < n
            name, size = t.text.split()
            assert name == names[t.object_index]  # the crop the model saw was this object's
            x0, y0, x1, y1 = _objects(t.source_frame)[1].xyxy[t.object_index]
            assert size == f"{int(x1 - x0)}x{int(y1 - y0)}"  # ... on the frame the record names
            assert t.track_id == [7, 9, None][t.object_index]
            assert t.box == tuple(float(v) for v in _objects(n)[1].xyxy[t.object_index])  # the object's box now
            got += 1
    assert got > 60


def test_operate_on_class_ids_limits_the_objects():
    run = play("text-model=text_models:colour model-config=0.02 process-mode=secondary operate-on-class-ids=1", 40,
               objects=_objects)  # fmt: skip
    assert run.final.type == Gst.MessageType.EOS, run.error
    indices = {t.object_index for ts in run.texts for t in ts}
    assert indices == {1}


def test_max_age_drops_answers_older_than_it():
    def ages(run):
        assert run.final.type == Gst.MessageType.EOS, run.error
        return [n - t.source_frame for n, ts in enumerate(run.texts) for t in ts]

    assert max(ages(play("text-model=text_models:slow model-config=0.3", 60))) > 3  # a 0.3 s call: older
    assert all(age <= 3 for age in ages(play("text-model=text_models:slow model-config=0.3 max-age=3", 60)))


def test_open_vocabulary_answers_become_detections():
    run = play("text-model=text_models:open_vocab", 40)
    assert run.final.type == Gst.MessageType.EOS, run.error
    later = [(n, d, t) for n, (d, t) in enumerate(zip(run.detections, run.texts)) if t]
    assert later
    for _, dets, texts in later:
        assert len(dets) == 1
        assert dets.label(0) == texts[0].text == f"thing {texts[0].source_frame}"
        np.testing.assert_allclose(dets.xyxy[0], [W / 4, H / 4, 3 * W / 4, 3 * H / 4])


@pytest.mark.parametrize(
    ("spec", "code", "text"),
    [
        ("", Gst.ResourceError.SETTINGS, "text-model is not set"),
        ("no_such_module_xyz:load", Gst.ResourceError.NOT_FOUND, "no module named 'no_such_module_xyz'"),
        ("text_models:nothing_here", Gst.ResourceError.NOT_FOUND, "has no attribute 'nothing_here'"),
        ("text_models:not_a_model", Gst.ResourceError.SETTINGS, "returned a int, not a callable"),
        ("text_models:failing_factory", Gst.LibraryError.INIT, "weights not found in /nowhere"),
        ("/no/such/file.py:load", Gst.ResourceError.NOT_FOUND, "does not exist"),
    ],
)
def test_a_bad_text_model_is_an_error_at_start(spec, code, text):
    run = play(f"text-model={spec}" if spec else "", 5)
    assert run.error is not None
    err, _ = run.error
    assert err.matches(type(code).quark(), code), err
    assert text in err.message


@pytest.mark.parametrize(
    ("model", "code", "text"),
    [
        ("raising", Gst.LibraryError.FAILED, "ValueError: the slow model broke"),
        ("one_string", Gst.StreamError.DECODE, "returned str"),
        ("too_few", Gst.StreamError.DECODE, "returned 0 answers for 1 images"),
        ("exits", Gst.LibraryError.FAILED, "exit(3)"),
    ],
)
def test_a_model_that_fails_posts_an_error_and_the_pipeline_stops(model, code, text):
    run = play(f"text-model=text_models:{model}", 200, pace_s=0.005)
    assert run.error is not None
    err, _ = run.error
    assert err.matches(type(code).quark(), code), err
    assert text in err.message
    assert run.element.get_property("answered") == 0


def test_on_error_skip_keeps_the_video_going_with_a_warning():
    run = play("text-model=text_models:raising on-error=skip", 40)
    assert run.final.type == Gst.MessageType.EOS, run.error
    assert len(run.texts) == 40 and not any(run.texts)
    assert any("the slow model broke" in w for w in run.warnings)


def test_texts_reach_the_messages_and_the_json_lines():
    from jsonschema import Draft202012Validator

    from pyinfer.jsonl import frame_record
    from pyinfer.messages import load_schema

    validator = Draft202012Validator(load_schema())
    run = play("text-model=text_models:slow model-config=0.03 prompt=count", 50, after="pymsgconv frame-interval=1")
    assert run.final.type == Gst.MessageType.EOS, run.error
    with_texts = 0
    for n, (messages, texts) in enumerate(zip(run.payloads, run.texts)):
        assert len(messages) == (1 if texts else 0)  # pyvlm's texts alone make a message
        for m in messages:
            validator.validate(m)
            (entry,) = m["texts"]
            assert entry == {"text": f"value {entry['source_frame']}", "prompt": "count", "unique_id": 16,
                             "source_frame": texts[0].source_frame, "source_pts_ns": texts[0].source_pts}  # fmt: skip
            assert entry["source_frame"] < m["frame_number"] == n
            with_texts += 1
        rec = frame_record(n, None, W, H, run.detections[n], texts=texts)
        assert rec.get("texts", []) == (messages[0]["texts"] if messages else [])
    assert with_texts > 10


def test_object_texts_reach_their_objects_in_the_messages():
    from jsonschema import Draft202012Validator

    from pyinfer.messages import load_schema

    validator = Draft202012Validator(load_schema())
    run = play("text-model=text_models:colour model-config=0.03 process-mode=secondary", 40, objects=_objects,
               after="pymsgconv frame-interval=1")  # fmt: skip
    assert run.final.type == Gst.MessageType.EOS, run.error
    names = list(text_models.COLOURS)
    seen = 0
    for (message,) in run.payloads:
        validator.validate(message)
        assert "texts" not in message
        for obj in message["objects"]:
            for entry in obj.get("texts", []):
                assert entry["text"].split()[0] == names[obj["index"]]
                assert entry["source_frame"] < message["frame_number"]
                seen += 1
    assert seen > 40


def test_pyosd_draws_frame_answers_as_captions():
    from pyinfer.draw import CAPTION_COLOUR

    run = play("text-model=text_models:slow model-config=0.03", 40, after="pyosd")
    assert run.final.type == Gst.MessageType.EOS, run.error
    for n, (frame, texts) in enumerate(zip(run.frames, run.texts)):
        corner = frame[: H // 2, : W // 2]
        drawn = bool(np.all(corner == CAPTION_COLOUR, axis=-1).any())
        assert drawn == bool(texts), n  # a caption exactly where the frame carries an answer
        if not texts:
            np.testing.assert_array_equal(frame, numbered(n))  # untouched


def test_pyosd_puts_object_answers_in_their_tags():
    from pyinfer.elements.osd import _with_texts

    run = play("text-model=text_models:colour model-config=0.03 process-mode=secondary", 30, objects=_objects)
    assert run.final.type == Gst.MessageType.EOS, run.error
    n = max(i for i, t in enumerate(run.texts) if len(t) == 3)
    buf = Gst.Buffer.new_wrapped(bytes(W * H * 3))
    dets = _objects(n)[1]
    with writable(buf):
        roi.write_detections(buf, dets, unique_id=1)
        from pyinfer.meta.text import write_texts

        write_texts(buf, run.texts[n])
    tagged, captions = _with_texts(buf, read_detections(buf))
    assert captions == []
    heads = tagged.extra["secondary_labels"].tolist()
    assert [h.split()[0] for h in heads] == list(text_models.COLOURS)
