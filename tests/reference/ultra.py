"""Helpers for the ultralytics reference tests: offline models with many confident boxes, frames, matching.

ultralytics is imported only after :data:`OFFLINE_ENV` is in ``os.environ`` (tests/reference/conftest.py sets
it at import): no settings sync, no auto-install, no downloads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pyinfer.detections import Detections
from pyinfer.ops.letterbox import LetterboxGeometry
from pyinfer.scene import Scene

#: What keeps ultralytics off the network: offline mode, no pip auto-install, no requirement checks (which would
#: try to install onnxslim & co.), quiet logs. YOLO_CONFIG_DIR is set per session to a temporary directory.
OFFLINE_ENV = {
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "0",
    "ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS": "1",
    "YOLO_VERBOSE": "0",
}

#: After calibration, the median anchor's best class scores this...
MEDIAN_SCORE = 0.05
#: ...and this fraction of the anchors score above HIGH_SCORE: dozens of overlapping boxes per frame.
CONFIDENT_FRACTION = 0.05
HIGH_SCORE = 0.6


def bgr_frames(
    width: int, height: int, count: int, *, block: int = 1, seed: int = 7, rotated: bool = False
) -> np.ndarray:
    """(count, H, W, 3) uint8 BGR frames of a synthetic scene (textured: no flat regions, so no score ties).

    ``block`` > 1 renders at 1/block size and repeats every pixel block x block times. Downscaled by exactly
    ``block``, such a frame gives the same pixels through cv2's and torch's bilinear resize (every sample falls
    inside one constant block), where other frames differ by one grey level here and there (the two round
    differently). A random-weight network amplifies even that, so exact comparisons use block frames.
    """
    scene = Scene(seed, width // block, height // block, rotated=rotated)
    frames = np.stack([scene.frame(3 + 7 * i)[0][..., ::-1] for i in range(count)])
    return np.ascontiguousarray(frames.repeat(block, axis=1).repeat(block, axis=2))


def _class_convs(head: torch.nn.Module) -> list[torch.nn.Conv2d]:
    """The last conv of every class-score branch (one-to-many and, for end-to-end heads, one-to-one)."""
    convs = []
    for name in ("cv3", "one2one_cv3"):
        branches = getattr(head, name, None)
        if branches is not None:
            convs += [branch[-1] for branch in branches]
    return convs


@torch.no_grad()
def calibrate_scores(model: torch.nn.Module, frames: np.ndarray, imgsz: tuple[int, int]) -> None:
    """Make a random-weight YOLO score its anchors over the whole (0, 1) range on ``frames`` (in place).

    Two things stop a freshly built model from giving a useful comparison: random convs shrink the signal
    layer after layer while BatchNorm's running statistics still say "mean 0, variance 1", so deep features
    are nearly constant; and ultralytics initialises the class bias to about logit(0.0001). So: BatchNorm
    statistics are measured on the frames (one train-mode pass, cumulative averages), as a trained model's
    would be; then each class-score conv ``W f + b`` becomes ``k W f + b'``, with one ``k`` and per-class
    ``b'`` per conv such that the median anchor's best class scores :data:`MEDIAN_SCORE` and the top
    :data:`CONFIDENT_FRACTION` score above :data:`HIGH_SCORE`.

    Args:
        model: ultralytics DetectionModel/OBBModel (``YOLO(...).model``).
        frames: (N, H, W, 3) uint8 BGR frames the tests will use.
        imgsz: (height, width) model input.
    """
    from pyinfer.ops.letterbox import letterbox

    h, w = imgsz
    x, _ = letterbox(torch.from_numpy(frames), w, h, channels="BGR")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: the statistics of exactly these frames
    model.train()
    model(x)
    model.eval()
    convs = _class_convs(model.model[-1])
    captured: dict[int, torch.Tensor] = {}
    hooks = [c.register_forward_hook(lambda m, i, o: captured.__setitem__(id(m), o - m.bias[None, :, None, None]))
             for c in convs]  # fmt: skip
    try:
        model(x)
    finally:
        for hook in hooks:
            hook.remove()
    lo, hi = math.log(MEDIAN_SCORE / (1 - MEDIAN_SCORE)), math.log(HIGH_SCORE / (1 - HIGH_SCORE))
    for c in convs:
        wf = captured[id(c)]  # (N, nc, h, w): W f without the bias
        centre = wf.mean(dim=(0, 2, 3))  # per class, so that no class dominates every anchor
        best = (wf - centre[None, :, None, None]).amax(dim=1).flatten()
        q50, qhi = best.quantile(0.5).item(), best.quantile(1 - CONFIDENT_FRACTION).item()
        k = (hi - lo) / max(qhi - q50, 1e-6)
        c.weight.mul_(k)
        c.bias.copy_(lo - k * (centre + q50))


def build(cfg: str, frames: np.ndarray, imgsz: tuple[int, int], *, seed: int = 0):
    """``YOLO(cfg)`` from its yaml with seeded random weights, calibrated on ``frames`` (no download)."""
    from ultralytics import YOLO

    torch.manual_seed(seed)
    yolo = YOLO(cfg)
    calibrate_scores(yolo.model, frames, imgsz)
    return yolo


# ----------------------------------------------------------------------------------------------------------------
# Matching pyinfer's detections to ultralytics'.


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) xyxy -> (N, M) IoU, float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def corners(r: np.ndarray) -> np.ndarray:
    """(5,) cx, cy, w, h, angle -> (4, 2) corners, counter-clockwise in image coordinates (y down)."""
    cx, cy, w, h, a = (float(v) for v in r)
    c, s = math.cos(a), math.sin(a)
    pts = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
    return np.array([(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts])


def _clip(poly: list[tuple[float, float]], a: np.ndarray, b: np.ndarray) -> list[tuple[float, float]]:
    """Sutherland-Hodgman: the part of ``poly`` left of the directed edge a->b."""

    def side(p: tuple[float, float]) -> float:
        return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])

    out: list[tuple[float, float]] = []
    for i, p in enumerate(poly):
        q = poly[i - 1]
        sp, sq = side(p), side(q)
        if sp >= 0:
            if sq < 0:
                t = sq / (sq - sp)
                out.append((q[0] + t * (p[0] - q[0]), q[1] + t * (p[1] - q[1])))
            out.append(p)
        elif sq >= 0:
            t = sq / (sq - sp)
            out.append((q[0] + t * (p[0] - q[0]), q[1] + t * (p[1] - q[1])))
    return out


def _area(poly: list[tuple[float, float]]) -> float:
    return 0.5 * abs(sum(p[0] * q[1] - q[0] * p[1] for p, q in zip(poly, poly[1:] + poly[:1])))


def rotated_iou(r1: np.ndarray, r2: np.ndarray) -> float:
    """Exact IoU of two rotated boxes (cx, cy, w, h, angle) by polygon clipping, float64."""
    p1, p2 = corners(r1), corners(r2)
    poly = [tuple(p) for p in p1]
    for i in range(4):
        poly = _clip(poly, p2[i], p2[(i + 1) % 4])
        if not poly:
            return 0.0
    inter = _area(poly)
    union = r1[2] * r1[3] + r2[2] * r2[3] - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Match:
    """How one frame's detections compare: matched pairs and the leftovers of each side."""

    pairs: list[tuple[int, int, float]]  # (pyinfer row, ultralytics row, IoU)
    only_pyinfer: list[int]
    only_ultralytics: list[int]


def match(
    got_boxes: np.ndarray,
    got_cls: np.ndarray,
    ref_boxes: np.ndarray,
    ref_cls: np.ndarray,
    *,
    rotated: bool = False,
    min_iou: float = 0.99,
) -> Match:
    """Greedy one-to-one matching by IoU (same class only), best pairs first."""
    n, m = len(got_boxes), len(ref_boxes)
    iou = np.zeros((n, m))
    if n and m:
        if rotated:
            for i in range(n):
                near = np.flatnonzero(
                    (ref_cls == got_cls[i]) & (np.abs(ref_boxes[:, :2] - got_boxes[i, :2]).max(axis=1) < 4)
                )
                for j in near:
                    iou[i, j] = rotated_iou(got_boxes[i], ref_boxes[j])
        else:
            iou = box_iou(got_boxes, ref_boxes) * (got_cls[:, None] == ref_cls[None, :])
    pairs = []
    used_i, used_j = set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), m)
        if iou[i, j] < min_iou:
            break
        if i in used_i or j in used_j:
            continue
        used_i.add(i)
        used_j.add(j)
        pairs.append((i, j, float(iou[i, j])))
    return Match(pairs, sorted(set(range(n)) - used_i), sorted(set(range(m)) - used_j))


# ----------------------------------------------------------------------------------------------------------------
# Which candidates may honestly come out differently: decisions too close to a threshold to call.

#: A suppression decision closer than this to the IoU threshold may go either way: ultralytics separates
#: classes by adding class * 7680 px to float32 boxes before NMS, which rounds coordinates to ~0.06 px for the
#: last classes (an IoU error of ~1e-3 on a 50 px box); pyinfer computes in float64.
IOU_MARGIN = 2e-3
#: A score closer than this to the confidence threshold (or to another overlapping box's score) may go either
#: way: the two pipelines' inputs differ by float rounding, which a random-weight network amplifies to ~1e-4.
SCORE_MARGIN = 1e-3


@dataclass
class Candidates:
    """A frame's pre-NMS candidates (model-input pixels) and which of them are too close to call."""

    boxes: np.ndarray  # (N, 4) xyxy or (N, 5) cxcywhr, float64
    scores: np.ndarray  # (N,) float64
    cls: np.ndarray  # (N,) int
    uncertain: np.ndarray  # (N,) bool


def candidates(out: np.ndarray, *, kind: str, conf: float, iou: float, nc: int | None = None) -> Candidates:
    """Candidates of one frame's raw output and their uncertainty, for ``kind`` yolov8 / yolo-obb / yolo-e2e.

    Args:
        out: one frame of the model output: (4 + nc, N) for yolov8, (4 + nc + 1, N) for yolo-obb, (K, 6) for
            yolo-e2e.
        kind: the decoder.
        conf: confidence threshold.
        iou: NMS IoU threshold.
        nc: classes (yolo-obb).

    Returns:
        Every candidate scoring above ``conf - SCORE_MARGIN``, best first, with the uncertain ones marked: near
        the confidence threshold, a suppression decision near the IoU threshold, an overlapping box of nearly
        the same score (the order may swap), or overlapping an uncertain better box (a cascade).
    """
    out = out.astype(np.float64)
    if kind == "yolo-e2e":
        boxes, scores, cls = out[:, :4], out[:, 4], out[:, 5].round().astype(int)
    else:
        nc = nc if nc is not None else out.shape[0] - 4
        scores_all = out[4 : 4 + nc].T
        cls = scores_all.argmax(axis=1)
        scores = scores_all.max(axis=1)
        if kind == "yolo-obb":
            boxes = np.concatenate([out[:4].T, out[-1:].T], axis=1)
        else:
            cx, cy, w, h = out[:4]
            boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    sel = np.flatnonzero(scores > conf - SCORE_MARGIN)
    sel = sel[np.argsort(-scores[sel], kind="stable")]
    boxes, scores, cls = boxes[sel], scores[sel], cls[sel]
    uncertain = np.abs(scores - conf) < SCORE_MARGIN
    if kind != "yolo-e2e":
        for c in np.unique(cls):
            rows = np.flatnonzero(cls == c)
            uncertain[rows] |= _uncertain_nms(boxes[rows], scores[rows], uncertain[rows], conf, iou, kind)
    return Candidates(boxes, scores, cls, uncertain)


def _pairwise(boxes: np.ndarray, kind: str) -> np.ndarray:
    if kind == "yolo-obb":
        from ultralytics.utils.metrics import batch_probiou  # the reference's own similarity, in float64

        t = torch.from_numpy(boxes)
        return batch_probiou(t, t).numpy()
    return box_iou(boxes, boxes)


def _uncertain_nms(
    boxes: np.ndarray, scores: np.ndarray, unsure: np.ndarray, conf: float, thr: float, kind: str
) -> np.ndarray:
    """One class, best first: greedy NMS (yolov8) or ultralytics' fast NMS (yolo-obb), marking close calls."""
    unsure = unsure.copy()
    sim = _pairwise(boxes, kind)
    kept: list[int] = []
    for i in range(len(boxes)):
        above = scores[i] > conf
        # Boxes that may suppress i: greedy NMS counts kept better boxes, fast NMS every better box.
        judges = kept if kind != "yolo-obb" else [j for j in range(i) if scores[j] > conf]
        best = max((sim[j, i] for j in judges), default=0.0)
        if abs(best - thr) < IOU_MARGIN:
            unsure[i] = True
        for j in range(i):
            near = sim[j, i] > thr - IOU_MARGIN
            if near and (unsure[j] or scores[j] - scores[i] < SCORE_MARGIN):
                unsure[i] = True  # j may be absent, or rank below i, on one side
        if above and best <= thr:
            kept.append(i)
    return unsure


@dataclass
class FrameReport:
    """One frame's comparison: counts for the test's summary assertions."""

    ultralytics: int
    pyinfer: int
    matched: int
    explained: int  # unmatched detections, all of them close calls


def compare_frame(
    got: Detections, ref: object, cand: Candidates, geometry: LetterboxGeometry, *, rotated: bool, where: str
) -> FrameReport:
    """Assert pyinfer's Detections ``got`` match ultralytics' Results ``ref`` for one frame.

    Matched pairs: same class, IoU >= 0.99 (rotated IoU for rotated boxes), scores within 1e-3. A detection
    only one side has must be a candidate too close to call (:func:`candidates`).
    """
    if rotated:
        ref_boxes, ref_conf, ref_cls = ref.obb.xywhr.numpy(), ref.obb.conf.numpy(), ref.obb.cls.numpy().astype(int)
        got_boxes = got.cxcywhr
    else:
        ref_boxes, ref_conf, ref_cls = ref.boxes.xyxy.numpy(), ref.boxes.conf.numpy(), ref.boxes.cls.numpy().astype(int)
        got_boxes = got.xyxy
    m = match(got_boxes, got.class_id, ref_boxes, ref_cls, rotated=rotated)
    for i, j, _ in m.pairs:
        assert abs(float(got.confidence[i]) - float(ref_conf[j])) <= 1e-3, (
            f"{where}: class {ref_cls[j]} box {ref_boxes[j]}: score {got.confidence[i]} vs ultralytics {ref_conf[j]}"
        )
    # Candidates in frame pixels, to name the leftovers.
    cb = torch.from_numpy(cand.boxes.copy())
    cand_frame = (geometry.to_frame_cxcywh(cb) if rotated else geometry.to_frame(cb)).numpy()
    leftovers = [("pyinfer", got_boxes[i], int(got.class_id[i])) for i in m.only_pyinfer]
    leftovers += [("ultralytics", ref_boxes[j], int(ref_cls[j])) for j in m.only_ultralytics]
    for side, box, c in leftovers:
        same = np.flatnonzero(cand.cls == c)
        if rotated:
            ious = np.array([rotated_iou(box, cand_frame[k]) for k in same])
        else:
            ious = box_iou(box[None], cand_frame[same])[0]
        k = same[int(np.argmax(ious))] if len(same) else -1
        assert k >= 0 and ious.max() >= 0.99, f"{where}: {side} has class {c} box {box}, which is no candidate"
        assert cand.uncertain[k], (
            f"{where}: only {side} has class {c} box {box} (score {cand.scores[k]:.5f}), and it is no close call"
        )
    return FrameReport(len(ref_boxes), len(got_boxes), len(m.pairs), len(leftovers))
