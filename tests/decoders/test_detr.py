"""DetrDecoder: both layouts, sigmoid on logits, best class per query, stretch geometry; and the engine stretches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyinfer.backends.base import LoadedModel
from pyinfer.decoders.detr import DetrDecoder
from pyinfer.engine import Engine
from pyinfer.errors import DecodeError
from pyinfer.ops.letterbox import LetterboxGeometry


def make_queries(rng: np.random.Generator, b: int, q: int, nc: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, Q, 4) normalised cx, cy, w, h and (B, Q, nc) logits with distinct best scores."""
    boxes = np.concatenate([rng.uniform(0.1, 0.9, (b, q, 2)), rng.uniform(0.02, 0.5, (b, q, 2))], axis=2)
    logits = rng.normal(-3, 2, (b, q, nc))
    return boxes.astype(np.float32), logits.astype(np.float32)


def reference(boxes, scores, geo: LetterboxGeometry, conf: float, max_det: int, in_w: int, in_h: int):
    out = []
    for bx, sc in zip(boxes.astype(np.float64), scores.astype(np.float64)):
        best, cls = sc.max(axis=1), sc.argmax(axis=1)
        keep = np.flatnonzero(best > conf)
        keep = keep[np.argsort(-best[keep], kind="stable")][:max_det]
        cx, cy, w, h = (bx[keep, i] for i in range(4))
        xyxy = np.stack([(cx - w / 2) * in_w, (cy - h / 2) * in_h, (cx + w / 2) * in_w, (cy + h / 2) * in_h], axis=1)
        xyxy[:, 0::2] = np.clip((xyxy[:, 0::2] - geo.pad_x) * geo.frame_w / geo.resized_w, 0, geo.frame_w)
        xyxy[:, 1::2] = np.clip((xyxy[:, 1::2] - geo.pad_y) * geo.frame_h / geo.resized_h, 0, geo.frame_h)
        out.append((xyxy, best[keep], cls[keep]))
    return out


@pytest.mark.parametrize("stretch", [True, False])
@pytest.mark.parametrize(
    ("layout", "b", "q", "nc", "conf", "max_det", "seed"),
    [
        ("one", 1, 300, 80, 0.25, 300, 0),  # ultralytics RT-DETR: [B, Q, 4 + nc], scores already sigmoid
        ("boxes-logits", 3, 300, 80, 0.3, 10, 1),
        ("logits-boxes", 2, 100, 4, 0.2, 300, 2),  # 4 classes: the first output is taken as the logits
    ],
)
def test_detr_queries_are_scored_capped_and_mapped_to_the_frame(layout, b, q, nc, conf, max_det, seed, stretch):
    rng = np.random.default_rng(seed)
    boxes, logits = make_queries(rng, b, q, nc)
    probs = torch.from_numpy(logits).sigmoid().numpy()
    if layout == "one":
        outputs = [torch.from_numpy(np.concatenate([boxes, probs], axis=2))]
    elif layout == "boxes-logits":
        outputs = [torch.from_numpy(boxes), torch.from_numpy(logits)]
    else:
        outputs = [torch.from_numpy(logits), torch.from_numpy(boxes)]
    geo = LetterboxGeometry.compute(641, 479, 320, 256, stretch=stretch)
    got = DetrDecoder().decode(outputs, geo, conf_threshold=conf, iou_threshold=0.01, max_detections=max_det)
    assert DetrDecoder().num_classes(outputs) == nc
    for f, (s, (xyxy, best, cls)) in enumerate(zip(got.split(), reference(boxes, probs, geo, conf, max_det, 320, 256))):
        np.testing.assert_array_equal(got.class_id[s], cls, err_msg=f"frame {f}")
        np.testing.assert_allclose(got.confidence[s], best, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got.xyxy[s], xyxy, rtol=1e-5, atol=1e-3)
        assert s.stop > s.start


def test_stretched_geometry_maps_normalised_boxes_onto_the_whole_frame():
    geo = LetterboxGeometry.compute(1280, 720, 640, 640, stretch=True)
    assert (geo.pad_x, geo.pad_y, geo.resized_w, geo.resized_h) == (0, 0, 640, 640)
    out = torch.tensor([[[0.5, 0.5, 1.0, 1.0, 0.9], [0.25, 0.5, 0.5, 0.2, 0.8]]])
    got = DetrDecoder().decode([out], geo, conf_threshold=0.5, iou_threshold=0.5, max_detections=10)
    np.testing.assert_allclose(got.xyxy, [[0, 0, 1280, 720], [0, 288, 640, 432]], atol=1e-3)


@pytest.mark.parametrize(
    "outputs",
    [
        [torch.zeros(1, 300, 4)],  # boxes only
        [torch.zeros(300, 84)],
        [torch.zeros(1, 300, 4), torch.zeros(1, 200, 80)],  # query counts differ
        [torch.zeros(1, 300, 5), torch.zeros(1, 300, 80)],  # neither has 4 columns
        [torch.zeros(1, 300, 4), torch.zeros(1, 300, 80), torch.zeros(1, 300, 80)],
    ],
)
def test_detr_outputs_that_do_not_fit_raise_decode_error_naming_all_shapes(outputs):
    shapes = ", ".join(str(list(o.shape)) for o in outputs)
    with pytest.raises(
        DecodeError,
        match=r"\[B, Q, 4\+nc\].*\[B, Q, 4\].*\[B, Q, nc\].*got " + shapes.replace("[", r"\[").replace("]", r"\]"),
    ):
        DetrDecoder().num_classes(outputs)


def test_the_engine_stretches_frames_for_detr_and_letterboxes_for_yolo():
    seen: list[torch.Tensor] = []

    def forward(x: torch.Tensor) -> list[torch.Tensor]:
        seen.append(x.clone())
        return [torch.zeros(x.shape[0], 10, 84)]  # ten queries: boxes + 80 scores (fits detr and yolov5's shape)

    model = LoadedModel(forward, torch.device("cpu"), torch.float32, (320, 320), (), None, "stub")
    frames = torch.full((1, 240, 640, 3), 255, dtype=torch.uint8)  # white, wider than the input
    for decoder, padded in (("detr", False), ("yolov5", True)):
        seen.clear()
        Engine(model, decoder, (), (320, 320)).infer(frames)
        grey = torch.isclose(seen[0], torch.tensor(114 / 255)).all(dim=1)  # (1, H, W) padding pixels
        assert bool(grey.any()) is padded, decoder
