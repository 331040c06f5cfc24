"""A decoder forced on outputs of another layout is refused at load, naming the decoder, the shapes and the right one.

Issue #18: a YOLOv8n export ([1, 84, 8400]) with ``decoder=yolov5`` gave class 7995 with confidence 57600, and
``decoder=detr`` and ``decoder=yolo-obb`` were accepted too. Shapes alone cannot refuse them (84 rows of 8400
columns is a valid [B, N, 5+nc] or [B, Q, 4+nc]); the values can (pixel coordinates where probabilities or
normalised boxes belong), once, at warm-up; and the model's class names tell yolov8 from yolo-obb.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from pyinfer._gi import Gst
from pyinfer.backends.base import LoadedModel
from pyinfer.decoders import check_fit, get_decoder
from pyinfer.engine import Engine, EngineConfig
from pyinfer.errors import DecodeError
from pyinfer.zoo import get_model
from support import FixedBoxes, run, save_torchscript

NAMES = tuple(f"class{i}" for i in range(80))


def yolov8n_like(seed: int = 0) -> np.ndarray:
    """(84, 8400) as a YOLOv8n at 640x640 gives: anchor-grid boxes in pixels, 80 sigmoid class scores."""
    rng = np.random.default_rng(seed)
    centres = []
    for stride in (8, 16, 32):
        n = 640 // stride
        ys, xs = np.mgrid[0:n, 0:n]
        centres.append(np.stack([xs.ravel(), ys.ravel()], 1) * stride + stride / 2)
    cxcy = np.concatenate(centres).T  # (2, 8400)
    out = np.zeros((84, 8400), np.float32)
    out[0:2] = cxcy + rng.normal(0, 2, cxcy.shape)
    out[2:4] = rng.uniform(10, 120, (2, 8400))
    out[4:] = rng.uniform(0, 0.02, (80, 8400))
    for k, anchor in enumerate((1000, 3000, 6500)):  # three confident objects, far apart
        out[4 + 7 * k, anchor] = 0.9
    return out


@pytest.fixture(scope="module")
def yolov8n(tmp_path_factory):
    """A TorchScript model with YOLOv8n's output and ultralytics' metadata (task detect, 80 names)."""
    path = tmp_path_factory.mktemp("fit") / "yolov8n-like.torchscript"
    cfg = {"imgsz": [640, 640], "task": "detect", "names": {str(i): n for i, n in enumerate(NAMES)}}
    return str(save_torchscript(FixedBoxes.build(yolov8n_like()), path, cfg, torch.zeros(1, 3, 640, 640)))


def out84() -> list[torch.Tensor]:
    return [torch.from_numpy(yolov8n_like()).unsqueeze(0)]


@pytest.mark.parametrize(
    ("decoder", "problem"),
    [
        ("yolov5", r"decoder yolov5 reads output \[1, 84, 8400\] as 84 rows .* where probabilities lie in \[0, 1\]"),
        ("detr", r"decoder detr reads outputs \[1, 84, 8400\] as 84 queries, but their boxes run from .* \[0, 1\]"),
    ],
)
def test_yolov8_outputs_forced_to_another_layout_are_refused_with_the_right_decoder(decoder, problem):
    with pytest.raises(DecodeError, match=problem) as err:
        get_decoder(decoder).num_classes(out84())
    assert "they look like yolov8" in str(err.value)
    assert "set decoder=yolov8" in str(err.value)


def test_yolov8_outputs_forced_to_yolo_obb_are_refused_by_the_models_names():
    # [1, 84, 8400] is a valid [B, 4+79+1, N], and the last class row passes for angles: only the names tell.
    model = LoadedModel(lambda x: out84(), torch.device("cpu"), torch.float32, (640, 640), NAMES, None, "m.onnx")
    with pytest.raises(DecodeError) as err:
        check_fit(get_decoder("yolo-obb"), out84(), model)
    msg = str(err.value)
    assert "decoder yolo-obb reads 79 classes from outputs [1, 84, 8400], but the model names 80" in msg
    assert "set decoder=yolov8" in msg


@pytest.mark.parametrize(
    ("outputs", "decoder", "nc"),
    [
        (out84, "yolov8", 80),
        (lambda: [torch.rand(2, 20, 300)], "yolo-obb", 15),  # angles in [0, 1): radians too
        (lambda: [torch.rand(1, 6300, 85)], "yolov5", 80),
        (lambda: [torch.rand(1, 300, 84)], "detr", 80),
        (lambda: [torch.rand(1, 300, 4), torch.randn(1, 300, 91) * 5], "detr", 91),  # logits: any value
        (lambda: [torch.tensor([[[1.0, 2.0, 30.0, 40.0, 0.9, 3.0]] * 10])], "yolo-e2e", None),
    ],
)
def test_outputs_of_the_decoders_own_layout_still_fit(outputs, decoder, nc):
    assert get_decoder(decoder).num_classes(outputs()) == nc


@pytest.mark.parametrize(
    ("outputs", "decoder", "problem"),
    [
        ([torch.rand(1, 6300, 85) * 600], "yolov8", r"values after the box run from .* where scores lie in \[0, 1\]"),
        ([torch.rand(1, 20, 300) * 600], "yolo-obb", r"class scores run from .* where scores lie in \[0, 1\]"),
        ([torch.cat([torch.rand(1, 19, 300), torch.full((1, 1, 300), 90.0)], 1)], "yolo-obb", r"angles in radians"),
        ([torch.rand(1, 300, 6)], "yolo-e2e", r"column 5 .* as class indices, but it holds fractions"),
    ],
)
def test_values_that_break_the_layout_are_refused(outputs, decoder, problem):
    with pytest.raises(DecodeError, match=problem):
        get_decoder(decoder).num_classes(outputs)


def test_values_are_checked_at_the_first_call_only_so_batches_pay_no_extra_copy():
    decoder = get_decoder("yolov5")
    assert decoder.num_classes([torch.rand(1, 6300, 85)]) == 80  # load: values checked
    assert decoder.num_classes([torch.rand(1, 6300, 85) * 600]) == 80  # a batch: shapes only


# Through the engine, as `pyinfer detect --decoder ...` and the element build it.


@pytest.mark.parametrize("decoder", ["yolov5", "detr"])
def test_the_engine_refuses_a_yolov8_model_with_a_forced_wrong_decoder(yolov8n, decoder):
    with pytest.raises(DecodeError, match=rf"^decoder {decoder} reads outputs? \[1, 84, 8400\]") as err:
        Engine.build(EngineConfig(model=yolov8n, device="cpu", decoder=decoder))
    assert "set decoder=yolov8" in str(err.value)


def test_the_engine_refuses_a_yolov8_model_forced_to_yolo_obb(yolov8n):
    # Needs Engine.warm_up to call decoders.check_fit (the names); see the report of issue #18.
    with pytest.raises(DecodeError, match=r"decoder yolo-obb reads 79 classes .* the model names 80"):
        Engine.build(EngineConfig(model=yolov8n, device="cpu", decoder="yolo-obb"))


@pytest.mark.parametrize("decoder", ["auto", "yolov8"])
def test_the_right_decoder_gives_the_three_objects(yolov8n, decoder):
    engine = Engine.build(EngineConfig(model=yolov8n, device="cpu", decoder=decoder))
    (dets,) = engine.infer(torch.zeros(1, 640, 640, 3, dtype=torch.uint8))
    assert sorted(dets.class_id.tolist()) == [0, 7, 14]
    assert dets.confidence.tolist() == pytest.approx([0.9] * 3)
    assert [dets.label(i) for i in np.argsort(dets.class_id)] == ["class0", "class7", "class14"]


# Through the element, with the embedded models: a STREAM/DECODE error at start.


def _start_error(model: str, decoder: str):
    pipeline = Gst.parse_launch(
        "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=320,height=240 ! "
        f"pyinfer name=infer model-engine={model} decoder={decoder} device=cpu ! appsink name=sink"
    )
    return run(pipeline)


@pytest.mark.parametrize("decoder", ["yolov5", "detr"])
def test_the_element_refuses_the_embedded_yolov8_model_with_a_wrong_decoder(decoder):
    res = _start_error(str(get_model("shapes").path), decoder)
    assert res.message == Gst.MessageType.ERROR
    assert res.error.matches(Gst.StreamError.quark(), Gst.StreamError.DECODE), res.error.message
    assert re.search(rf"decoder {decoder} reads outputs? \[1, 7, 3024\]", res.error.message), res.error.message
    assert "set decoder=yolov8" in res.error.message


def test_the_element_refuses_the_embedded_yolov8_model_as_yolo_obb():
    # Needs Engine.warm_up to call decoders.check_fit (the names); see the report of issue #18.
    res = _start_error(str(get_model("shapes").path), "yolo-obb")
    assert res.message == Gst.MessageType.ERROR
    assert res.error.matches(Gst.StreamError.quark(), Gst.StreamError.DECODE), res.error.message
    assert "decoder yolo-obb reads 2 classes from outputs [1, 7, 3024], but the model names 3" in res.error.message
    assert "set decoder=yolov8" in res.error.message


@pytest.mark.parametrize(("name", "decoder"), [("shapes", "yolov8"), ("shapes-obb", "yolo-obb")])
def test_the_element_takes_each_embedded_model_with_its_own_decoder(name, decoder):
    res = _start_error(str(get_model(name).path), decoder)
    assert res.ok, res.error
    assert len(res.detections) == 2
