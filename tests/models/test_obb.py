"""ShapesOBBNet's YOLO-OBB export layout, and the committed rotated detector: metadata, and held-out scenes."""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch  # core dependency: never skipped

import pyinfer.models
from pyinfer.engine import Engine, EngineConfig
from pyinfer.evaluate import EvalResult, evaluate
from pyinfer.jsonl import frame_record
from pyinfer.models.net import num_anchors
from pyinfer.models.net_obb import ShapesOBBNet, dist2rbox
from pyinfer.ops.rotated import corners
from pyinfer.scene import ROTATED_CLASSES
from pyinfer.scene.video import render_frames, truth_record
from pyinfer.zoo import get_model
from support import load_committed

MODEL = Path(pyinfer.models.__file__).parent / "shapes-obb.torchscript"
LABELS = MODEL.with_name("shapes-obb.labels.txt")
N_384 = num_anchors(384, 384)
NC = len(ROTATED_CLASSES)


@pytest.fixture(scope="module")
def net() -> ShapesOBBNet:
    torch.manual_seed(0)
    model = ShapesOBBNet(nc=NC).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so fusing is really tested
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def committed() -> tuple[torch.jit.ScriptModule, dict]:
    return load_committed(MODEL, "train_obb.py")


@pytest.mark.parametrize("batch", [1, 3])
def test_forward_gives_the_yolo_obb_export_layout(net: ShapesOBBNet, batch: int) -> None:
    x = torch.rand(batch, 3, 384, 384)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, torch.rand(1, 3, 384, 384))
    with torch.no_grad():
        out, out_traced = net(x), traced(x)
    assert out.shape == (batch, 4 + NC + 1, N_384)
    torch.testing.assert_close(out_traced, out)
    scores, angle = out[:, 4 : 4 + NC], out[:, -1]
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    assert (out[:, 2:4] > 0).all()
    assert angle.min() >= -math.pi / 4 and angle.max() <= 3 * math.pi / 4


@pytest.mark.parametrize(("logit", "want"), [(-30.0, -math.pi / 4), (0.0, math.pi / 4), (30.0, 3 * math.pi / 4)])
def test_angle_row_is_ultralytics_sigmoid_minus_a_quarter_times_pi(
    net: ShapesOBBNet, logit: float, want: float
) -> None:
    model = copy.deepcopy(net)
    with torch.no_grad():
        for a in model.angle:  # the logit is the bias alone
            a[-1].weight.zero_()
            a[-1].bias.fill_(logit)
        angle = model(torch.rand(1, 3, 384, 384))[:, -1]
    torch.testing.assert_close(angle, torch.full_like(angle, want))


def test_export_rows_are_the_training_boxes_rotated_about_their_anchors(net: ShapesOBBNet) -> None:
    x = torch.rand(2, 3, 384, 384)
    with torch.no_grad():
        out = net(x)
        ltrb, logits, angle, anchors, _ = net.forward_train(x)
    torch.testing.assert_close(out[:, 4 : 4 + NC].transpose(1, 2), logits.sigmoid())
    torch.testing.assert_close(out[:, -1:].transpose(1, 2), angle)
    # Reference: the box is ltrb around the anchor in the box's own axes, turned by the angle about the anchor.
    k = torch.randint(0, N_384, (50,))
    for b in range(2):
        left, top, right, bottom = ltrb[b, k].unbind(-1)
        a = angle[b, k, 0]
        off_u, off_v = (right - left) / 2, (bottom - top) / 2
        cx = anchors[k, 0] + off_u * a.cos() - off_v * a.sin()
        cy = anchors[k, 1] + off_u * a.sin() + off_v * a.cos()
        want = torch.stack((cx, cy, left + right, top + bottom), -1)
        torch.testing.assert_close(out[b, :4, k].T, want, rtol=1e-5, atol=1e-3)


def test_dist2rbox_with_angle_zero_is_the_axis_aligned_decode() -> None:
    ltrb = torch.tensor([[3.0, 4.0, 7.0, 2.0]])
    box = dist2rbox(ltrb, torch.zeros(1, 1), torch.tensor([[10.0, 20.0]]))
    torch.testing.assert_close(box, torch.tensor([[12.0, 19.0, 10.0, 6.0]]))


def test_fuse_keeps_the_outputs(net: ShapesOBBNet) -> None:
    x = torch.rand(2, 3, 384, 384)
    with torch.no_grad():
        torch.testing.assert_close(copy.deepcopy(net).fuse()(x), net(x), rtol=1e-4, atol=1e-3)


def test_committed_model_has_obb_metadata_and_is_listed(committed: tuple[torch.jit.ScriptModule, dict]) -> None:
    _, meta = committed
    assert meta["task"] == "obb"
    assert meta["imgsz"] == [384, 384]
    assert meta["names"] == {str(i): n for i, n in enumerate(ROTATED_CLASSES)}
    assert meta["pyinfer"]["decoder"] == "yolo-obb"
    assert meta["pyinfer"]["letterbox"] is True
    assert len(meta["pyinfer"]["eval"]) == 2
    for result in meta["pyinfer"]["eval"].values():  # recorded by the trainer on seed 1000003, 200 frames each
        assert result["precision"] >= 0.9 and result["recall"] >= 0.9
    assert LABELS.read_text().splitlines() == list(ROTATED_CLASSES)
    assert MODEL.stat().st_size < 10 * 2**20
    zoo = get_model("shapes-obb")
    assert (zoo.path, zoo.labels) == (MODEL, ROTATED_CLASSES)


def test_committed_model_outputs_batch_x_8_x_n(committed: tuple[torch.jit.ScriptModule, dict]) -> None:
    model, _ = committed
    with torch.no_grad():
        out = model(torch.rand(2, 3, 384, 384))
    assert out.shape == (2, 4 + NC + 1, N_384)
    assert out.dtype == torch.float32


def _held_out(engine: Engine, seed: int, width: int, height: int, frames: int) -> EvalResult:
    """Run ``frames`` frames of a rotated scene through the engine; score at rotated IoU 0.5."""
    scene = list(render_frames(seed, width, height, frames, rotated=True))
    preds = []
    for start in range(0, frames, 6):
        batch = torch.from_numpy(np.stack([img for img, _ in scene[start : start + 6]]))
        for k, dets in enumerate(engine.infer(batch)):
            assert dets.cxcywhr is not None
            rec = frame_record(start + k, None, width, height, dets)
            for obj, box in zip(rec["objects"], dets.cxcywhr.tolist(), strict=True):
                obj["cxcywhr"] = box  # jsonl's frame_record writes axis-aligned boxes only
            preds.append(rec)
    truth = [truth_record(i, 0, width, height, objs) for i, (_, objs) in enumerate(scene)]
    return evaluate(preds, truth, iou_threshold=0.5, rotated=True)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.build(EngineConfig(model=str(MODEL), device="cpu", decoder="yolo-obb"))


@pytest.mark.parametrize(("seed", "width", "height"), [(1000211, 960, 544), (1000231, 720, 720)])
def test_held_out_rotated_sequence_precision_and_recall_at_least_0_9(
    engine: Engine, seed: int, width: int, height: int
) -> None:
    """150 frames of a seed training never drew (< 900000), through the engine and the yolo-obb decoder."""
    result = _held_out(engine, seed, width, height, 150)
    assert result.truth_objects > 500
    assert result.precision >= 0.9, result
    assert result.recall >= 0.9, result
    assert result.mean_iou >= 0.85, result


def test_engine_detections_carry_rotated_boxes_whose_enclosing_box_is_xyxy(engine: Engine) -> None:
    img, objects = next(render_frames(1000211, 960, 544, 1, rotated=True))
    (dets,) = engine.infer(torch.from_numpy(img[None]))
    assert engine.labels == ROTATED_CLASSES
    assert len(dets) >= len(objects) - 1 > 0
    pts = corners(dets.cxcywhr.astype(np.float64))
    want = np.concatenate((pts.min(1), pts.max(1)), 1).clip(0, [960, 544, 960, 544])
    np.testing.assert_allclose(dets.xyxy, want, atol=0.05)


def test_auto_decoder_picks_yolo_obb_from_the_metadata() -> None:
    engine = Engine.build(EngineConfig(model=str(MODEL), device="cpu"))
    assert engine.decoder.name == "yolo-obb"
