"""Choosing a decoder: the registry (get_decoder), metadata hints, and auto's rules with their reasons."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from pyinfer._gi import Gst
from pyinfer.decoders import DECODERS, choose_decoder, get_decoder, hint_from_metadata
from pyinfer.errors import ConfigError, DecodeError
from support import FixedBoxes, run, save_torchscript


def z(*shape: int) -> torch.Tensor:
    return torch.zeros(shape)


@pytest.mark.parametrize(
    ("outputs", "names", "kwargs", "name", "reason"),
    [
        ([z(1, 84, 8400)], (), {}, "yolov8", r"\[1, 84, 8400\] = \[B, 4\+nc, N\]"),
        ([z(1, 7, 4)], ("a", "b", "c"), {}, "yolov8", r"model's 3 names"),  # few anchors, but 4 + 3 rows
        ([z(1, 6300, 85)], (), {}, "yolov5", r"\[B, N, 5\+nc\] \(channels last\)"),
        ([z(1, 40, 85)], ("x",) * 80, {}, "yolov5", r"model's 80 names"),
        ([z(1, 300, 6)], (), {}, "yolo-e2e", r"\[B, K, 6\]"),
        ([z(1, 300, 6)], ("x",) * 80, {}, "yolo-e2e", r"\[B, K, 6\]"),
        ([z(2, 1000)], (), {}, "classifier", r"\[B, nc\]"),
        ([z(1, 300, 4), z(1, 300, 80)], (), {}, "detr", r"\[B, Q, 4\] boxes"),
        ([z(1, 300, 80), z(1, 300, 4)], (), {}, "detr", r"\[B, Q, 4\] boxes"),
        ([z(1, 300, 91), z(1, 300, 4)], (), {"output_names": ("pred_logits", "pred_boxes")}, "detr", "output names"),
        ([z(1, 7, 4)], (), {}, "yolov8", r"default"),  # no rule fits exactly: the long-standing default
        ([z(1, 84, 8400)], (), {"hint": "yolo-obb"}, "yolo-obb", "metadata"),
        ([z(1, 84, 8400)], (), {"postprocess": "m:f"}, "custom", r"postprocess=m:f"),
    ],
)
def test_auto_picks_a_decoder_and_says_why(outputs, names, kwargs, name, reason):
    choice = choose_decoder(outputs, num_names=len(names), **kwargs)
    assert choice.name == name
    assert choice.reason.startswith("auto: ")
    assert re.search(reason, choice.reason), choice.reason
    assert str(choice) == f"{name} ({choice.reason})"


@pytest.mark.parametrize("outputs", [[z(1, 4, 100)], [z(8400)], [z(1, 2, 3, 4, 5)], [z(1, 300, 5), z(1, 200, 80)]])
def test_auto_names_the_shapes_it_cannot_read(outputs):
    shapes = ", ".join(str(list(o.shape)) for o in outputs)
    with pytest.raises(DecodeError, match=r"cannot tell the layout of outputs .*set decoder") as err:
        choose_decoder(outputs)
    assert shapes in str(err.value)


def test_auto_says_in_a_sentence_that_a_model_returned_no_tensors():
    with pytest.raises(DecodeError, match=r"cannot read the model's outputs: it returned no tensors .*set decoder"):
        choose_decoder([])


@pytest.mark.parametrize(
    ("metadata", "hint"),
    [
        ({"task": "detect", "end2end": False}, "yolov8"),
        ({"task": "detect", "end2end": True}, "yolo-e2e"),
        ({"task": "obb"}, "yolo-obb"),
        ({"task": "obb", "end2end": True}, "yolo-e2e"),
        ({"task": "classify"}, "classifier"),
        ({"task": "detect", "head": "RTDETRDecoder"}, "detr"),
        ({"task": "obb", "pyinfer": {"decoder": "custom"}}, "custom"),  # pyinfer's own key wins
        ({"task": "segment"}, "yolo-seg"),
        ({"task": "segment", "end2end": True}, "yolo-seg"),
        ({"task": "pose"}, "yolo-pose"),
        ({"task": "depth"}, None),  # no decoder for it
        ({"imgsz": [640, 640], "names": {"0": "a"}}, None),
        ({}, None),
    ],
)
def test_metadata_hints_follow_ultralytics_task_and_end2end(metadata, hint):
    assert hint_from_metadata(metadata) == hint


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_every_registered_decoder_is_built_by_its_key_and_says_its_name(name):
    decoder = get_decoder(name)
    assert decoder.name == name
    assert decoder.resize in ("letterbox", "stretch")
    assert get_decoder(name.upper()).name == name


def test_an_unknown_decoder_lists_the_known_ones():
    known = "auto, yolov8, yolov5, yolo-e2e, yolo-obb, yolo-seg, yolo-pose, detr"
    with pytest.raises(ConfigError, match=rf"unknown decoder 'yolov99'.*{known}"):
        get_decoder("yolov99")


def test_a_postprocess_hook_with_a_named_decoder_is_refused():
    with pytest.raises(ConfigError, match=r"postprocess=m:f is set but decoder is 'yolov8'"):
        get_decoder("yolov8", postprocess="m:f")


def test_custom_without_a_hook_is_refused():
    with pytest.raises(ConfigError, match=r"decoder=custom needs the postprocess property"):
        get_decoder("custom")


# Through the element: auto from the model's metadata, decoder-used, and outputs that do not fit.

OBB_TABLE = np.array(
    [  # anchors as columns: cx, cy, w, h, score0, score1, angle (radians)
        [100.0, 104.0, 250.0],
        [100.0, 100.0, 160.0],
        [80.0, 80.0, 60.0],
        [30.0, 30.0, 20.0],
        [0.9, 0.8, 0.1],
        [0.0, 0.0, 0.7],
        [0.5, 0.5, -0.3],
    ],
    np.float32,
)
E2E_ROWS = np.array(
    [[80.0, 80.0, 120.0, 120.0, 0.9, 1.0], [200.0, 100.0, 260.0, 180.0, 0.1, 0.0]] + [[0, 0, 1, 1, 0.0, 0.0]] * 8,
    np.float32,
)


def _fixed(tmp_path, name: str, table: np.ndarray, meta: dict) -> str:
    cfg = {"imgsz": [320, 320], "names": {"0": "a", "1": "b"}, **meta}
    return str(
        save_torchscript(FixedBoxes.build(table), tmp_path / f"{name}.torchscript", cfg, torch.zeros(1, 3, 320, 320))
    )


def _start(model: str, extra: str = "") -> tuple[Gst.Pipeline, Gst.Element]:
    pipeline = Gst.parse_launch(
        "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=640,height=480,framerate=30/1 ! "
        f"pyinfer name=infer model-engine={model} {extra} ! appsink name=sink"
    )
    return pipeline, pipeline.get_by_name("infer")


@pytest.mark.parametrize(
    ("table", "meta", "used"),
    [
        (OBB_TABLE, {"task": "obb"}, "yolo-obb (auto: the model's metadata names it)"),
        (E2E_ROWS, {"task": "detect", "end2end": True}, "yolo-e2e (auto: the model's metadata names it)"),
        (E2E_ROWS, {}, "yolo-e2e (auto: one output [1, 10, 6] = [B, K, 6] (end-to-end rows))"),
    ],
)
def test_decoder_used_says_what_auto_picked_and_why(tmp_path, table, meta, used):
    pipeline, infer = _start(_fixed(tmp_path, "m", table, meta))
    assert [infer.get_property(p) for p in ("decoder-used", "device-used", "backend-used")] == ["", "", ""]
    pipeline.set_state(Gst.State.PAUSED)
    pipeline.get_state(Gst.CLOCK_TIME_NONE)
    try:
        assert infer.get_property("decoder-used") == used
        import torch

        assert infer.get_property("device-used") == ("cuda:0" if torch.cuda.is_available() else "cpu")  # auto
        assert infer.get_property("backend-used") == "torchscript fp32"
    finally:
        pipeline.set_state(Gst.State.NULL)
    assert infer.get_property("device-used") == ""


def test_a_rotated_model_writes_rotated_boxes_into_the_metadata(tmp_path):
    res = run(_start(_fixed(tmp_path, "obb", OBB_TABLE, {"task": "obb"}))[0])
    assert res.ok, res.error
    d = res.detections[0]
    assert d.class_id.tolist() == [0, 1]  # the 0.8 twin of the first box is suppressed by rotated NMS
    # 320x320 input, 640x480 frame: gain 0.5, 40 px of padding at the top.
    np.testing.assert_allclose(d.cxcywhr, [[200, 120, 160, 60, 0.5], [500, 240, 120, 40, -0.3]], atol=1e-3)
    assert np.all(d.xyxy[:, :2] < d.cxcywhr[:, :2]) and np.all(d.xyxy[:, 2:] > d.cxcywhr[:, :2])


def test_end_to_end_rows_come_out_without_nms(tmp_path):
    res = run(
        _start(_fixed(tmp_path, "e2e", E2E_ROWS, {"end2end": True, "task": "detect"}), "confidence-threshold=0.05")[0]
    )
    assert res.ok, res.error
    np.testing.assert_allclose(res.detections[0].xyxy, [[160, 80, 240, 160], [400, 120, 520, 280]], atol=1e-3)
    assert res.detections[0].label(0) == "b"


@pytest.mark.parametrize(
    ("decoder", "match"),
    [
        ("classifier", r"decoder classifier expects an output of shape \[B, nc\].*got \[1, 7, 4\]"),
        ("yolo-e2e", r"\[B, K, 6\].*got \[1, 7, 4\]"),
        ("detr", r"decoder detr expects .*got \[1, 7, 4\]"),
        ("yolov5", r"\[B, N, 5\+nc\].*got \[1, 7, 4\]"),
    ],
)
def test_outputs_that_do_not_fit_the_chosen_decoder_stop_the_start_naming_both_shapes(fixed_model, decoder, match):
    res = run(_start(fixed_model, f"decoder={decoder}")[0])
    assert res.message == Gst.MessageType.ERROR
    assert res.error.matches(Gst.StreamError.quark(), Gst.StreamError.DECODE), res.error.message
    assert re.search(match, res.error.message), res.error.message
