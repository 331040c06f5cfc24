"""Train, evaluate and export pyinfer's embedded marks classifier (``pyinfer.models.net_marks.MarksNet``).

A secondary classifier: it runs on each detected object's crop and tells the object's mark (``plain``, ``dot``,
``bar``: :data:`pyinfer.scene.MARKS`), an attribute that is independent of the object's class.

Data: marked scenes (``Scene(seed, w, h, marked=True)``) for many seeds below 900 000 at random resolutions and
aspect ratios. Each usable truth object (see :func:`usable`) gives crops cut from its box, jittered by up to
``--jitter`` of its size per edge (detector boxes are not exact), in whole pixels as the secondary element takes
them (left/top rounded down, right/bottom up, clipped to the frame) and stretched to 64x64 with
``torch.nn.functional.interpolate(..., mode="bilinear", align_corners=False)``, rounded to uint8: what the element
feeds the model (nvinfer's default, ``maintain-aspect-ratio=0``). Worker processes render the whole data set
first, in a fixed order; training then draws batches from it with light photometric augmentation and
left-right flips (all three marks, and every shape, are symmetric about the vertical axis).

An object is usable when at least 60 % of its full box is visible (``--min-visible``: inside the frame and not
covered by the boxes of objects drawn after it) and its visible box is at least 12 px on each side: the rest may
not show their mark at all. The full box of an object cut by the frame edge is known from its uncut side (circles
and squares are square, triangles sqrt(3)/2 as high as wide); objects cut on both axes are left out.

Held-out figures (seed 1000003, which training never draws), overall and per mark: accuracy on crops of the
usable truth boxes, and on crops of the embedded ``shapes`` detector's boxes matched to usable truth objects at
IoU 0.5 (class-agnostic, greedy by confidence): how the model is used.

Only torch, numpy and pyinfer's own ``src`` are needed; it runs on the CPU in a few minutes. How the committed model
was made: see docs/models.md.
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
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from pyinfer.models.net_marks import IMGSZ, MarksNet, Probabilities
from pyinfer.scene import MARKS, Scene, SceneObject

NAME = "marks"
HELD_OUT = ((1000003, 1280, 720), (1000003, 800, 600), (1000003, 480, 270))
HELD_OUT_SEEDS = frozenset({1000003})
ASPECTS = (4 / 3, 16 / 9, 1.0, 3 / 4, 9 / 16, 21 / 9, None)  # width / height; None: a random one
TRIANGLE_ASPECT = math.sqrt(3.0) / 2.0  # a triangle's full box: height / width
MIN_VISIBLE, MIN_SIDE = 0.6, 12.0
T0 = time.perf_counter()


# -- crops ------------------------------------------------------------------------------------------------


def visible_fractions(objects: list[SceneObject], width: int, height: int) -> list[float]:
    """Per object, the fraction of its full box that is visible; 0.0 where the full box cannot be told.

    Visible: inside the frame (the truth box is the full box clipped to it) and not under the box of an object
    drawn after it (later objects cover earlier ones; a box covers more than its shape, so this errs low).
    """
    out = []
    for j, obj in enumerate(objects):
        left, top, w, h = obj.bbox
        aspect = TRIANGLE_ASPECT if obj.class_id == 2 else 1.0
        cut_x = left <= 0.0 or left + w >= width
        cut_y = top <= 0.0 or top + h >= height
        if cut_x and cut_y:
            out.append(0.0)
            continue
        full_w, full_h = (w, w * aspect) if not cut_x else (h / aspect, h)
        inside = min(1.0, (w * h) / max(full_w * full_h, 1e-9))
        # The part of the clipped box that no later box covers, on a 24x24 grid of sample points.
        gx = left + (np.arange(24) + 0.5) * w / 24.0
        gy = top + (np.arange(24) + 0.5) * h / 24.0
        covered = np.zeros((24, 24), bool)
        for later in objects[j + 1 :]:
            ll, lt, lw, lh = later.bbox
            covered |= ((gy >= lt) & (gy <= lt + lh))[:, None] & ((gx >= ll) & (gx <= ll + lw))[None, :]
        out.append(inside * (1.0 - float(covered.mean())))
    return out


def usable(objects: list[SceneObject], width: int, height: int, min_visible: float = MIN_VISIBLE) -> list[bool]:
    """Per object: at least ``min_visible`` of its full box visible and its box at least 12 px on each side."""
    fractions = visible_fractions(objects, width, height)
    return [f >= min_visible and min(o.bbox[2], o.bbox[3]) >= MIN_SIDE for o, f in zip(objects, fractions)]


def crop(frame: torch.Tensor, box: tuple[float, float, float, float]) -> torch.Tensor:
    """One object's crop as the secondary element makes it: (H, W, 3) uint8 frame, xyxy box -> (3, 64, 64) uint8.

    Whole pixels (left/top rounded down, right/bottom rounded up, clipped to the frame, at least 1 px), stretched
    with bilinear taps (``align_corners=False``, no antialiasing), rounded to the nearest integer.
    """
    height, width = int(frame.shape[0]), int(frame.shape[1])
    left = min(max(math.floor(box[0]), 0), width - 1)
    top = min(max(math.floor(box[1]), 0), height - 1)
    right = max(min(math.ceil(box[2]), width), left + 1)
    bottom = max(min(math.ceil(box[3]), height), top + 1)
    patch = frame[top:bottom, left:right].permute(2, 0, 1)[None].float()
    out = F.interpolate(patch, size=(IMGSZ, IMGSZ), mode="bilinear", align_corners=False)
    return out[0].round_().clamp_(0.0, 255.0).to(torch.uint8)


def jittered(bbox: tuple[float, float, float, float], rng: np.random.Generator, jitter: float) -> tuple[float, ...]:
    """An ltwh box as xyxy, each edge moved by up to ``jitter`` of the box's width (x) or height (y)."""
    left, top, w, h = bbox
    d = rng.uniform(-jitter, jitter, 4) * np.array([w, h, w, h])
    x1, y1, x2, y2 = left + d[0], top + d[1], left + w + d[2], top + h + d[3]
    return (x1, y1, max(x2, x1 + 1.0), max(y2, y1 + 1.0))


# -- data -------------------------------------------------------------------------------------------------


def render(
    seed: int, width: int, height: int, indices: list[int], copies: int, jitter: float, rng_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Crops of one marked scene's usable objects: ``copies`` per object and frame, each box jittered with
    probability 3/4 (else the truth box itself). Returns (K, 3, 64, 64) uint8 crops and (K,) int64 marks."""
    scene = Scene(seed, width, height, marked=True)
    rng = np.random.Generator(np.random.PCG64(rng_seed))
    crops, labels = [], []
    for index in indices:
        img, objects = scene.frame(index)
        frame = torch.from_numpy(img)
        for obj, ok in zip(objects, usable(objects, width, height)):
            if not ok:
                continue
            for _ in range(copies):
                left, top, w, h = obj.bbox
                exact = rng.random() < 0.25
                box = (left, top, left + w, top + h) if exact else jittered(obj.bbox, rng, jitter)
                crops.append(crop(frame, box))
                labels.append(MARKS.index(str(obj.mark)))
    if not crops:
        return np.zeros((0, 3, IMGSZ, IMGSZ), np.uint8), np.zeros(0, np.int64)
    return torch.stack(crops).numpy(), np.array(labels, np.int64)


def sample_task(rng: random.Random, frames: int) -> tuple[int, int, int, list[int]]:
    """A random training scene: (seed, width, height, frame indices); never a held-out seed."""
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
    indices = sorted(rng.sample(range(0, 1200, 6), frames))  # 6 frames apart at least: other poses, objects
    return seed, width, height, indices


def _render_task(task: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray]:
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


def build_dataset(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """Render ``--scenes`` scenes (in a fixed order, whatever the worker count) into (N, 3, 64, 64) uint8 crops
    and (N,) int64 marks."""
    rng = random.Random(args.seed)
    tasks = [
        (*sample_task(rng, args.frames_per_scene), args.copies, args.jitter, args.seed * 1_000_003 + k)
        for k in range(args.scenes)
    ]
    if args.workers > 0:
        pool = _start_pool(args.workers)
        try:
            parts = list(pool.imap(_render_task, tasks, chunksize=4))
        finally:
            pool.terminate()
    else:
        parts = [_render_task(t) for t in tasks]
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    counts = {m: int((y == i).sum()) for i, m in enumerate(MARKS)}
    print(f"data set: {len(y)} crops from {args.scenes} scenes {counts} ({time.perf_counter() - T0:.0f}s)", flush=True)
    return x, y


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, noise and left-right flips; uint8 (B, 3, 64, 64) -> float in [0, 1]."""
    b = images.shape[0]
    x = images.float() / 255.0
    r = torch.rand((b, 4), generator=gen)
    contrast = 0.8 + 0.4 * r[:, 0]
    brightness = 0.12 * (r[:, 1] - 0.5)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * contrast.view(-1, 1, 1, 1) + mean + brightness.view(-1, 1, 1, 1)
    noise = torch.randn(x.shape, generator=gen) * (0.03 * r[:, 2]).view(-1, 1, 1, 1)
    x = (x + noise).clamp_(0.0, 1.0)
    return torch.where((r[:, 3] < 0.5).view(-1, 1, 1, 1), x.flip(3), x)


# -- training ---------------------------------------------------------------------------------------------


def train(args: argparse.Namespace, model: MarksNet, x: torch.Tensor, y: torch.Tensor) -> MarksNet:
    """Train ``model`` in place (AdamW, warm-up + cosine, label smoothing 0.05); returns it."""
    model.train()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr
    )
    warmup = min(200, args.steps // 10)
    gen = torch.Generator().manual_seed(args.seed)
    t_start, loss_sum, hits, seen = time.perf_counter(), 0.0, 0, 0
    for step in range(args.steps):
        if step < warmup:
            lr_scale = (step + 1) / warmup
        else:
            lr_scale = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))
        for g in opt.param_groups:
            g["lr"] = args.lr * lr_scale
        idx = torch.randint(0, len(y), (args.batch,), generator=gen)
        target = y[idx]
        logits = model(augment(x[idx], gen))
        loss = F.cross_entropy(logits, target, label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += float(loss.detach())
        hits += int((logits.argmax(1) == target).sum())
        seen += len(target)
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            n = (step % args.log_every) + 1
            print(
                f"step {step + 1}/{args.steps} lr {args.lr * lr_scale:.2e} loss {loss_sum / n:.4f} "
                f"train acc {hits / seen:.4f} ({time.perf_counter() - t_start:.0f}s)",
                flush=True,
            )
            loss_sum, hits, seen = 0.0, 0, 0
    return model.eval()


# -- evaluation -------------------------------------------------------------------------------------------


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes a (K, 4) and b (M, 4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0.0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match(det_xyxy: np.ndarray, det_conf: np.ndarray, gt_xyxy: np.ndarray, iou_thr: float = 0.5) -> list[tuple]:
    """Greedy class-agnostic matching by confidence: (detection index, truth index) pairs at IoU >= ``iou_thr``."""
    if not len(det_xyxy) or not len(gt_xyxy):
        return []
    iou = _iou(det_xyxy, gt_xyxy)
    used = np.zeros(len(gt_xyxy), bool)
    pairs = []
    for i in np.argsort(-det_conf, kind="stable"):
        row = np.where(used, -1.0, iou[i])
        if row.max() >= iou_thr:
            used[row.argmax()] = True
            pairs.append((int(i), int(row.argmax())))
    return pairs


class Tally:
    """Correct / total per mark."""

    def __init__(self) -> None:
        self.correct = np.zeros(len(MARKS), np.int64)
        self.total = np.zeros(len(MARKS), np.int64)

    def add(self, pred: np.ndarray, truth: np.ndarray) -> None:
        """Count predictions against truth marks (indices into MARKS)."""
        for k in range(len(MARKS)):
            sel = truth == k
            self.total[k] += int(sel.sum())
            self.correct[k] += int((pred[sel] == k).sum())

    def merge(self, other: Tally) -> None:
        """Add another tally's counts."""
        self.correct += other.correct
        self.total += other.total

    def report(self) -> dict[str, Any]:
        """``accuracy``, ``crops`` and per-mark ``{accuracy, crops}``."""
        per = {
            m: {"accuracy": round(float(c / max(t, 1)), 4), "crops": int(t)}
            for m, c, t in zip(MARKS, self.correct, self.total)
        }
        acc = float(self.correct.sum() / max(self.total.sum(), 1))
        return {"accuracy": round(acc, 4), "crops": int(self.total.sum()), "per_mark": per}


@torch.no_grad()
def evaluate(model: Any, detector: Any, seed: int, width: int, height: int, frames: int) -> dict[str, Tally]:
    """Tallies on one marked sequence: crops of usable truth boxes, and of detector boxes matched to them."""
    scene = Scene(seed, width, height, marked=True)
    on_truth, on_detector = Tally(), Tally()
    for start in range(0, frames, 8):
        shots = [scene.frame(i) for i in range(start, min(frames, start + 8))]
        dets = detector.infer(torch.from_numpy(np.stack([img for img, _ in shots]))) if detector else [None] * 8
        for (img, objects), det in zip(shots, dets):
            frame = torch.from_numpy(img)
            ok = usable(objects, width, height)
            kept = [o for o, good in zip(objects, ok) if good]
            if not kept:
                continue
            marks = np.array([MARKS.index(str(o.mark)) for o in kept])
            boxes = [(o.bbox[0], o.bbox[1], o.bbox[0] + o.bbox[2], o.bbox[1] + o.bbox[3]) for o in kept]
            x = torch.stack([crop(frame, b) for b in boxes]).float() / 255.0
            on_truth.add(model(x).argmax(1).numpy(), marks)
            if det is None:
                continue
            pairs = match(det.xyxy.astype(np.float64), det.confidence, np.array(boxes, np.float64))
            if pairs:
                xd = torch.stack([crop(frame, tuple(det.xyxy[i].tolist())) for i, _ in pairs]).float() / 255.0
                on_detector.add(model(xd).argmax(1).numpy(), marks[[j for _, j in pairs]])
    return {"truth_boxes": on_truth, "detector_boxes": on_detector}


def evaluate_held_out(model: Any, frames: int, *, with_detector: bool = True) -> dict[str, Any]:
    """The held-out evaluation: seed 1000003 at three sizes, per sequence and all together."""
    detector = None
    if with_detector:
        from pyinfer.engine import Engine, EngineConfig
        from pyinfer.zoo import get_model

        detector = Engine.build(EngineConfig(model=str(get_model("shapes").path), device="cpu"))
    total = {"truth_boxes": Tally(), "detector_boxes": Tally()}
    out: dict[str, Any] = {"frames": frames, "sequences": {}}
    for seed, w, h in HELD_OUT:
        tallies = evaluate(model, detector, seed, w, h, frames)
        out["sequences"][f"{seed}@{w}x{h}"] = {k: t.report() for k, t in tallies.items() if t.total.sum()}
        for k, t in tallies.items():
            total[k].merge(t)
        line = " ".join(f"{k} {t.report()['accuracy']:.4f} ({t.total.sum()})" for k, t in tallies.items())
        print(f"held-out seed {seed} {w}x{h}: {line} ({time.perf_counter() - T0:.0f}s)", flush=True)
    for k, t in total.items():
        if t.total.sum():
            out[k] = t.report()
    return out


# -- export -----------------------------------------------------------------------------------------------


def export(model: MarksNet, out_dir: Path, meta_extra: dict, report: dict) -> dict:
    """Fuse, add the softmax, trace and freeze on the CPU, save TorchScript + labels; returns the metadata."""
    fused = copy.deepcopy(model).float().cpu().eval().fuse()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trace's deprecation notice
        traced = torch.jit.freeze(torch.jit.trace(Probabilities(fused).eval(), torch.zeros(1, 3, IMGSZ, IMGSZ)))
    x = torch.rand(4, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x).softmax(1), rtol=1e-4, atol=1e-5)
    meta = {
        "description": "pyinfer marks classifier: an object's mark from its crop (secondary inference)",
        "task": "classify",
        "imgsz": [IMGSZ, IMGSZ],
        "batch": 1,
        "names": {str(i): name for i, name in enumerate(MARKS)},
        "pyinfer": {
            "decoder": "classifier",
            "input": "rgb",
            "resize": "stretch",
            "letterbox": False,
            "output": "probabilities (softmax)",
            **meta_extra,
            "torch": torch.__version__,
            "eval": report,
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{NAME}.torchscript"
    torch.jit.save(traced, str(path), _extra_files={"config.txt": json.dumps(meta)})
    (out_dir / f"{NAME}.labels.txt").write_text("".join(f"{name}\n" for name in MARKS))
    print(f"wrote {path} ({path.stat().st_size} bytes)", flush=True)
    return meta


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenes", type=int, default=500, help="training scenes rendered")
    p.add_argument("--frames-per-scene", type=int, default=12)
    p.add_argument("--copies", type=int, default=2, help="crops per object and frame")
    p.add_argument("--jitter", type=float, default=0.08, help="box edge jitter, fraction of the box's size")
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
    model = MarksNet(nc=len(MARKS))
    print(f"MarksNet: {sum(q.numel() for q in model.parameters())} parameters", flush=True)
    x, y = build_dataset(args)
    torch.manual_seed(args.seed)
    model = train(args, model, x, y)
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
        "crops": len(y),
        "train_seconds": train_seconds,
        "torch": torch.__version__,
        "device": "cpu",
    }
    report: dict[str, Any] = {}
    if args.eval_frames:
        fused = copy.deepcopy(model).eval().fuse()
        report = evaluate_held_out(fused, args.eval_frames, with_detector=not args.no_detector)
    if args.export:
        export(model, args.export, {"train": info}, report)
    result = {"train": info, "eval": report, "seconds": round(time.perf_counter() - T0)}
    text = json.dumps(result, indent=1)
    if args.report:
        args.report.write_text(text + "\n")
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
