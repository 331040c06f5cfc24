"""Non-finite and huge candidates: dropped (NaN, inf) or kept (huge but finite) without touching the other boxes.

A float16 model that overflows gives ``w=inf``; a broken one gives NaN. Such a candidate must neither switch
NMS off (every box kept), nor reach the metadata (``int(nan)`` fails there), nor change the detections of
other frames and classes; the batch says how many candidates it dropped, in a warning naming the output.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyinfer.decoders.base import DecodedBatch
from pyinfer.decoders.detr import DetrDecoder
from pyinfer.decoders.yolo import YoloV8Decoder
from pyinfer.decoders.yolo_e2e import YoloE2EDecoder
from pyinfer.decoders.yolo_obb import YoloObbDecoder
from pyinfer.decoders.yolov5 import YoloV5Decoder
from pyinfer.ops.letterbox import LetterboxGeometry

GEO = LetterboxGeometry.compute(640, 480, 320, 320)
CONF, IOU = 0.25, 0.45
FREE = 8  # the last anchors of every frame are background: junk goes there


def clustered(seed: int, b: int, nc: int, n: int = 400, size: int = 320, *, angle: bool = False) -> np.ndarray:
    """(B, 4 + nc (+1), N) YOLOv8(-obb) outputs: objects seen by 6 jittered anchors each, distinct scores."""
    rng = np.random.default_rng(seed)
    rows = 4 + nc + int(angle)
    out = np.zeros((b, rows, n), np.float32)
    out[:, 0:2] = rng.uniform(0, size, (b, 2, n))
    out[:, 2:4] = rng.uniform(4, 30, (b, 2, n))
    out[:, 4 : 4 + nc] = rng.uniform(0, 0.05, (b, nc, n))
    if angle:
        out[:, -1] = rng.uniform(-0.5, 0.5, (b, n))
    for f in range(b):
        anchors = rng.permutation(n - FREE)
        at = 0
        for k in range(9):
            cx, cy = (k % 3 + 0.5) * size / 3, (k // 3 + 0.5) * size / 3
            w, h = rng.uniform(0.3, 0.7, 2) * size / 3
            cls = rng.integers(nc)
            for _ in range(6):
                a = anchors[at]
                at += 1
                out[f, 0:4, a] = (cx + rng.normal(0, 1.5), cy + rng.normal(0, 1.5), w + rng.normal(0, 2), h)
                out[f, 4 + cls, a] = rng.uniform(0.3, 0.99)
    return out


def v5_layout(out: np.ndarray) -> np.ndarray:
    """YOLOv8 (B, 4 + nc, N) -> YOLOv5 (B, N, 5 + nc) with objectness 1 (the same scores, exactly)."""
    b, _, n = out.shape
    return np.concatenate([out[:, :4], np.ones((b, 1, n), np.float32), out[:, 4:]], axis=1).transpose(0, 2, 1).copy()


def decode(decoder, *outputs: np.ndarray) -> DecodedBatch:
    return decoder.decode(
        [torch.from_numpy(np.ascontiguousarray(o)) for o in outputs],
        GEO,
        conf_threshold=CONF,
        iou_threshold=IOU,
        max_detections=300,
    )


def frame_rows(batch: DecodedBatch) -> list[np.ndarray]:
    """Per frame, (x1, y1, x2, y2, score, class[, cx, cy, w, h, r]) rows sorted by score, then x1."""
    cols = [batch.xyxy, batch.confidence, batch.class_id]
    if batch.cxcywhr is not None:
        cols.append(batch.cxcywhr)
    rows = np.column_stack(cols).astype(np.float64)
    out = []
    for s in batch.split():
        r = rows[s]
        out.append(r[np.lexsort((r[:, 0], -r[:, 4]))])
    return out


def assert_frames_equal(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for f, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"frame {f}: {len(g)} detections, want {len(w)}"
        np.testing.assert_array_equal(g, w, err_msg=f"frame {f}")


def merged(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    r = np.concatenate([a, b])
    return r[np.lexsort((r[:, 0], -r[:, 4]))]


# (row, value) written into a background anchor of frame 0 that also gets a class score of 0.95.
NON_FINITE = {
    "w=inf": (2, math.inf),  # a float16 overflow
    "h=-inf": (3, -math.inf),
    "cx=nan": (0, math.nan),
    "score=nan": (4, math.nan),  # the class score itself (NaN wins torch.max, so the anchor's best score is NaN)
}


def axis_aligned(name: str, out: np.ndarray) -> tuple[object, np.ndarray]:
    return (YoloV8Decoder(), out) if name == "yolov8" else (YoloV5Decoder(), v5_layout(out))


@pytest.mark.parametrize("decoder", ["yolov8", "yolov5"])
@pytest.mark.parametrize("junk", list(NON_FINITE))
def test_a_non_finite_candidate_is_dropped_and_every_frame_decodes_as_without_it(decoder, junk):
    clean = clustered(0, 3, 2)
    dirty = clean.copy()
    anchor = clean.shape[2] - 1
    dirty[0, 4, anchor] = 0.95
    row, value = NON_FINITE[junk]
    dirty[0, row, anchor] = value
    dec, want = axis_aligned(decoder, clean)
    _, got = axis_aligned(decoder, dirty)
    want, got = decode(dec, want), decode(dec, got)
    assert np.isfinite(got.xyxy).all() and np.isfinite(got.confidence).all()
    assert_frames_equal(frame_rows(got), frame_rows(want))  # NMS still per frame and class: 1 box per object
    assert sum(len(r) for r in frame_rows(want)) == 27
    assert want.nonfinite == 0 and want.warning == ""
    assert got.nonfinite == 1
    shape = list(torch.from_numpy(axis_aligned(decoder, dirty)[1]).shape)
    assert f"decoder {decoder}: model output 0 {shape}" in got.warning
    assert "NaN or infinite values in 1 candidate" in got.warning and "dropped" in got.warning


@pytest.mark.parametrize("decoder", ["yolov8", "yolov5"])
def test_candidates_below_the_threshold_with_infinite_boxes_are_not_counted(decoder):
    clean = clustered(1, 2, 2)
    dirty = clean.copy()
    dirty[1, 2, -1] = math.inf  # background anchor (scores < threshold): never a candidate
    dec, want = axis_aligned(decoder, clean)
    got = decode(dec, axis_aligned(decoder, dirty)[1])
    assert_frames_equal(frame_rows(got), frame_rows(decode(dec, want)))
    assert got.nonfinite == 0 and got.warning == ""


@pytest.mark.parametrize("decoder", ["yolov8", "yolov5"])
@pytest.mark.parametrize(("row", "value"), [(0, 1e30), (1, 1e30), (2, 1e30), (3, 3e38)], ids=["cx", "cy", "w", "h"])
def test_a_huge_finite_box_in_one_frame_leaves_the_other_frames_and_classes_alone(decoder, row, value):
    # The huge box is kept (ultralytics keeps it too; it lands on the frame's edge) and suppresses nothing.
    clean = clustered(2, 3, 80)
    dirty = clean.copy()
    anchor = clean.shape[2] - 1
    dirty[0, :4, anchor] = (100, 100, 20, 20)
    dirty[0, 4 + 7, anchor] = 0.95
    dirty[0, row, anchor] = value
    alone = np.zeros_like(dirty[:1])  # the huge box as the only candidate
    alone[0, :, 0] = dirty[0, :, anchor]
    dec, want = axis_aligned(decoder, clean)
    want = frame_rows(decode(dec, want))
    got = decode(dec, axis_aligned(decoder, dirty)[1])
    (extra,) = frame_rows(decode(dec, axis_aligned(decoder, alone)[1]))
    assert len(extra) == 1
    assert_frames_equal(frame_rows(got), [merged(want[0], extra), *want[1:]])
    assert got.nonfinite == 0


@pytest.mark.parametrize("other", ["frame", "class"])
def test_a_box_past_the_top_left_corner_is_not_suppressed_by_another_groups_box_at_the_bottom_right(other):
    # Groups (frame, class) used to be separated by offsetting boxes by group * (max coordinate + 1): a box of
    # the next group with negative coordinates then landed on the previous group's boxes at the far corner.
    b, nc = (2, 1) if other == "frame" else (1, 2)
    out = np.zeros((b, 4 + nc, 2), np.float32)
    out[0, :, 0] = (300, 300, 40, 40, 0.9, *([0.0] * (nc - 1)))  # x1 = y1 = 280, x2 = y2 = 320 (the maximum)
    second = (-10, -10, 60, 60)  # x1 = y1 = -40: offset by 321 it overlapped the first (IoU 0.41 > 0.3)
    if other == "frame":
        out[1, :, 1] = (*second, 0.8)
    else:
        out[0, :, 1] = (*second, 0.0, 0.8)
    got = YoloV8Decoder().decode(
        [torch.from_numpy(out)], GEO, conf_threshold=CONF, iou_threshold=0.3, max_detections=300
    )
    assert sorted(got.confidence.tolist()) == pytest.approx([0.8, 0.9])


# -- rotated boxes -------------------------------------------------------------------------------------------
ROTATED_JUNK = {"w=inf": (2, math.inf), "cx=nan": (0, math.nan), "angle=nan": (-1, math.nan)}


@pytest.mark.parametrize("junk", list(ROTATED_JUNK))
def test_a_non_finite_rotated_candidate_is_dropped_and_every_frame_decodes_as_without_it(junk):
    clean = clustered(3, 3, 2, angle=True)
    dirty = clean.copy()
    anchor = clean.shape[2] - 1
    dirty[0, 4, anchor] = 0.95
    row, value = ROTATED_JUNK[junk]
    dirty[0, row, anchor] = value
    want, got = decode(YoloObbDecoder(), clean), decode(YoloObbDecoder(), dirty)
    assert np.isfinite(got.cxcywhr).all() and np.isfinite(got.xyxy).all()
    assert_frames_equal(frame_rows(got), frame_rows(want))
    assert got.nonfinite == 1 and want.nonfinite == 0
    assert f"decoder yolo-obb: model output 0 {list(dirty.shape)}" in got.warning


def test_a_huge_rotated_box_in_one_frame_leaves_the_other_frames_alone():
    clean = clustered(4, 3, 80, angle=True)
    dirty = clean.copy()
    anchor = clean.shape[2] - 1
    dirty[0, :4, anchor] = (1e30, 100, 1e30, 20)
    dirty[0, 4 + 7, anchor] = 0.95
    alone = np.zeros_like(dirty[:1])
    alone[0, :, 0] = dirty[0, :, anchor]
    want = frame_rows(decode(YoloObbDecoder(), clean))
    got = decode(YoloObbDecoder(), dirty)
    (extra,) = frame_rows(decode(YoloObbDecoder(), alone))
    assert len(extra) == 1
    assert_frames_equal(frame_rows(got), [merged(want[0], extra), *want[1:]])
    assert got.nonfinite == 0


# -- no NMS: end-to-end rows and DETR queries ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("rotated", "column"), [(False, 0), (False, 2), (False, 5), (True, 0), (True, 2), (True, 5), (True, "angle")]
)
def test_an_end_to_end_row_with_a_non_finite_value_is_dropped(rotated, column):
    rng = np.random.default_rng(5)
    out = np.zeros((2, 10, 7 if rotated else 6), np.float32)
    out[..., :4] = (50, 60, 150, 160) if not rotated else (100, 110, 100, 100)
    out[..., :2] += rng.uniform(0, 100, (2, 10, 2))  # separate boxes (no NMS here anyway)
    out[..., 4] = rng.uniform(0.3, 0.9, (2, 10))
    out[..., 5] = rng.integers(0, 3, (2, 10))
    clean = out.copy()
    out[1, 3, 6 if column == "angle" else column] = math.nan if column != 2 else math.inf
    want = frame_rows(decode(YoloE2EDecoder(), clean))
    got = decode(YoloE2EDecoder(), out)
    want[1] = want[1][~np.all(want[1][:, 4:5] == clean[1, 3, 4], axis=1)]  # the junk row's score is unique
    assert_frames_equal(frame_rows(got), want)
    assert got.nonfinite == 1
    assert f"decoder yolo-e2e: model output 0 {list(out.shape)}" in got.warning


@pytest.mark.parametrize("junk", ["box", "logit"])
def test_a_detr_query_with_a_non_finite_value_is_dropped(junk):
    rng = np.random.default_rng(6)
    boxes = np.concatenate([rng.uniform(0.2, 0.8, (2, 20, 2)), rng.uniform(0.05, 0.3, (2, 20, 2))], axis=2)
    logits = rng.normal(0, 2, (2, 20, 3))
    boxes, logits = boxes.astype(np.float32), logits.astype(np.float32)
    logits[1, 4] = (5.0, 0.0, 0.0)  # a confident query
    clean_boxes, clean_logits = boxes.copy(), logits.copy()
    clean_logits[1, 4] = -10.0
    if junk == "box":
        boxes[1, 4, 2] = math.inf
    else:
        logits[1, 4, 1] = math.nan
    want = decode(DetrDecoder(), clean_boxes, clean_logits)
    got = decode(DetrDecoder(), boxes, logits)
    assert np.isfinite(got.xyxy).all()
    assert_frames_equal(frame_rows(got), frame_rows(want))
    assert got.nonfinite == 1
    assert "decoder detr: model outputs [2, 20, 4], [2, 20, 3]" in got.warning
