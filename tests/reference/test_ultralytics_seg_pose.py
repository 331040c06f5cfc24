"""Instance masks and keypoints against ultralytics' own predict (issue #15): same models, same frames.

YOLOv8n-seg, YOLO11n-seg, YOLO26n-seg (end-to-end), YOLOv8n-pose, YOLO11n-pose and YOLO26n-pose (end-to-end) are
built from ultralytics' yaml with seeded random weights (calibrated as the detection tests' models are:
reference/ultra.py), exported by ultralytics to TorchScript and ONNX and run through pyinfer's engine with the
decoder ``auto`` picks. The boxes are held to the detection tests' standard (IoU >= 0.99, same class, score within
1e-3, leftovers only where a decision is too close to call); then, for every matched pair:

- masks: each cell of pyinfer's box-local mask is compared with ultralytics' ``retina_masks=True`` mask (the
  prototypes' logits upsampled to the frame) at the cell's centre pixel. The two sample the same logit field at
  points up to half a pixel apart (and ultralytics interpolates twice), and a random-weight model's masks are
  noise at the prototypes' resolution, so cells on a boundary may differ: at least 80% of each mask's cells and
  93% of all cells must agree (measured here: 0.96-0.98 on average). The exact arithmetic is checked in
  tests/decoders/test_yolo_seg.py;
- keypoints: x, y and confidence within 0.05 (pixels; the inputs differ by float rounding, which a random network
  amplifies to ~1e-2 px).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from pyinfer.engine import Engine, EngineConfig
from pyinfer.ops.letterbox import letterbox
from reference.ultra import bgr_frames, build, candidates, compare_frame, match

pytestmark = pytest.mark.reference

CONF, E2E_CONF, MAX_DET = 0.25, 0.85, 300


@dataclass(frozen=True)
class Case:
    cfg: str
    imgsz: tuple[int, int]  # (height, width)
    frame: tuple[int, int]  # (width, height)
    block: int
    kind: str  # yolo-seg or yolo-pose
    e2e: bool
    iou: float = 0.7

    @property
    def conf(self) -> float:
        return E2E_CONF if self.e2e else CONF

    @property
    def id(self) -> str:
        return f"{Path(self.cfg).stem}-{self.imgsz[0]}x{self.imgsz[1]}"

    @property
    def nms(self) -> dict:
        return {"nms": False} if self.e2e else {}


CASES = [
    Case("yolov8n-seg.yaml", (320, 320), (640, 480), 2, "yolo-seg", False),
    Case("yolo11n-seg.yaml", (256, 320), (1280, 720), 4, "yolo-seg", False, 0.5),
    Case("yolo26n-seg.yaml", (256, 320), (640, 360), 2, "yolo-seg", True),
    Case("yolov8n-pose.yaml", (320, 320), (640, 480), 2, "yolo-pose", False),
    Case("yolo11n-pose.yaml", (256, 320), (320, 192), 1, "yolo-pose", False, 0.45),
    Case("yolo26n-pose.yaml", (320, 320), (640, 480), 2, "yolo-pose", True),
]


@dataclass
class Built:
    case: Case
    yolo: object
    frames: np.ndarray
    exports: dict[str, str] = field(default_factory=dict)
    predictions: dict[int, list] = field(default_factory=dict)


@pytest.fixture(scope="session")
def seg_pose_models(export_dir):
    cache: dict[str, Built] = {}

    def get(case: Case, fmt: str, batch: int) -> Built:
        if case.id not in cache:
            frames = bgr_frames(*case.frame, 3, block=case.block)
            cache[case.id] = Built(case, build(case.cfg, frames, case.imgsz), frames)
        built = cache[case.id]
        if batch not in built.predictions:
            built.predictions[batch] = built.yolo.predict(
                list(built.frames[:batch]), imgsz=case.imgsz, conf=case.conf, iou=case.iou, max_det=MAX_DET,
                rect=False, verbose=False, retina_masks=True, **case.nms,
            )  # fmt: skip
        if fmt not in built.exports:
            out = export_dir / case.id
            out.mkdir(exist_ok=True)
            cwd = os.getcwd()
            os.chdir(out)
            try:
                extra = {"dynamic": True, "simplify": False} if fmt == "onnx" else {}
                path = built.yolo.export(format=fmt, imgsz=case.imgsz, **extra, **case.nms)
                built.exports[fmt] = str(Path(path).resolve())
            finally:
                os.chdir(cwd)
        return built

    return get


def _cell_agreement(mask: np.ndarray, box: np.ndarray, ref: np.ndarray) -> float:
    """Fraction of the box-local ``mask`` cells (>= 128) equal to ``ref`` (frame-sized bool) at the cells' centres."""
    s = mask.shape[0]
    h, w = ref.shape
    x1, y1, x2, y2 = (float(v) for v in box)
    t = (np.arange(s) + 0.5) / s
    xs = np.clip(np.floor(x1 + t * (x2 - x1)).astype(int), 0, w - 1)
    ys = np.clip(np.floor(y1 + t * (y2 - y1)).astype(int), 0, h - 1)
    return float(((mask >= 128) == ref[ys[:, None], xs[None, :]]).mean())


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_masks_and_keypoints_match_ultralytics_predict(seg_pose_models, case, fmt, batch):
    built = seg_pose_models(case, fmt, batch)
    engine = Engine.build(EngineConfig(model=built.exports[fmt], device="cpu"))
    assert engine.decoder_choice.name == case.kind, f"auto picked {engine.decoder_choice}"
    assert "metadata" in engine.decoder_choice.reason
    frames = built.frames[:batch]
    where = f"{case.id} {fmt} batch {batch}"
    dets = engine.infer(
        torch.from_numpy(frames), channels="BGR", conf_threshold=case.conf, iou_threshold=case.iou,
        max_detections=MAX_DET,
    )  # fmt: skip
    x, geometry = letterbox(torch.from_numpy(frames), engine.input_width, engine.input_height, channels="BGR")
    raw = engine.model.forward(x)
    det_out = next(o for o in raw if o.ndim == 3)[..., :].float().numpy()
    nc = None if case.e2e else engine.num_classes
    agree_all: list[float] = []
    matched = total = 0
    for f, (got, ref) in enumerate(zip(dets, built.predictions[batch])):
        if case.kind == "yolo-seg":
            assert got.masks is not None and got.masks.dtype == np.uint8 and got.masks.shape[1:] == (64, 64)
            assert got.keypoints is None
        else:
            assert got.keypoints is not None and got.keypoints.shape[1:] == (17, 3) and got.masks is None
        cand = candidates(det_out[f], kind="yolo-e2e" if case.e2e else "yolov8", conf=case.conf, iou=case.iou, nc=nc)
        report = compare_frame(got, ref, cand, geometry, rotated=False, where=f"{where} frame {f}")
        matched += report.matched
        total += max(report.ultralytics, report.pyinfer)
        pairs = match(got.xyxy, got.class_id, ref.boxes.xyxy.numpy(), ref.boxes.cls.numpy().astype(int)).pairs
        if case.kind == "yolo-seg":
            ref_masks = ref.masks.data.numpy() > 0.5
            assert ref_masks.shape[1:] == (case.frame[1], case.frame[0])
            for i, j, _ in pairs:
                a = _cell_agreement(got.masks[i], got.xyxy[i], ref_masks[j])
                assert a >= 0.8, f"{where} frame {f} box {got.xyxy[i]}: only {a:.3f} of the mask cells agree"
                agree_all.append(a)
            assert (got.masks >= 128).reshape(len(got), -1).any(axis=1).all(), "an empty mask was kept"
        else:
            ref_kpts = ref.keypoints.data.numpy()
            for i, j, _ in pairs:
                err = np.abs(got.keypoints[i] - ref_kpts[j]).max()
                assert err <= 0.05, f"{where} frame {f}: keypoints of box {got.xyxy[i]} differ by {err}"
            assert (got.keypoints[..., 0] >= 0).all() and (got.keypoints[..., 0] <= case.frame[0]).all()
            assert (got.keypoints[..., 1] >= 0).all() and (got.keypoints[..., 1] <= case.frame[1]).all()
    assert total >= 20 * batch, f"{where}: only {total} detections: too few to compare"
    assert matched >= 0.95 * total, f"{where}: {matched} of {total} matched"
    if agree_all:
        assert float(np.mean(agree_all)) >= 0.93, f"{where}: mask cells agree {np.mean(agree_all):.3f} on average"
