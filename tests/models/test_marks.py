"""MarksNet, and the committed marks classifier: metadata, the zoo, and held-out crops through the engine."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch  # core dependency: never skipped
from torch.nn import functional as F

import pyinfer.models
from pyinfer.engine import Engine, EngineConfig
from pyinfer.models.net_marks import IMGSZ, MarksNet, Probabilities
from pyinfer.scene import MARKS, Scene
from pyinfer.zoo import get_model
from support import load_committed

MODEL = Path(pyinfer.models.__file__).parent / "marks.torchscript"
LABELS = MODEL.with_name("marks.labels.txt")


@pytest.fixture(scope="module")
def committed() -> tuple[torch.jit.ScriptModule, dict]:
    return load_committed(MODEL, "train_marks.py")


@pytest.fixture(scope="module")
def engine() -> Engine:
    """The committed model through the normal loader, its decoder picked from its own metadata."""
    return Engine.build(EngineConfig(model=str(get_model("marks").path), device="cpu", max_batch=64))


def test_marksnet_gives_logits_and_fusing_keeps_them() -> None:
    torch.manual_seed(0)
    net = MarksNet(nc=len(MARKS)).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so fusing is really tested
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        x = torch.rand(5, 3, IMGSZ, IMGSZ)
        logits = net(x)
        assert logits.shape == (5, len(MARKS))
        torch.testing.assert_close(copy.deepcopy(net).fuse()(x), logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(Probabilities(net)(x), logits.softmax(1))


def test_committed_model_has_classifier_metadata_and_is_listed(committed) -> None:
    model, meta = committed
    assert meta["task"] == "classify"
    assert meta["imgsz"] == [IMGSZ, IMGSZ]
    assert meta["names"] == {str(i): m for i, m in enumerate(MARKS)}
    assert meta["pyinfer"]["decoder"] == "classifier"
    assert meta["pyinfer"]["resize"] == "stretch"
    held_out = meta["pyinfer"]["eval"]  # recorded by the trainer on seed 1000003
    assert held_out["truth_boxes"]["accuracy"] >= 0.97
    assert held_out["detector_boxes"]["accuracy"] >= 0.95
    assert LABELS.read_text().splitlines() == list(MARKS)
    assert MODEL.stat().st_size < 2**20
    zoo = get_model("marks")
    assert (zoo.path, zoo.labels) == (MODEL, MARKS)
    with torch.no_grad():
        out = model(torch.rand(3, 3, IMGSZ, IMGSZ))
    assert out.shape == (3, len(MARKS))
    torch.testing.assert_close(out.sum(1), torch.ones(3))  # probabilities


def _crop(frame: torch.Tensor, box: tuple[float, float, float, float]) -> torch.Tensor:
    """An object's crop as the secondary element cuts it: whole pixels, stretched bilinearly, (64, 64, 3) uint8."""
    height, width = int(frame.shape[0]), int(frame.shape[1])
    left = min(max(math.floor(box[0]), 0), width - 1)
    top = min(max(math.floor(box[1]), 0), height - 1)
    right = max(min(math.ceil(box[2]), width), left + 1)
    bottom = max(min(math.ceil(box[3]), height), top + 1)
    patch = frame[top:bottom, left:right].permute(2, 0, 1)[None].float()
    out = F.interpolate(patch, size=(IMGSZ, IMGSZ), mode="bilinear", align_corners=False)
    return out[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)


def _held_out_crops(seed: int, width: int, height: int, frames: int) -> tuple[torch.Tensor, np.ndarray]:
    """Crops of the truth boxes of objects wholly inside the frame, at least 12 px, under no later object's box."""
    scene = Scene(seed, width, height, marked=True)
    crops, marks = [], []
    for index in range(0, frames, 2):
        img, objects = scene.frame(index)
        frame = torch.from_numpy(img)
        for k, o in enumerate(objects):
            left, top, w, h = o.bbox
            right, bottom = left + w, top + h
            if left <= 0 or top <= 0 or right >= width or bottom >= height or min(w, h) < 12:
                continue
            later = [b.bbox for b in objects[k + 1 :]]
            if any(lt < right and lt + lw > left and tp < bottom and tp + th > top for lt, tp, lw, th in later):
                continue
            crops.append(_crop(frame, (left, top, right, bottom)))
            marks.append(MARKS.index(str(o.mark)))
    return torch.stack(crops), np.array(marks)


@pytest.mark.parametrize(("seed", "width", "height"), [(1000211, 960, 544), (1000231, 480, 360)])
def test_committed_model_classifies_held_out_crops_through_the_engine(
    engine: Engine, seed: int, width: int, height: int
) -> None:
    """Seeds training never drew (< 900000); every crop is one frame for the engine's classifier decoder."""
    assert engine.decoder_choice.name == "classifier"
    assert engine.labels == MARKS
    assert (engine.input_width, engine.input_height) == (IMGSZ, IMGSZ)
    crops, marks = _held_out_crops(seed, width, height, 120)
    assert len(marks) >= 150 and set(marks.tolist()) == {0, 1, 2}
    predicted = []
    for start in range(0, len(crops), 64):
        for dets in engine.infer(crops[start : start + 64]):
            assert len(dets) == 1  # one whole-crop result per crop
            predicted.append(int(dets.class_id[0]))
    accuracy = float((np.array(predicted) == marks).mean())
    per_mark = {m: float((np.array(predicted)[marks == k] == k).mean()) for k, m in enumerate(MARKS)}
    assert accuracy >= 0.95, per_mark
    assert min(per_mark.values()) >= 0.9, per_mark


def test_models_command_prints_the_marks_path(capsys) -> None:
    from pyinfer.cli import main as cli_main

    assert cli_main(["models", "--path", "marks"]) == 0
    assert capsys.readouterr().out.strip() == str(MODEL)
    assert cli_main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "marks\t" in listing and "plain, dot, bar" in listing and "(missing)" not in listing
