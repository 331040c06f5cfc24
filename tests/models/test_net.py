"""ShapesNet's export layout, and the committed shapes detector: loads, has its metadata, detects held-out scenes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch  # core dependency: never skipped
import torchvision

import pyinfer.models
from pyinfer.models.net import ShapesNet, num_anchors
from pyinfer.ops.letterbox import letterbox
from pyinfer.scene import CLASSES, Scene
from support import load_committed

MODEL = Path(pyinfer.models.__file__).parent / "shapes.torchscript"
LABELS = MODEL.with_name("shapes.labels.txt")
N_384 = 48 * 48 + 24 * 24 + 12 * 12  # strides 8, 16, 32 on a 384x384 input


@pytest.fixture(scope="module")
def net() -> ShapesNet:
    torch.manual_seed(0)
    model = ShapesNet().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so fusing is really tested
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def traced(net: ShapesNet) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(net, torch.rand(1, 3, 384, 384))


@pytest.fixture(scope="module")
def shapes_model() -> tuple[torch.jit.ScriptModule, dict]:
    return load_committed(MODEL, "train_detector.py")


def test_num_anchors_sums_the_three_strides() -> None:
    assert num_anchors(384, 384) == N_384 == 3024
    assert num_anchors(640, 384) == 80 * 48 + 40 * 24 + 20 * 12


@pytest.mark.parametrize("batch", [1, 3])
def test_forward_gives_the_yolov8_export_layout(net: ShapesNet, traced: torch.jit.ScriptModule, batch: int) -> None:
    x = torch.rand(batch, 3, 384, 384)
    with torch.no_grad():
        out, out_traced = net(x), traced(x)
    assert out.shape == (batch, 4 + len(CLASSES), N_384)
    assert out_traced.shape == out.shape
    torch.testing.assert_close(out_traced, out)
    scores = out[:, 4:]
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    assert (out[:, 2:4] > 0).all()  # widths and heights


def test_anchor_order_is_stride_by_stride_row_major(net: ShapesNet) -> None:
    # A box predicts around its own anchor: mean predicted centres follow the anchor grid.
    with torch.no_grad():
        out = net(torch.rand(1, 3, 384, 384))[0]
    cx, cy = out[0], out[1]
    first = slice(0, 48 * 48)
    gx = (torch.arange(48 * 48) % 48 + 0.5) * 8
    gy = (torch.arange(48 * 48) // 48 + 0.5) * 8
    assert (cx[first] - gx).abs().max() < 8 * 4
    assert (cy[first] - gy).abs().max() < 8 * 4
    assert cx[-1] > 350 and cy[-1] > 350  # last anchor: bottom-right cell of stride 32


def test_fuse_keeps_the_outputs(net: ShapesNet) -> None:
    import copy

    x = torch.rand(2, 3, 384, 384)
    with torch.no_grad():
        torch.testing.assert_close(copy.deepcopy(net).fuse()(x), net(x), rtol=1e-4, atol=1e-3)


def test_committed_model_has_ultralytics_style_metadata(shapes_model: tuple[torch.jit.ScriptModule, dict]) -> None:
    _, meta = shapes_model
    assert meta["task"] == "detect"
    assert meta["imgsz"] == [384, 384]
    assert meta["stride"] == 32
    assert meta["names"] == {"0": "circle", "1": "square", "2": "triangle"}
    assert meta["pyinfer"]["decoder"] == "yolov8"
    assert meta["pyinfer"]["letterbox"] is True
    for result in meta["pyinfer"]["eval"].values():
        assert result["precision"] >= 0.9 and result["recall"] >= 0.9
    assert LABELS.read_text().splitlines() == list(CLASSES)
    assert MODEL.stat().st_size < 15 * 2**20


@pytest.mark.parametrize("batch", [1, 2])
def test_committed_model_outputs_batch_x_7_x_n(shapes_model: tuple[torch.jit.ScriptModule, dict], batch: int) -> None:
    model, _ = shapes_model
    with torch.no_grad():
        out = model(torch.rand(batch, 3, 384, 384))
    assert out.shape == (batch, 7, N_384)
    assert out.dtype == torch.float32


def _decode(out: torch.Tensor, conf: float = 0.25, iou: float = 0.45) -> list[torch.Tensor]:
    """(B, 7, N) -> per image (K, 6) x1, y1, x2, y2, score, class in model-input pixels."""
    results = []
    for pred in out.transpose(1, 2):
        score, cls = pred[:, 4:].max(1)
        keep = score > conf
        xyxy = torchvision.ops.box_convert(pred[keep, :4], "cxcywh", "xyxy")
        score, cls = score[keep], cls[keep]
        k = torchvision.ops.batched_nms(xyxy, score, cls, iou)
        results.append(torch.cat((xyxy[k], score[k, None], cls[k, None].float()), 1))
    return results


def _true_positives(pred: np.ndarray, gt: np.ndarray, iou_thr: float = 0.5) -> int:
    """Greedy same-class matching by confidence; gt rows are (class, x1, y1, x2, y2)."""
    used = np.zeros(len(gt), bool)
    tp = 0
    for p in pred[np.argsort(-pred[:, 4])]:
        lt = np.maximum(p[None, :2], gt[:, 1:3])
        rb = np.minimum(p[None, 2:4], gt[:, 3:5])
        inter = np.clip(rb - lt, 0, None).prod(1)
        union = (p[2] - p[0]) * (p[3] - p[1]) + (gt[:, 3] - gt[:, 1]) * (gt[:, 4] - gt[:, 2]) - inter
        iou = np.where((gt[:, 0] == p[5]) & ~used, inter / np.maximum(union, 1e-9), 0.0)
        if len(gt) and iou.max() >= iou_thr:
            used[iou.argmax()] = True
            tp += 1
    return tp


def test_committed_model_detects_a_held_out_scene(shapes_model: tuple[torch.jit.ScriptModule, dict]) -> None:
    model, _ = shapes_model
    scene = Scene(424242, 960, 544)  # a seed and a size never used in training
    tp = n_pred = n_gt = 0
    for start in range(0, 30, 10):
        frames, truths = zip(*(scene.frame(i) for i in range(start, start + 10)))
        x, geo = letterbox(torch.from_numpy(np.stack(frames)), 384, 384)
        with torch.no_grad():
            detections = _decode(model(x))
        for det, objects in zip(detections, truths):
            det[:, :4] = geo.to_frame(det[:, :4])
            gt = np.array(
                [(o.class_id, o.bbox[0], o.bbox[1], o.bbox[0] + o.bbox[2], o.bbox[1] + o.bbox[3]) for o in objects],
                np.float64,
            ).reshape(-1, 5)
            tp += _true_positives(det.double().numpy(), gt)
            n_pred, n_gt = n_pred + len(det), n_gt + len(gt)
    assert n_gt > 50
    precision, recall = tp / max(n_pred, 1), tp / n_gt
    assert precision >= 0.9, f"precision {precision:.3f} ({tp}/{n_pred})"
    assert recall >= 0.9, f"recall {recall:.3f} ({tp}/{n_gt})"
