"""YoloV8Decoder against a slow NumPy reference; letterbox geometry and pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from pyinfer.decoders.yolo import YoloV8Decoder
from pyinfer.errors import DecodeError
from pyinfer.ops.letterbox import PAD_VALUE, LetterboxGeometry, letterbox

# --------------------------------------------------------------------------------------------------------------
# Reference decoder: one frame at a time, plain loops, float64.


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two xyxy boxes (float64)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class RefFrame:
    xyxy: np.ndarray  # (M, 4) float64, frame pixels
    score: np.ndarray  # (M,) float32
    cls: np.ndarray  # (M,) int
    margin: float  # smallest |IoU - threshold| among the comparisons NMS made (data too close to call if tiny)


def reference_decode(
    out: np.ndarray, geo: LetterboxGeometry, conf: float, iou_thr: float, max_det: int
) -> list[RefFrame]:
    """out: (B, 4 + nc, N) float32, as the model returns it."""
    frames = []
    for pred in out:
        scores_all = pred[4:].T  # (N, nc)
        cls = scores_all.argmax(axis=1)
        score = scores_all.max(axis=1)  # float32, the value the decoder reports
        sel = np.flatnonzero(score > conf)
        cx, cy, w, h = (pred[i, sel].astype(np.float64) for i in range(4))
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        margin = np.inf
        kept: list[int] = []  # rows of sel
        for c in np.unique(cls[sel]):
            rows = [r for r in range(len(sel)) if cls[sel[r]] == c]
            rows.sort(key=lambda r: -score[sel[r]])
            kept_c: list[int] = []
            for r in rows:
                suppressed = False
                for k in kept_c:
                    v = _iou(boxes[k], boxes[r])
                    margin = min(margin, abs(v - iou_thr))
                    if v > iou_thr:
                        suppressed = True
                        break
                if not suppressed:
                    kept_c.append(r)
            kept += kept_c
        kept.sort(key=lambda r: -score[sel[r]])
        kept = kept[:max_det]
        xyxy = boxes[kept].reshape(-1, 4).copy()
        # ultralytics' scale_boxes: per-axis gains of the rounded resized size.
        xyxy[:, 0::2] = np.clip((xyxy[:, 0::2] - geo.pad_x) * geo.frame_w / geo.resized_w, 0, geo.frame_w)
        xyxy[:, 1::2] = np.clip((xyxy[:, 1::2] - geo.pad_y) * geo.frame_h / geo.resized_h, 0, geo.frame_h)
        frames.append(RefFrame(xyxy, score[sel[kept]], cls[sel[kept]], margin))
    return frames


# --------------------------------------------------------------------------------------------------------------
# Synthetic head outputs: clusters of jittered boxes, pairs placed just either side of the IoU threshold, noise.


def _shift_for_iou(w: float, iou: float) -> float:
    """Horizontal shift of a same-sized box giving this IoU: (w - d) / (w + d) = iou."""
    return w * (1 - iou) / (1 + iou)


def make_outputs(
    rng: np.random.Generator, b: int, nc: int, n: int, in_w: int, in_h: int, conf: float, iou_thr: float
) -> np.ndarray:
    """(B, 4 + nc, N) float32: rows cx, cy, w, h (input pixels), then class scores."""
    out = np.zeros((b, 4 + nc, n), np.float32)
    for f in range(b):
        cols: list[tuple[float, float, float, float, int, float]] = []  # cx, cy, w, h, class, score

        def above() -> float:
            return float(rng.uniform(conf + 0.01, 1.0))

        # Clusters: jittered copies around a few centres, mostly one class, some of another.
        for _ in range(int(rng.integers(3, 7))):
            cx, cy = rng.uniform(-0.05, 1.05) * in_w, rng.uniform(-0.05, 1.05) * in_h  # some cross the border
            w, h = rng.uniform(20, 0.5 * in_w), rng.uniform(20, 0.5 * in_h)
            main = int(rng.integers(nc))
            for _ in range(int(rng.integers(2, 12))):
                c = main if rng.random() < 0.8 else int(rng.integers(nc))
                s = above() if rng.random() < 0.8 else float(rng.uniform(0.0, conf))
                cols.append(
                    (
                        cx + rng.normal(0, 0.08 * w),
                        cy + rng.normal(0, 0.08 * h),
                        w * np.exp(rng.normal(0, 0.15)),
                        h * np.exp(rng.normal(0, 0.15)),
                        c,
                        s,
                    )
                )
        # Pairs either side of the threshold: the lower-scored box is suppressed only by the first pair.
        for delta in (+0.01, -0.01):
            w, h = rng.uniform(40, 0.3 * in_w), rng.uniform(40, 0.3 * in_h)
            cx, cy = rng.uniform(w, in_w - 2 * w), rng.uniform(h, in_h - h)
            c = int(rng.integers(nc))
            hi = float(rng.uniform(conf + 0.2, 1.0))
            cols.append((cx, cy, w, h, c, hi))
            cols.append((cx + _shift_for_iou(w, iou_thr + delta), cy, w, h, c, hi - 0.1))
        assert len(cols) <= n, "N too small for the clusters"
        # Everything else is background: every class score below the threshold.
        out[f, 0, :] = rng.uniform(0, in_w, n)
        out[f, 1, :] = rng.uniform(0, in_h, n)
        out[f, 2:4, :] = rng.uniform(4, 100, (2, n))
        out[f, 4:, :] = rng.uniform(0, conf, (nc, n))
        pos = rng.permutation(n)[: len(cols)]
        for p, (cx, cy, w, h, c, s) in zip(pos, cols, strict=True):
            out[f, :4, p] = (cx, cy, w, h)
            out[f, 4:, p] = rng.uniform(0, min(s, conf) * 0.9, nc)  # other classes strictly below this one
            out[f, 4 + c, p] = s
    return out


# (batch, classes, anchors, frame w x h, input w x h, conf, iou, max_det, seed). Seeds are ones whose random
# clusters keep every NMS comparison at least 1e-3 IoU away from the threshold (checked in the test): closer
# calls are float32 rounding, which the reference in float64 may decide the other way.
DECODE_CASES = [
    (1, 1, 200, (641, 479), (320, 320), 0.25, 0.45, 300, 0),
    (3, 3, 500, (1920, 1080), (640, 640), 0.25, 0.7, 300, 1),
    (3, 80, 2000, (300, 900), (640, 640), 0.1, 0.5, 5, 2),  # max_det cuts
    (1, 80, 8400, (1920, 1080), (640, 640), 0.25, 0.7, 300, 3),  # a real YOLOv8 head size
    (3, 1, 300, (641, 479), (320, 256), 0.5, 0.3, 1, 4),  # one per frame
    (3, 3, 1000, (300, 900), (320, 320), 0.05, 0.9, 1000, 5),
    (3, 80, 400, (1920, 1080), (320, 320), 0.4, 0.6, 20, 7),  # many groups: frame * nc + class up to 239
]


def _decode(out: np.ndarray, geo: LetterboxGeometry, conf: float, iou: float, max_det: int):
    return YoloV8Decoder().decode(
        [torch.from_numpy(out)], geo, conf_threshold=conf, iou_threshold=iou, max_detections=max_det
    )


def _assert_frame_matches(got_xyxy, got_score, got_cls, ref: RefFrame, where: str) -> None:
    assert len(got_score) == len(ref.score), f"{where}: {len(got_score)} detections, reference {len(ref.score)}"
    assert np.all(np.diff(got_score) <= 0), f"{where}: not in descending confidence"
    np.testing.assert_array_equal(got_score, ref.score, err_msg=where)
    # Rows of equal score may come in either order: match them within each run of ties.
    used = np.zeros(len(ref.score), bool)
    for i in range(len(got_score)):
        candidates = [
            j
            for j in np.flatnonzero((ref.score == got_score[i]) & ~used)
            if ref.cls[j] == got_cls[i] and np.allclose(got_xyxy[i], ref.xyxy[j], atol=1e-3, rtol=0)
        ]
        assert candidates, (
            f"{where}: row {i} (class {got_cls[i]}, score {got_score[i]}, box {got_xyxy[i]}) "
            f"has no reference match; reference row {i}: class {ref.cls[i]}, box {ref.xyxy[i]}"
        )
        used[candidates[0]] = True


@pytest.mark.parametrize(("b", "nc", "n", "frame", "model_in", "conf", "iou", "max_det", "seed"), DECODE_CASES)
def test_decoder_matches_the_reference_threshold_nms_topk_and_unletterbox(
    b, nc, n, frame, model_in, conf, iou, max_det, seed
):
    rng = np.random.default_rng(seed)
    out = make_outputs(rng, b, nc, n, *model_in, conf, iou)
    geo = LetterboxGeometry.compute(*frame, *model_in)
    ref = reference_decode(out, geo, conf, iou, max_det)
    for f, r in enumerate(ref):
        assert r.margin > 1e-3, f"frame {f}: seeded data has an IoU within {r.margin:.1e} of the threshold"
    got = _decode(out, geo, conf, iou, max_det)
    assert got.batch_size == b
    assert got.xyxy.dtype == np.float32
    assert got.confidence.dtype == np.float32
    assert got.class_id.dtype == np.int32
    slices = got.split()
    assert len(slices) == b
    assert np.all(np.diff(got.frame) >= 0), "rows are not grouped by frame"
    for f, (s, r) in enumerate(zip(slices, ref, strict=True)):
        assert np.all(got.frame[s] == f)
        _assert_frame_matches(got.xyxy[s], got.confidence[s], got.class_id[s], r, f"case seed={seed} frame {f}")
    # The data did give NMS and max_det something to do.
    kept = sum(len(r.score) for r in ref)
    above = int(((out[:, 4:, :].max(axis=1)) > conf).sum())
    assert kept < above


@pytest.mark.parametrize(("delta", "kept"), [(+0.002, 1), (-0.002, 2)])
@pytest.mark.parametrize("iou", [0.3, 0.45, 0.7])
@pytest.mark.parametrize(("b", "nc"), [(1, 1), (3, 80)])
def test_pairs_just_either_side_of_the_iou_threshold(delta, kept, iou, b, nc):
    # The pair sits in the last frame and class, whose NMS group is the farthest from the origin when boxes of
    # different groups are separated by coordinate offsets; a box at (640, 640) makes those offsets large.
    w, h = 50.0, 30.0
    d = _shift_for_iou(w, iou + delta)
    out = np.zeros((b, 4 + nc, 3), np.float32)
    out[-1, :4, 0] = (100, 100, w, h)
    out[-1, :4, 1] = (100 + d, 100, w, h)
    out[-1, -1, :2] = (0.9, 0.8)
    out[0, :, 2] = (620, 620, 40, 40, 0.5, *([0.0] * (nc - 1)))
    geo = LetterboxGeometry.compute(640, 640, 640, 640)
    got = _decode(out, geo, 0.25, iou, 300)
    last = (got.frame == b - 1) & (got.confidence > 0.5)  # the pair's survivors, not the far box
    assert got.confidence[last].tolist() == [np.float32(0.9), np.float32(0.8)][:kept]
    assert np.all(got.class_id[last] == nc - 1)


def test_overlapping_boxes_of_different_classes_or_frames_are_not_suppressed():
    out = np.zeros((2, 6, 2), np.float32)
    out[:, :4, :] = np.array([[100, 100], [100, 100], [50, 50], [50, 50]], np.float32)  # identical boxes
    out[:, 4, 0] = 0.9  # class 0
    out[:, 5, 1] = 0.8  # class 1
    got = _decode(out, LetterboxGeometry.compute(320, 320, 320, 320), 0.25, 0.5, 300)
    assert got.frame.tolist() == [0, 0, 1, 1]
    assert got.class_id.tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize("b", [1, 3])
def test_nothing_above_threshold_gives_one_empty_slice_per_frame(b):
    rng = np.random.default_rng(11)
    out = rng.uniform(0, 0.2, (b, 4 + 3, 100)).astype(np.float32)
    got = _decode(out, LetterboxGeometry.compute(640, 480, 320, 320), 0.25, 0.45, 300)
    assert got.batch_size == b
    assert got.xyxy.shape == (0, 4)
    assert got.confidence.shape == got.class_id.shape == got.frame.shape == (0,)
    slices = got.split()
    assert len(slices) == b
    assert all(s.stop - s.start == 0 for s in slices)


@pytest.mark.parametrize(
    ("tensor", "match"),
    [
        (torch.zeros(2, 3, 100), r"\[B, 4\+nc, N\].*got \[2, 3, 100\]"),
        (torch.zeros(2, 4, 100), r"\[B, 4\+nc, N\].*got \[2, 4, 100\]"),  # boxes but no classes
        (torch.zeros(84, 8400), r"\[B, 4\+nc, N\].*got \[84, 8400\]"),
        (torch.zeros(1, 1, 84, 8400), r"\[B, 4\+nc, N\].*got \[1, 1, 84, 8400\]"),
        (torch.zeros(1, 84, 8400, dtype=torch.int32), r"floating-point.*torch\.int32"),
    ],
)
def test_outputs_that_do_not_fit_raise_decode_error(tensor, match):
    with pytest.raises(DecodeError, match=match):
        YoloV8Decoder().num_classes([tensor])


def test_no_outputs_raise_decode_error():
    with pytest.raises(DecodeError, match=r"\[B, 4\+nc, N\].*none"):
        YoloV8Decoder().num_classes([])


@pytest.mark.parametrize(("nc", "shape"), [(1, (1, 5, 10)), (80, (4, 84, 8400))])
def test_num_classes_is_rows_minus_four(nc, shape):
    assert YoloV8Decoder().num_classes([torch.zeros(shape)]) == nc


# --------------------------------------------------------------------------------------------------------------
# Letterbox geometry: ultralytics' LetterBox(auto=False, center=True) arithmetic, worked out by hand.

# (frame w, h, input w, h, scale, resized w, h, pad x, y)
GEOMETRY = [
    (640, 480, 320, 320, 0.5, 320, 240, 0, 40),
    (1920, 1080, 640, 640, 1 / 3, 640, 360, 0, 140),
    # 320/479 > 320/641 = 0.49922; 479 * 0.49922 = 239.13 -> 239; (320 - 239) / 2 = 40.5, round(40.4) = 40.
    (641, 479, 320, 320, 320 / 641, 320, 239, 0, 40),
    # 640/900 = 0.7111; 300 * 0.7111 = 213.33 -> 213; (640 - 213) / 2 = 213.5, round(213.4) = 213.
    (300, 900, 640, 640, 640 / 900, 213, 640, 213, 0),
    (320, 320, 320, 320, 1.0, 320, 320, 0, 0),
    (100, 50, 64, 64, 0.64, 64, 32, 0, 16),
    (1280, 720, 640, 384, 0.5, 640, 360, 0, 12),
]


@pytest.mark.parametrize(("fw", "fh", "iw", "ih", "scale", "rw", "rh", "px", "py"), GEOMETRY)
def test_letterbox_geometry_matches_ultralytics_arithmetic(fw, fh, iw, ih, scale, rw, rh, px, py):
    geo = LetterboxGeometry.compute(fw, fh, iw, ih)
    assert geo.scale == pytest.approx(scale, rel=1e-12)
    assert (geo.resized_w, geo.resized_h) == (rw, rh)
    assert (geo.pad_x, geo.pad_y) == (px, py)
    assert (geo.frame_w, geo.frame_h) == (fw, fh)


@pytest.mark.parametrize(("fw", "fh", "iw", "ih", "scale", "rw", "rh", "px", "py"), GEOMETRY)
def test_to_frame_maps_the_resized_region_onto_the_whole_frame_and_clips(fw, fh, iw, ih, scale, rw, rh, px, py):
    geo = LetterboxGeometry.compute(fw, fh, iw, ih)
    boxes = torch.tensor([[px, py, px + rw, py + rh], [-50.0, -50.0, iw + 50.0, ih + 50.0]], dtype=torch.float64)
    mapped = geo.to_frame(boxes.clone()).numpy()
    # Per-axis gains of the rounded resized size: the picture's far edge lands exactly on the frame's.
    np.testing.assert_allclose(mapped[0], [0, 0, fw, fh], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(mapped[1], [0, 0, fw, fh])


# --------------------------------------------------------------------------------------------------------------
# Letterbox pixels.

PAD = torch.tensor(PAD_VALUE / 255.0, dtype=torch.float32)


def _region_mask(geo: LetterboxGeometry, iw: int, ih: int) -> torch.Tensor:
    mask = torch.zeros(ih, iw, dtype=torch.bool)
    mask[int(geo.pad_y) : int(geo.pad_y) + geo.resized_h, int(geo.pad_x) : int(geo.pad_x) + geo.resized_w] = True
    return mask


@pytest.mark.parametrize(
    ("fw", "fh", "iw", "ih"), [(641, 479, 320, 320), (300, 900, 320, 320), (320, 240, 320, 320), (64, 64, 64, 64)]
)
def test_letterbox_pads_with_114_outside_the_image_and_scales_inside(fw, fh, iw, ih):
    frames = torch.zeros(2, fh, fw, 3, dtype=torch.uint8)
    out, geo = letterbox(frames, iw, ih)
    assert out.shape == (2, 3, ih, iw)
    assert out.dtype == torch.float32
    inside = _region_mask(geo, iw, ih).expand_as(out)
    assert torch.all(out[~inside] == PAD)
    assert torch.all(out[inside] == 0)  # black frame stays exactly black
    white, _ = letterbox(torch.full((1, fh, fw, 3), 255, dtype=torch.uint8), iw, ih)
    assert torch.allclose(white[inside[:1]], torch.tensor(1.0))


def test_letterbox_without_resize_is_the_frame_divided_by_255():
    rng = np.random.default_rng(3)
    frames = torch.from_numpy(rng.integers(0, 256, (2, 240, 320, 3), dtype=np.uint8))
    out, geo = letterbox(frames, 320, 320)
    assert (geo.pad_x, geo.pad_y) == (0, 40)
    expected = frames.permute(0, 3, 1, 2).float() / 255.0
    torch.testing.assert_close(out[:, :, 40:280, :], expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    ("channels", "order"),
    [
        ("BGR", [2, 1, 0]),
        ("RGBA", [0, 1, 2, 3]),
        ("BGRA", [2, 1, 0, 3]),
        ("RGBx", [0, 1, 2, 3]),
        ("BGRx", [2, 1, 0, 3]),
    ],
)
def test_other_channel_orders_give_the_rgb_result(channels, order):
    rng = np.random.default_rng(5)
    rgba = torch.from_numpy(rng.integers(0, 256, (2, 479, 641, 4), dtype=np.uint8))
    expected, _ = letterbox(rgba[..., :3].contiguous(), 320, 320)
    frames = rgba[..., order].contiguous()
    got, _ = letterbox(frames, 320, 320, channels=channels)
    assert torch.equal(got, expected)


@pytest.mark.parametrize(("channels", "stride_pad"), [(3, 1), (3, 64), (4, 12)])
def test_a_strided_view_with_padded_rows_gives_the_contiguous_result(channels, stride_pad):
    rng = np.random.default_rng(7)
    h, w = 479, 641
    row = w * channels + stride_pad
    storage = torch.from_numpy(rng.integers(0, 256, (2, h, row), dtype=np.uint8))
    view = storage[:, :, : w * channels].unflatten(2, (w, channels))
    assert not view.is_contiguous()
    got, _ = letterbox(view, 320, 320)
    expected, _ = letterbox(view.contiguous(), 320, 320)
    assert torch.equal(got, expected)


def test_letterbox_reuses_a_preallocated_output():
    frames = torch.zeros(2, 479, 641, 3, dtype=torch.uint8)
    buf = torch.full((2, 3, 320, 320), -1.0)
    out, _ = letterbox(frames, 320, 320, out=buf)
    assert out.data_ptr() == buf.data_ptr()
    assert torch.all(out >= 0)
