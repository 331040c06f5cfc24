"""decoder=custom: loading the postprocess hook, calling it, its failures; and through the element."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from pyinfer._gi import Gst
from pyinfer.decoders.custom import CustomDecoder, HookError, PostprocessContext, load_hook
from pyinfer.errors import ConfigError, DecodeError
from pyinfer.ops.letterbox import LetterboxGeometry
from support import run

HOOKS = '''
import numpy as np
import torch
from pyinfer.detections import Detections

CALLS = []


def first_anchor(outputs, ctx):
    """One detection per frame: the first anchor's box (cx, cy, w, h), class 1, score 0.6."""
    CALLS.append((tuple(o.shape for o in outputs), ctx.batch_size, ctx.frame_size, ctx.input_size))
    out = outputs[0]
    cx, cy, w, h = out[:, 0, 0], out[:, 1, 0], out[:, 2, 0], out[:, 3, 0]
    boxes = ctx.to_frame(torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)).numpy()
    return [
        Detections(boxes[i : i + 1].astype(np.float32), np.array([0.6], np.float32), np.array([1], np.int32),
                   extra={"score_x10": np.array([6])})
        for i in range(ctx.batch_size)
    ]


def one(outputs, ctx):
    return Detections.empty()


def boom(outputs, ctx):
    raise ValueError("bad tensor layout")


def wrong_count(outputs, ctx):
    return [Detections.empty()] * (ctx.batch_size + 1)


def wrong_type(outputs, ctx):
    return {"boxes": outputs[0]}


not_callable = 42
'''


@pytest.fixture
def hooks(tmp_path, monkeypatch):
    """The hooks above as importable module ``pyinfer_test_hooks`` and as a file; returns the file path."""
    path = tmp_path / "pyinfer_test_hooks.py"
    path.write_text(textwrap.dedent(HOOKS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return path


GEO = LetterboxGeometry.compute(640, 480, 320, 320)
OUT = torch.tensor([[100.0, 100.0, 40.0, 40.0, 0.9]]).T[None].repeat(2, 1, 1)  # (2, 5, 1): one anchor, 2 frames


def _decode(spec: str, outputs=None):
    return CustomDecoder(spec).decode(
        outputs if outputs is not None else [OUT], GEO, conf_threshold=0.3, iou_threshold=0.5, max_detections=7
    )


@pytest.mark.parametrize("by", ["module", "file"])
def test_the_hook_gets_outputs_and_geometry_and_its_detections_come_back(hooks, by):
    spec = "pyinfer_test_hooks:first_anchor" if by == "module" else f"{hooks}:first_anchor"
    got = _decode(spec).detections(("a", "b"))
    assert len(got) == 2
    for d in got:
        np.testing.assert_allclose(d.xyxy, [[160, 80, 240, 160]])  # (80..120) in the input -> frame pixels
        assert d.label(0) == "b" and d.extra["score_x10"].tolist() == [6]
    module = __import__("pyinfer_test_hooks") if by == "module" else None
    if module is not None:
        assert module.CALLS[-1] == (((2, 5, 1),), 2, (640, 480), (320, 320))


def test_a_single_detections_is_accepted_for_a_batch_of_one(hooks):
    assert len(_decode("pyinfer_test_hooks:one", [OUT[:1]]).detections()) == 1


def test_an_exception_in_the_hook_is_a_hook_error_naming_it(hooks):
    with pytest.raises(HookError, match=r"postprocess hook pyinfer_test_hooks:boom raised ValueError: bad tensor"):
        _decode("pyinfer_test_hooks:boom")


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("wrong_count", r"must return 2 Detections \(one per frame\); it returned a sequence of 3"),
        ("wrong_type", r"must return 2 Detections.*returned dict"),
        ("one", r"must return 2 Detections.*a sequence of 1"),
    ],
)
def test_a_hook_returning_the_wrong_thing_is_a_decode_error(hooks, name, match):
    with pytest.raises(DecodeError, match=match):
        _decode(f"pyinfer_test_hooks:{name}")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("no_colon", r"not module:function"),
        ("mod:", r"not module:function"),
        ("mod:not-an-identifier", r"not module:function"),
        ("pyinfer_no_such_module:f", r"importing pyinfer_no_such_module failed: ModuleNotFoundError"),
        ("pyinfer_test_hooks:missing", r"has no 'missing'"),
        ("pyinfer_test_hooks:not_callable", r"'not_callable' is not callable"),
        ("/no/such/file.py:f", r"file /no/such/file.py does not exist"),
    ],
)
def test_hooks_that_cannot_load_are_settings_errors_naming_them(hooks, spec, match):
    with pytest.raises(ConfigError, match=match):
        load_hook(spec)


def test_the_context_reports_frame_and_input_sizes():
    ctx = PostprocessContext(LetterboxGeometry.compute(641, 479, 320, 256), 3, 0.25, 0.45, 300)
    assert ctx.frame_size == (641, 479) and ctx.input_size == (320, 256)
    box = ctx.to_frame(torch.tensor([[0.0, 0.0, 320.0, 256.0]]))
    np.testing.assert_allclose(box.numpy(), [[0, 0, 641, 479]])


# Through the element.


def _pipeline(model, extra: str, n: int = 4) -> Gst.Pipeline:
    return Gst.parse_launch(
        f"videotestsrc num-buffers={n} ! video/x-raw,format=RGB,width=640,height=480,framerate=30/1 ! "
        f"pyinfer name=infer model-engine={model} {extra} ! appsink name=sink"
    )


def test_the_element_writes_the_hooks_detections_and_says_it_uses_custom(fixed_model, hooks):
    pipeline = _pipeline(fixed_model, f"postprocess={hooks}:first_anchor batch-size=2")
    infer = pipeline.get_by_name("infer")
    pipeline.set_state(Gst.State.PAUSED)
    pipeline.get_state(Gst.CLOCK_TIME_NONE)
    used = infer.get_property("decoder-used")
    pipeline.set_state(Gst.State.NULL)
    assert used == f"custom (auto: postprocess={hooks}:first_anchor is set)"
    res = run(_pipeline(fixed_model, f"postprocess={hooks}:first_anchor batch-size=2"))
    assert res.ok, res.error
    assert len(res.detections) == 4
    for d in res.detections:  # FIXED_TABLE's first anchor (100, 100, 40, 40) with the hook's class and score
        np.testing.assert_allclose(d.xyxy, [[160, 80, 240, 160]], atol=1e-3)
        assert d.class_id.tolist() == [1] and d.confidence.tolist() == pytest.approx([0.6]) and d.label(0) == "b"


def test_a_failing_hook_stops_the_pipeline_with_an_error_naming_it(fixed_model, hooks):
    res = run(_pipeline(fixed_model, f"postprocess={hooks}:boom"))
    assert res.message == Gst.MessageType.ERROR
    assert res.error.matches(Gst.LibraryError.quark(), Gst.LibraryError.FAILED)
    assert f"postprocess hook {hooks}:boom raised ValueError: bad tensor layout" in res.error.message
    assert len(res.pts) == 0


def test_a_failing_hook_with_on_error_skip_lets_frames_pass_and_counts_them(fixed_model, hooks):
    pipeline = _pipeline(fixed_model, f"postprocess={hooks}:boom on-error=skip", n=5)
    res = run(pipeline)
    assert res.ok, res.error
    assert len(res.pts) == 5 and all(len(d) == 0 for d in res.detections)
    assert pipeline.get_by_name("infer").get_property("skipped-buffers") == 5
    assert len(res.warnings) == 1 and f"postprocess hook {hooks}:boom raised" in res.warnings[0]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("decoder=custom", "decoder=custom needs the postprocess property"),
        ("postprocess=pyinfer_no_such_module:f", "importing pyinfer_no_such_module failed"),
        ("decoder=yolov8 postprocess=m:f", "postprocess=m:f is set but decoder is 'yolov8'"),
    ],
)
def test_hook_settings_that_cannot_work_are_settings_errors_at_start(fixed_model, extra, match):
    res = run(_pipeline(fixed_model, extra, n=1))
    assert res.message == Gst.MessageType.ERROR
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.SETTINGS), res.error.message
    assert match in res.error.message
