"""pyinfer against ultralytics' own predict: same models, same frames, same thresholds.

YOLOv8n, YOLO11n, YOLO26n (end-to-end head) and YOLO11n-obb are built from ultralytics' yaml with seeded
random weights (calibrated so that many boxes score high: reference/ultra.py), exported by ultralytics to
TorchScript and ONNX, and run through pyinfer's engine (backend, letterbox, decoder picked by ``auto``);
ultralytics predicts on the same BGR frames with its PyTorch model. Matched boxes must have IoU >= 0.99, the
same class and scores within 1e-3; a box only one side has must be a decision too close to call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from pyinfer.engine import Engine, EngineConfig
from pyinfer.ops.letterbox import LetterboxGeometry, letterbox
from reference.ultra import FrameReport, bgr_frames, build, candidates, compare_frame

pytestmark = pytest.mark.reference

CONF, MAX_DET = 0.25, 300
#: End-to-end heads return their 300 best (anchor, class) pairs, which in these calibrated models all score
#: above ~0.75: a higher threshold keeps about half, so the threshold is exercised.
E2E_CONF = 0.85


@dataclass(frozen=True)
class Case:
    """One model at one input size, with the frames it is compared on."""

    cfg: str
    imgsz: tuple[int, int]  # (height, width), as ultralytics takes it
    frame: tuple[int, int]  # (width, height)
    block: int  # frames scaled by exactly 1/block into the input: identical pixels in both pipelines
    kind: str  # the decoder pyinfer's auto must pick from the export's metadata
    iou: float

    @property
    def conf(self) -> float:
        return E2E_CONF if self.kind == "yolo-e2e" else CONF

    @property
    def id(self) -> str:
        return f"{Path(self.cfg).stem}-{self.imgsz[0]}x{self.imgsz[1]}"

    @property
    def nms(self) -> bool | None:
        """ultralytics' ``nms`` argument: False selects the end-to-end head (predict and export)."""
        return False if self.kind == "yolo-e2e" else None


CASES = [
    Case("yolov8n.yaml", (320, 320), (640, 480), 2, "yolov8", 0.7),
    Case("yolov8n.yaml", (256, 320), (320, 192), 1, "yolov8", 0.45),
    Case("yolo11n.yaml", (256, 320), (1280, 720), 4, "yolov8", 0.7),
    Case("yolo11n.yaml", (320, 320), (320, 240), 1, "yolov8", 0.5),
    Case("yolo26n.yaml", (320, 320), (320, 240), 1, "yolo-e2e", 0.7),
    Case("yolo26n.yaml", (256, 320), (640, 360), 2, "yolo-e2e", 0.7),
    Case("yolo11n-obb.yaml", (320, 320), (640, 480), 2, "yolo-obb", 0.7),
    Case("yolo11n-obb.yaml", (256, 320), (320, 192), 1, "yolo-obb", 0.45),
]


@dataclass
class Built:
    """A case's model, frames, exports (by format) and ultralytics' predictions (by batch size)."""

    case: Case
    yolo: object
    frames: np.ndarray
    exports: dict[str, str] = field(default_factory=dict)
    predictions: dict[int, list] = field(default_factory=dict)


@pytest.fixture(scope="session")
def reference_models(export_dir):
    """get(case) -> Built, made once per session; exports and predictions made on first use."""
    cache: dict[str, Built] = {}

    def get(case: Case, fmt: str | None = None, batch: int | None = None) -> Built:
        if case.id not in cache:
            frames = bgr_frames(*case.frame, 3, block=case.block, rotated=case.kind == "yolo-obb")
            cache[case.id] = Built(case, build(case.cfg, frames, case.imgsz), frames)
        built = cache[case.id]
        nms = {} if case.nms is None else {"nms": case.nms}
        if batch is not None and batch not in built.predictions:
            built.predictions[batch] = built.yolo.predict(
                list(built.frames[:batch]), imgsz=case.imgsz, conf=case.conf, iou=case.iou, max_det=MAX_DET,
                rect=False, verbose=False, **nms,
            )  # fmt: skip
        if fmt is not None and fmt not in built.exports:
            out = export_dir / case.id
            out.mkdir(exist_ok=True)
            cwd = os.getcwd()
            os.chdir(out)  # ultralytics writes a yaml-built model's export into the working directory
            try:
                extra = {"dynamic": True, "simplify": False} if fmt == "onnx" else {}
                path = built.yolo.export(format=fmt, imgsz=case.imgsz, **extra, **nms)
                built.exports[fmt] = str(Path(path).resolve())
            finally:
                os.chdir(cwd)
        return built

    return get


def _compare(
    engine: Engine, frames: np.ndarray, predictions: list, *, kind: str, conf: float, iou: float, where: str
) -> list[FrameReport]:
    """Run pyinfer on ``frames`` and compare every frame with ultralytics' ``predictions``."""
    dets = engine.infer(
        torch.from_numpy(frames), channels="BGR", conf_threshold=conf, iou_threshold=iou, max_detections=MAX_DET
    )
    # The raw outputs once more, to tell close calls (reference/ultra.py: candidates).
    x, geometry = letterbox(torch.from_numpy(frames), engine.input_width, engine.input_height, channels="BGR")
    raw = engine.model.forward(x)[0].float().numpy()
    assert len(dets) == len(predictions) == len(frames)
    reports = []
    for f, (got, ref) in enumerate(zip(dets, predictions)):
        cand = candidates(raw[f], kind=kind, conf=conf, iou=iou, nc=engine.num_classes)
        assert len(got) < MAX_DET, f"{where} frame {f}: max_det cut the detections; raise MAX_DET"
        reports.append(compare_frame(got, ref, cand, geometry, rotated=kind == "yolo-obb", where=f"{where} frame {f}"))
    return reports


def _assert_mostly_matched(reports: list[FrameReport], where: str, *, at_least: int) -> None:
    ref = sum(r.ultralytics for r in reports)
    got = sum(r.pyinfer for r in reports)
    matched = sum(r.matched for r in reports)
    assert ref >= at_least * len(reports), f"{where}: only {ref} ultralytics detections: too few to compare"
    # Close calls are allowed to differ, but they must stay rare or the comparison says little.
    assert matched >= 0.95 * max(ref, got), f"{where}: {matched} matched of {ref} (ultralytics) / {got} (pyinfer)"


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_detections_match_ultralytics_predict_on_the_same_frames(reference_models, case, fmt, batch):
    built = reference_models(case, fmt, batch)
    engine = Engine.build(EngineConfig(model=built.exports[fmt], device="cpu"))
    assert engine.decoder_choice.name == case.kind, f"auto picked {engine.decoder_choice}"
    assert "metadata" in engine.decoder_choice.reason
    assert (engine.input_width, engine.input_height) == (case.imgsz[1], case.imgsz[0])
    where = f"{case.id} {fmt} batch {batch}"
    reports = _compare(
        engine,
        built.frames[:batch],
        built.predictions[batch],
        kind=case.kind,
        conf=case.conf,
        iou=case.iou,
        where=where,
    )
    _assert_mostly_matched(reports, where, at_least=20)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("frame", [(1280, 720), (800, 600), (500, 700)])
@pytest.mark.parametrize(("name", "kind"), [("shapes", "yolov8"), ("shapes-obb", "yolo-obb")])
def test_the_embedded_models_match_ultralytics_predict(name, kind, frame, batch):
    from ultralytics import YOLO

    from pyinfer.zoo import get_model

    path = str(get_model(name).path)
    rotated = kind == "yolo-obb"
    # Frames as they come (no block structure): the trained models are smooth, so the one-grey-level
    # differences between cv2's and torch's resize move scores by ~1e-4 only.
    frames = bgr_frames(*frame, batch, seed=1000003, rotated=rotated)
    ref = YOLO(path, task="obb" if rotated else "detect").predict(
        list(frames), imgsz=384, conf=CONF, iou=0.45, max_det=MAX_DET, rect=False, verbose=False
    )
    engine = Engine.build(EngineConfig(model=path, device="cpu"))
    assert engine.decoder_choice.name == kind
    where = f"{name} {frame} batch {batch}"
    reports = _compare(engine, frames, ref, kind=kind, conf=CONF, iou=0.45, where=where)
    _assert_mostly_matched(reports, where, at_least=3)


# Letterbox: pixels and geometry against ultralytics' LetterBox and scale_boxes.

SIZES = [  # (frame w, h, input w, h)
    (640, 480, 320, 320),
    (641, 479, 320, 320),
    (1280, 720, 320, 256),
    (500, 700, 320, 256),
    (300, 900, 640, 640),
    (200, 150, 320, 256),  # upscaled
    (320, 192, 320, 256),  # padding only
    (1920, 1080, 384, 384),
]


@pytest.mark.parametrize(("fw", "fh", "iw", "ih"), SIZES)
def test_letterboxed_pixels_are_within_one_grey_level_of_ultralytics(fw, fh, iw, ih):
    from ultralytics.data.augment import LetterBox

    bgr = bgr_frames(fw, fh, 1)[0]
    ref = LetterBox((ih, iw), auto=False)(image=bgr)[..., ::-1].astype(np.int16)  # HWC RGB uint8
    got, geo = letterbox(torch.from_numpy(bgr)[None], iw, ih, channels="BGR")
    got = (got[0].permute(1, 2, 0) * 255).round().to(torch.int16).numpy()
    assert got.shape == ref.shape
    diff = np.abs(got - ref)
    assert diff.max() <= 1, f"letterbox differs from ultralytics by up to {diff.max()} grey levels"
    # Same placement: the padding (grey 114 in both) covers the same pixels.
    pad_ref, pad_got = np.all(ref == 114, axis=2), np.all(got == 114, axis=2)
    band = np.ones((ih, iw), bool)
    band[int(geo.pad_y) : int(geo.pad_y) + geo.resized_h, int(geo.pad_x) : int(geo.pad_x) + geo.resized_w] = False
    assert np.all(pad_ref[band]) and np.all(pad_got[band])


@pytest.mark.parametrize(("fw", "fh", "iw", "ih", "block"), [(640, 480, 320, 320, 2), (1280, 720, 320, 256, 4)])
def test_block_frames_letterbox_to_exactly_ultralytics_pixels(fw, fh, iw, ih, block):
    from ultralytics.data.augment import LetterBox

    bgr = bgr_frames(fw, fh, 1, block=block)[0]
    ref = LetterBox((ih, iw), auto=False)(image=bgr)[..., ::-1]
    got, _ = letterbox(torch.from_numpy(bgr)[None], iw, ih, channels="BGR")
    got = (got[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize(("fw", "fh", "iw", "ih"), SIZES)
def test_boxes_map_back_to_the_frame_as_ultralytics_scale_boxes_does(fw, fh, iw, ih):
    from ultralytics.utils.ops import scale_boxes

    rng = np.random.default_rng(fw * fh)
    cx, cy = rng.uniform(-20, iw + 20, 200), rng.uniform(-20, ih + 20, 200)
    w, h = rng.uniform(1, iw / 2, 200), rng.uniform(1, ih / 2, 200)
    xyxy = torch.from_numpy(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1))
    xywhr = torch.from_numpy(np.stack([cx, cy, w, h, rng.uniform(-1, 2, 200)], axis=1))
    geo = LetterboxGeometry.compute(fw, fh, iw, ih)
    ref = scale_boxes((ih, iw), xyxy.clone(), (fh, fw))
    torch.testing.assert_close(geo.to_frame(xyxy.clone()), ref, rtol=0, atol=1e-9)
    ref_r = scale_boxes((ih, iw), xywhr[:, :4].clone(), (fh, fw), xywh=True)
    got_r = geo.to_frame_cxcywh(xywhr.clone())
    torch.testing.assert_close(got_r[:, :4], ref_r, rtol=0, atol=1e-9)
    torch.testing.assert_close(got_r[:, 4], xywhr[:, 4], rtol=0, atol=0)  # the angle is left alone


@pytest.mark.parametrize("decoder", ["yolov5", "detr", "yolo-obb"])
def test_a_yolov8n_onnx_export_forced_to_another_decoder_is_refused_naming_yolov8(reference_models, decoder):
    # Issue #18: decoder=yolov5 gave class 7995 with confidence 57600; detr and yolo-obb were accepted too.
    # The yolo-obb case needs Engine.warm_up to call pyinfer.decoders.check_fit (the model's 80 names).
    from pyinfer.errors import DecodeError

    built = reference_models(CASES[0], "onnx")  # YOLOv8n at 320x320: [1, 84, 2100]
    with pytest.raises(DecodeError, match=rf"^decoder {decoder} reads .*\[1, 84, 2100\]") as err:
        Engine.build(EngineConfig(model=built.exports["onnx"], device="cpu", decoder=decoder))
    assert "set decoder=yolov8" in str(err.value)
    engine = Engine.build(EngineConfig(model=built.exports["onnx"], device="cpu", decoder="yolov8"))
    assert engine.num_classes == 80 and len(engine.labels) == 80  # the right pair still works
