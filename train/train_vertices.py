"""Train, evaluate and export pyinfer's embedded vertices keypoint model (``pyinfer.models.net_vertices``).

A secondary keypoint model: it runs on each detected object's crop and finds the object's four keypoints
(``pyinfer.models.net_vertices.KEYPOINTS``): a square's corners, a triangle's three vertices and a fourth that is not
visible, a circle's top, right, bottom and left points. The element maps them from the crop back to the frame.

Data: scenes (``Scene(seed, w, h)``, half of them marked) for many seeds below 900 000 at random resolutions and
aspect ratios. Each usable truth object (see :func:`usable`) gives crops cut from its box, jittered by up to
``--jitter`` of its size per edge (detector boxes are not exact), with :func:`pyinfer.ops.crops.crop_resize`, the
element's own crop (whole pixels: left/top rounded down, right/bottom up, clipped to the frame; stretched to 64x64
with bilinear taps as ``F.interpolate(..., mode="bilinear", align_corners=False)``). The targets are the truth
vertices (:func:`pyinfer.models.net_vertices.object_vertices`) in that crop's input pixels: the inverse of
:func:`pyinfer.elements._secondary.crop_to_frame` for the crop's whole-pixel box, so a jittered box moves them. Worker
processes render the whole data set first, in a fixed order; training then draws batches from it with light
photometric augmentation and left-right flips (which mirror x and swap keypoints: ``FLIP``).

An object is usable when its box lies wholly inside the frame (then the truth box is the full box and the vertices
follow exactly from it and the class), at least 60 % of it is not covered by the boxes of objects drawn after it
(``--min-visible``, ``train_marks.visible_fractions``) and it is at least 12 px on each side.

Loss: smooth L1 (beta 1/64 of the input, i.e. one input pixel) on the visible keypoints' x, y as fractions of the
input, a small pull of the invisible keypoint towards the triangle's centroid, and binary cross-entropy on the
visibility logits.

Held-out figures (seed 1000003, which training never draws; unmarked scenes, what the ``shapes`` detector knows):
keypoint errors in frame pixels and as a fraction of the object's size (max of its box's width and height), PCK
at 0.05 and 0.1 of that size, and how often the visibility is right, on crops of the usable truth boxes and of the
embedded ``shapes`` detector's boxes matched to them at IoU 0.5 (class-agnostic, greedy by confidence): how the
model is used. The figures come from the exported TorchScript file itself run through ``pyinfer.engine.Engine``
(decoder ``yolo-pose`` from its metadata), mapped to the frame with ``crop_to_frame``: the element's own path.

Only torch, numpy and pyinfer's own ``src`` (and ``train_marks.py`` beside this file) are needed; it runs on the
CPU in under 10 minutes. How the committed model was made: see docs/models.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing as mp
import multiprocessing.pool
import os
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from train_marks import match, visible_fractions

from pyinfer.elements._secondary import crop_to_frame
from pyinfer.models.net_vertices import FLIP, IMGSZ, KEYPOINTS, NAMES, PoseExport, VerticesNet, object_vertices
from pyinfer.ops.crops import crop_resize, pixel_boxes
from pyinfer.scene import CLASSES, Scene, SceneObject

NAME = "vertices"
K = 4
HELD_OUT = ((1000003, 1280, 720), (1000003, 800, 600), (1000003, 480, 270))
HELD_OUT_SEEDS = frozenset({1000003})
ASPECTS = (4 / 3, 16 / 9, 1.0, 3 / 4, 9 / 16, 21 / 9, None)  # width / height; None: a random one
MIN_VISIBLE, MIN_SIDE = 0.6, 12.0
T0 = time.perf_counter()


# -- truth and crops --------------------------------------------------------------------------------------


def usable(objects: list[SceneObject], width: int, height: int, min_visible: float = MIN_VISIBLE) -> list[bool]:
    """Per object: its box wholly inside the frame, at least ``min_visible`` of it not under a later object's box,
    and at least 12 px on each side."""
    fractions = visible_fractions(objects, width, height)
    out = []
    for o, f in zip(objects, fractions):
        left, top, w, h = o.bbox
        inside = left > 0.0 and top > 0.0 and left + w < width and top + h < height
        out.append(inside and f >= min_visible and min(w, h) >= MIN_SIDE)
    return out


def jittered(bbox: tuple[float, float, float, float], rng: np.random.Generator, jitter: float) -> tuple[float, ...]:
    """An ltwh box as xyxy, each edge moved by up to ``jitter`` of the box's width (x) or height (y)."""
    left, top, w, h = bbox
    d = rng.uniform(-jitter, jitter, 4) * np.array([w, h, w, h])
    x1, y1, x2, y2 = left + d[0], top + d[1], left + w + d[2], top + h + d[3]
    return (x1, y1, max(x2, x1 + 1.0), max(y2, y1 + 1.0))


def crops_of(frame: np.ndarray, boxes: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """The element's crops of xyxy ``boxes`` (N, 4) from one (H, W, 3) frame: (N, 64, 64, 3) uint8, and the crops'
    whole-pixel boxes (N, 4) int64 (left, top, right, bottom) that ``crop_to_frame`` maps back through."""
    height, width = frame.shape[:2]
    b = torch.from_numpy(np.asarray(boxes, np.float32).reshape(-1, 4))
    index = torch.zeros(len(b), dtype=torch.int64)
    out = crop_resize(torch.from_numpy(frame)[None], index, b, IMGSZ, IMGSZ)
    return out, pixel_boxes(b, width, height).numpy()


def to_input(points: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(K, 3) frame-pixel keypoints -> the input pixels of the crop of ``region``: inverse of ``crop_to_frame``."""
    left, top, right, bottom = (float(v) for v in region)
    out = np.asarray(points, np.float32).copy()
    out[:, 0] = (out[:, 0] - left) * IMGSZ / (right - left)
    out[:, 1] = (out[:, 1] - top) * IMGSZ / (bottom - top)
    return out


# -- data -------------------------------------------------------------------------------------------------


def render(
    seed: int,
    width: int,
    height: int,
    marked: bool,
    indices: list[int],
    copies: int,
    jitter: float,
    wide_jitter: float,
    wide: float,
    rng_seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops of one scene's usable objects: ``copies`` per object and frame, from the truth box itself with
    probability 1/4, else from a box jittered by up to ``wide_jitter`` with probability ``wide`` (a detector box
    that is far off: merged with a neighbour, or cut short), else by up to ``jitter``. Returns (N, 64, 64, 3) uint8
    crops, (N, K, 3) float32 targets (x, y in input pixels, visible) and (N,) int64 class ids."""
    scene = Scene(seed, width, height, marked=marked)
    rng = np.random.Generator(np.random.PCG64(rng_seed))
    crops, targets, classes = [], [], []
    for index in indices:
        img, objects = scene.frame(index)
        boxes, points = [], []
        for obj, ok in zip(objects, usable(objects, width, height)):
            if not ok:
                continue
            for _ in range(copies):
                left, top, w, h = obj.bbox
                r = rng.random()
                if r < 0.25:
                    boxes.append((left, top, left + w, top + h))
                else:
                    boxes.append(jittered(obj.bbox, rng, wide_jitter if r >= 1.0 - wide else jitter))
                points.append(object_vertices(obj.class_id, obj.bbox))
                classes.append(obj.class_id)
        if boxes:
            cut, regions = crops_of(img, np.array(boxes))
            crops.append(cut.numpy())
            targets += [to_input(np.array(p), r) for p, r in zip(points, regions)]
    if not crops:
        return np.zeros((0, IMGSZ, IMGSZ, 3), np.uint8), np.zeros((0, K, 3), np.float32), np.zeros(0, np.int64)
    return np.concatenate(crops), np.stack(targets).astype(np.float32), np.array(classes, np.int64)


def sample_task(rng: random.Random, frames: int) -> tuple[int, int, int, bool, list[int]]:
    """A random training scene: (seed, width, height, marked, frame indices); never a held-out seed."""
    seed = rng.randrange(1, 900_000)
    while seed in HELD_OUT_SEEDS:
        seed = rng.randrange(1, 900_000)
    aspect = rng.choice(ASPECTS) or math.exp(rng.uniform(math.log(0.5), math.log(2.4)))
    long_side = round(math.exp(rng.uniform(math.log(200), math.log(1920))))
    if aspect >= 1.0:
        width, height = long_side, round(long_side / aspect)
    else:
        width, height = round(long_side * aspect), long_side
    width, height = max(64, width), max(64, height)
    marked = rng.random() < 0.5
    indices = sorted(rng.sample(range(0, 1200, 6), frames))  # 6 frames apart at least: other poses, objects
    return seed, width, height, marked, indices


def _render_task(task: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return render(*task)


def _worker_init() -> None:
    torch.set_num_threads(1)


def _start_pool(workers: int) -> mp.pool.Pool:
    """Spawn render workers with one BLAS/OpenMP thread each."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, "1"))  # read by the children at import; the parent keeps its pools
    try:
        return mp.get_context("spawn").Pool(workers, initializer=_worker_init)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def build_dataset(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render ``--scenes`` scenes (in a fixed order, whatever the worker count): (N, 64, 64, 3) uint8 crops,
    (N, K, 3) float32 targets and (N,) int64 class ids."""
    rng = random.Random(args.seed)
    crops = (args.copies, args.jitter, args.wide_jitter, args.wide)
    tasks = [(*sample_task(rng, args.frames_per_scene), *crops, args.seed * 1_000_003 + k) for k in range(args.scenes)]
    if args.workers > 0:
        pool = _start_pool(args.workers)
        try:
            parts = list(pool.imap(_render_task, tasks, chunksize=4))
        finally:
            pool.terminate()
    else:
        parts = [_render_task(t) for t in tasks]
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    t = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    c = torch.from_numpy(np.concatenate([p[2] for p in parts]))
    counts = {name: int((c == i).sum()) for i, name in enumerate(CLASSES)}
    print(f"data set: {len(c)} crops from {args.scenes} scenes {counts} ({time.perf_counter() - T0:.0f}s)", flush=True)
    return x, t, c


_FLIP = torch.tensor(FLIP, dtype=torch.int64)


def augment(
    images: torch.Tensor, targets: torch.Tensor, classes: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Brightness, contrast, noise and left-right flips (x mirrored, keypoints swapped); uint8 (B, 64, 64, 3) ->
    float (B, 3, 64, 64) in [0, 1], and the (B, K, 3) targets to match."""
    b = images.shape[0]
    x = images.permute(0, 3, 1, 2).float() / 255.0
    r = torch.rand((b, 4), generator=gen)
    contrast = 0.8 + 0.4 * r[:, 0]
    brightness = 0.12 * (r[:, 1] - 0.5)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * contrast.view(-1, 1, 1, 1) + mean + brightness.view(-1, 1, 1, 1)
    noise = torch.randn(x.shape, generator=gen) * (0.03 * r[:, 2]).view(-1, 1, 1, 1)
    x = (x + noise).clamp_(0.0, 1.0)
    flip = r[:, 3] < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    mirrored = targets.gather(1, _FLIP[classes].unsqueeze(-1).expand(-1, -1, 3)).clone()
    mirrored[..., 0] = IMGSZ - mirrored[..., 0]
    return x, torch.where(flip.view(-1, 1, 1), mirrored, targets)


# -- training ---------------------------------------------------------------------------------------------


def loss_fn(out: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss and the mean error (input pixels) of the visible keypoints; ``out`` as VerticesNet gives it,
    ``target`` (B, K, 3) in input pixels."""
    visible = target[..., 2]
    coords = target[..., :2] / IMGSZ
    per = F.smooth_l1_loss(out[..., :2], coords, beta=1.0 / IMGSZ, reduction="none").sum(-1)  # (B, K)
    weight = visible + 0.05 * (1.0 - visible)  # the invisible keypoint: a light pull to the centroid
    coord_loss = (per * weight).sum() / visible.sum().clamp(min=1.0)
    vis_loss = F.binary_cross_entropy_with_logits(out[..., 2], visible)
    with torch.no_grad():
        err = (out[..., :2] - coords).norm(dim=-1) * IMGSZ
        mean_err = (err * visible).sum() / visible.sum().clamp(min=1.0)
    return 20.0 * coord_loss + vis_loss, mean_err


def train(
    args: argparse.Namespace, model: VerticesNet, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor
) -> VerticesNet:
    """Train ``model`` in place (AdamW, warm-up + cosine); returns it."""
    model.train()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr
    )
    warmup = min(200, args.steps // 10)
    gen = torch.Generator().manual_seed(args.seed)
    t_start, loss_sum, err_sum = time.perf_counter(), 0.0, 0.0
    for step in range(args.steps):
        if step < warmup:
            lr_scale = (step + 1) / warmup
        else:
            lr_scale = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))
        for g in opt.param_groups:
            g["lr"] = args.lr * lr_scale
        idx = torch.randint(0, len(c), (args.batch,), generator=gen)
        images, target = augment(x[idx], t[idx], c[idx], gen)
        loss, err = loss_fn(model(images), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += float(loss.detach())
        err_sum += float(err)
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            n = (step % args.log_every) + 1
            print(
                f"step {step + 1}/{args.steps} lr {args.lr * lr_scale:.2e} loss {loss_sum / n:.4f} "
                f"train error {err_sum / n:.2f} input px ({time.perf_counter() - t_start:.0f}s)",
                flush=True,
            )
            loss_sum, err_sum = 0.0, 0.0
    return model.eval()


# -- evaluation -------------------------------------------------------------------------------------------


class Tally:
    """Keypoint errors of visible keypoints (frame pixels, and / object size), their class, and visibility."""

    def __init__(self) -> None:
        self.px: list[float] = []
        self.norm: list[float] = []
        self.cls: list[int] = []
        self.visible_conf: list[float] = []  # predicted confidence of keypoints that are visible
        self.hidden_conf: list[float] = []  # of the triangle's fourth keypoint
        self.crops = 0
        self.missing = 0  # crops the model gave no detection for

    def add(self, pred: np.ndarray | None, truth: np.ndarray, size: float, class_id: int) -> None:
        """One crop: ``pred`` (K, 3) frame-pixel keypoints (None: nothing decoded), ``truth`` (K, 3)."""
        self.crops += 1
        if pred is None:
            self.missing += 1
            return
        for p, g in zip(pred, truth):
            if g[2] > 0.5:
                e = float(math.hypot(p[0] - g[0], p[1] - g[1]))
                self.px.append(e)
                self.norm.append(e / size)
                self.cls.append(class_id)
                self.visible_conf.append(float(p[2]))
            else:
                self.hidden_conf.append(float(p[2]))

    def merge(self, other: Tally) -> None:
        """Add another tally's counts."""
        self.px += other.px
        self.norm += other.norm
        self.cls += other.cls
        self.visible_conf += other.visible_conf
        self.hidden_conf += other.hidden_conf
        self.crops += other.crops
        self.missing += other.missing

    def report(self) -> dict[str, Any]:
        """Errors (mean, median, PCK), visibility accuracy, counts, per-class median error / size."""
        px, norm, cls = np.array(self.px), np.array(self.norm), np.array(self.cls)
        out: dict[str, Any] = {"crops": self.crops, "missing": self.missing, "keypoints": len(px)}
        if not len(px):
            return out
        out.update(
            mean_px=round(float(px.mean()), 3),
            median_px=round(float(np.median(px)), 3),
            mean_rel=round(float(norm.mean()), 4),
            median_rel=round(float(np.median(norm)), 4),
            p95_rel=round(float(np.percentile(norm, 95)), 4),
            pck_0_05=round(float((norm < 0.05).mean()), 4),
            pck_0_1=round(float((norm < 0.1).mean()), 4),
            visible_accuracy=round(float((np.array(self.visible_conf) > 0.5).mean()), 4),
            per_class_median_rel={
                name: round(float(np.median(norm[cls == k])), 4) for k, name in enumerate(CLASSES) if (cls == k).any()
            },
        )
        if self.hidden_conf:
            hidden = np.array(self.hidden_conf)
            out["hidden_accuracy"] = round(float((hidden < 0.5).mean()), 4)
            out["hidden_keypoints"] = len(hidden)
        return out


def _keypoints(engine: Any, crops: torch.Tensor, regions: np.ndarray) -> list[np.ndarray | None]:
    """Per crop, the model's keypoints through the engine (decoder yolo-pose), mapped to frame pixels with the
    element's ``crop_to_frame``; None where it decoded nothing."""
    out: list[np.ndarray | None] = []
    for start in range(0, len(crops), 64):
        for dets, region in zip(engine.infer(crops[start : start + 64]), regions[start : start + 64]):
            if not len(dets) or dets.keypoints is None:
                out.append(None)
                continue
            mapped = crop_to_frame(dets[:1], region, IMGSZ, IMGSZ, False)
            out.append(np.asarray(mapped.keypoints[0], np.float64))
    return out


@torch.no_grad()
def evaluate(engine: Any, detector: Any, seed: int, width: int, height: int, frames: int) -> dict[str, Tally]:
    """Tallies on one sequence: crops of usable truth boxes, and of detector boxes matched to them."""
    scene = Scene(seed, width, height)
    on_truth, on_detector = Tally(), Tally()
    for start in range(0, frames, 8):
        shots = [scene.frame(i) for i in range(start, min(frames, start + 8))]
        dets = detector.infer(torch.from_numpy(np.stack([img for img, _ in shots]))) if detector else [None] * 8
        for (img, objects), det in zip(shots, dets):
            kept = [o for o, good in zip(objects, usable(objects, width, height)) if good]
            if not kept:
                continue
            truth = [np.array(object_vertices(o.class_id, o.bbox)) for o in kept]
            sizes = [max(o.bbox[2], o.bbox[3]) for o in kept]
            boxes = np.array([(o.bbox[0], o.bbox[1], o.bbox[0] + o.bbox[2], o.bbox[1] + o.bbox[3]) for o in kept])
            crops, regions = crops_of(img, boxes)
            for pred, g, s, o in zip(_keypoints(engine, crops, regions), truth, sizes, kept):
                on_truth.add(pred, g, s, o.class_id)
            if det is None:
                continue
            pairs = match(det.xyxy.astype(np.float64), det.confidence, boxes)
            if pairs:
                crops, regions = crops_of(img, det.xyxy[[i for i, _ in pairs]])
                for pred, (_, j) in zip(_keypoints(engine, crops, regions), pairs):
                    on_detector.add(pred, truth[j], sizes[j], kept[j].class_id)
    return {"truth_boxes": on_truth, "detector_boxes": on_detector}


def evaluate_held_out(model_path: Path, frames: int, *, with_detector: bool = True) -> dict[str, Any]:
    """The held-out evaluation of an exported file: seed 1000003 at three sizes, per sequence and all together."""
    from pyinfer.engine import Engine, EngineConfig

    engine = Engine.build(EngineConfig(model=str(model_path), device="cpu", max_batch=64))
    assert engine.decoder_choice.name == "yolo-pose", engine.decoder_choice
    detector = None
    if with_detector:
        from pyinfer.zoo import get_model

        detector = Engine.build(EngineConfig(model=str(get_model("shapes").path), device="cpu", max_batch=8))
    total = {"truth_boxes": Tally(), "detector_boxes": Tally()}
    out: dict[str, Any] = {"frames": frames, "sequences": {}}
    for seed, w, h in HELD_OUT:
        tallies = evaluate(engine, detector, seed, w, h, frames)
        out["sequences"][f"{seed}@{w}x{h}"] = {k: t.report() for k, t in tallies.items() if t.crops}
        for k, t in tallies.items():
            total[k].merge(t)
        line = " ".join(
            f"{k} median {t.report().get('median_rel', float('nan')):.4f} ({t.crops})" for k, t in tallies.items()
        )
        print(f"held-out seed {seed} {w}x{h}: {line} ({time.perf_counter() - T0:.0f}s)", flush=True)
    for k, t in total.items():
        if t.crops:
            out[k] = t.report()
    return out


# -- export -----------------------------------------------------------------------------------------------


def trace(model: VerticesNet) -> Any:
    """Fuse, wrap in the YOLOv8-pose layout, trace and freeze on the CPU; checked against the unfused model."""
    fused = copy.deepcopy(model).float().cpu().eval().fuse()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trace's deprecation notice
        traced = torch.jit.freeze(torch.jit.trace(PoseExport(fused).eval(), torch.zeros(1, 3, IMGSZ, IMGSZ)))
    x = torch.rand(4, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        # score and keypoints (the box follows the visibility threshold, which random inputs may straddle)
        torch.testing.assert_close(traced(x)[:, 4:], PoseExport(model.eval())(x)[:, 4:], rtol=1e-4, atol=1e-3)
    return traced


def save(traced: Any, out_dir: Path, meta_extra: dict, report: dict) -> dict:
    """Save TorchScript (metadata in ``config.txt``) + labels in ``out_dir``; returns the metadata."""
    meta = {
        "description": "pyinfer vertices keypoint model: an object's vertices from its crop (secondary inference)",
        "task": "pose",
        "kpt_shape": [K, 3],
        "end2end": False,  # one anchor: [B, 17, 1] is not end-to-end rows, whatever its shape suggests
        "imgsz": [IMGSZ, IMGSZ],
        "batch": 1,
        "names": {str(i): name for i, name in enumerate(NAMES)},
        "pyinfer": {
            "decoder": "yolo-pose",
            "input": "rgb",
            "resize": "stretch",
            "letterbox": False,
            "output": "YOLOv8-pose layout, one anchor: [B, 4 + 1 + 4*3, 1] (box enclosing the visible keypoints, "
            "score 1, x, y in input pixels and visibility probability per keypoint)",
            "keypoints": {name: list(kp) for name, kp in KEYPOINTS.items()},
            **meta_extra,
            "torch": torch.__version__,
            "eval": report,
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{NAME}.torchscript"
    torch.jit.save(traced, str(path), _extra_files={"config.txt": json.dumps(meta)})
    (out_dir / f"{NAME}.labels.txt").write_text("".join(f"{name}\n" for name in NAMES))
    print(f"wrote {path} ({path.stat().st_size} bytes)", flush=True)
    return meta


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenes", type=int, default=800, help="training scenes rendered")
    p.add_argument("--frames-per-scene", type=int, default=12)
    p.add_argument("--copies", type=int, default=2, help="crops per object and frame")
    p.add_argument("--jitter", type=float, default=0.08, help="box edge jitter, fraction of the box's size")
    p.add_argument("--wide-jitter", type=float, default=0.25, help="the far-off boxes' edge jitter")
    p.add_argument("--wide", type=float, default=0.15, help="fraction of crops from far-off boxes")
    p.add_argument("--workers", type=int, default=max(1, mp.cpu_count() or 1))
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--eval-frames", type=int, default=150, help="held-out frames per sequence (0: none)")
    p.add_argument("--no-detector", action="store_true", help="held-out figures on truth boxes only")
    p.add_argument("--export", type=Path, help=f"write {NAME}.torchscript + {NAME}.labels.txt here")
    p.add_argument("--report", type=Path, help="write the evaluation JSON here too")
    p.add_argument("--log-every", type=int, default=250)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    model = VerticesNet()
    print(f"VerticesNet: {sum(q.numel() for q in model.parameters())} parameters", flush=True)
    x, t, c = build_dataset(args)
    torch.manual_seed(args.seed)
    model = train(args, model, x, t, c)
    train_seconds = round(time.perf_counter() - T0)
    print(f"trained after {train_seconds}s", flush=True)
    info = {
        "seed": args.seed,
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "scenes": args.scenes,
        "frames_per_scene": args.frames_per_scene,
        "copies": args.copies,
        "jitter": args.jitter,
        "wide_jitter": args.wide_jitter,
        "wide": args.wide,
        "crops": len(c),
        "train_seconds": train_seconds,
        "torch": torch.__version__,
        "device": "cpu",
    }
    traced = trace(model)
    report: dict[str, Any] = {}
    if args.eval_frames:  # the exported file itself, through the engine
        with tempfile.TemporaryDirectory() as tmp:
            save(traced, Path(tmp), {"train": info}, {})
            report = evaluate_held_out(Path(tmp) / f"{NAME}.torchscript", args.eval_frames,
                                       with_detector=not args.no_detector)  # fmt: skip
    if args.export:
        save(traced, args.export, {"train": info}, report)
    result = {"train": info, "eval": report, "seconds": round(time.perf_counter() - T0)}
    text = json.dumps(result, indent=1)
    if args.report:
        args.report.write_text(text + "\n")
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
