"""Train, evaluate and export pyinfer's rotated-box shapes detector (``pyinfer.models.net_obb.ShapesOBBNet``).

Data: frames of rotated scenes (``Scene(seed, w, h, rotated=True)``: ellipses, rectangles and elongated triangles
spinning as they move, truth with rotated boxes) for many seeds and random resolutions and aspect ratios,
letterboxed to 384x384 with :func:`pyinfer.ops.letterbox.letterbox` (exactly what the inference element does).
Worker processes render chunks of frames into a replay buffer on the training device, as ``train_detector.py``
does; each step draws a batch from the buffer and one fresh chunk replaces the oldest, in a fixed order.

Loss: a rotated task-aligned assignment (candidates: anchors inside the rotated box, plus the anchor of the cell
holding its centre at every level so thin boxes always get one; top-10 by ``score^0.5 * probIoU^6``), BCE on class
scores with IoU-aware targets, and ``1 - probIoU`` on boxes (the Hellinger distance between the boxes' Gaussians,
as ultralytics' OBB loss; it is blind to how a box is written: ``(w, h, a)``, ``(h, w, a + pi/2)``,
``(w, h, a + pi)``). AdamW, warm-up + cosine, weight EMA. Held-out figures are precision and recall at rotated IoU
0.5 (exact polygon IoU) on seed 1000003, which training never draws (its seeds are < 900000).

Only torch, numpy and pyinfer's own ``src`` are needed. How the committed model was made: see docs/models.md.
"""

from __future__ import annotations

import argparse
import collections
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

import numpy as np
import torch
from torch.nn import functional as F

from pyinfer.models.net_obb import ShapesOBBNet, dist2rbox
from pyinfer.ops.letterbox import letterbox
from pyinfer.ops.rotated import rotated_iou
from pyinfer.scene import ROTATED_CLASSES, Scene

IMGSZ = 384
MAX_GT = 16  # scenes show 3..10 objects; room to spare
HELD_OUT = ((1000003, 1280, 720), (1000003, 800, 600))
ASPECTS = (4 / 3, 16 / 9, 1.0, 3 / 4, 9 / 16, 21 / 9, None)  # width / height; None: a random one
NAME = "shapes-obb"
T0 = time.perf_counter()


# -- data -------------------------------------------------------------------------------------------------


def render(seed: int, width: int, height: int, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Render and letterbox frames of one rotated scene.

    Returns:
        (K, 3, 384, 384) uint8 letterboxed images and (K, MAX_GT, 6) float32 targets
        ``(class_id, cx, cy, w, h, angle)`` in model-input pixels and radians, padded with class -1.
    """
    scene = Scene(seed, width, height, rotated=True)
    frames, targets = [], np.full((len(indices), MAX_GT, 6), -1.0, np.float32)
    for k, index in enumerate(indices):
        img, objects = scene.frame(index)
        frames.append(img)
        for j, obj in enumerate(objects[:MAX_GT]):
            targets[k, j] = (obj.class_id, *obj.cxcywhr)
    x, geo = letterbox(torch.from_numpy(np.stack(frames)), IMGSZ, IMGSZ)
    valid = targets[..., 0] >= 0
    targets[..., 1] = np.where(valid, targets[..., 1] * geo.scale + geo.pad_x, -1.0)
    targets[..., 2] = np.where(valid, targets[..., 2] * geo.scale + geo.pad_y, -1.0)
    targets[..., 3:5] = np.where(valid[..., None], targets[..., 3:5] * geo.scale, -1.0)
    return x.mul_(255.0).round_().to(torch.uint8).numpy(), targets


def sample_task(rng: random.Random, chunk: int) -> tuple[int, int, int, list[int]]:
    """A random training chunk: (seed, width, height, frame indices); seeds < 900000 (held-out ones are larger)."""
    seed = rng.randrange(1, 900_000)
    aspect = rng.choice(ASPECTS) or math.exp(rng.uniform(math.log(0.5), math.log(2.4)))
    long_side = rng.randint(320, 1920)
    if aspect >= 1.0:
        width, height = long_side, round(long_side / aspect)
    else:
        width, height = round(long_side * aspect), long_side
    width, height = max(64, width // 2 * 2), max(64, height // 2 * 2)
    return seed, width, height, sorted(rng.sample(range(1200), chunk))


def _worker_init() -> None:
    torch.set_num_threads(1)


def _render_task(task: tuple[int, int, int, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    return render(*task)


class ReplayStream:
    """Renders chunks in worker processes, in submission order, into a ring buffer of images on ``device``."""

    def __init__(self, size: int, chunk: int, workers: int, seed: int, device: torch.device) -> None:
        """Start the workers and fill the buffer (blocks until full)."""
        self.rng = random.Random(seed)
        self.chunk, self.size, self.device = chunk, size, device
        self.pool = self._start_pool(workers) if workers > 0 else None
        self.pending: collections.deque = collections.deque()
        self.images = torch.empty((size, 3, IMGSZ, IMGSZ), dtype=torch.uint8, device=device)
        self.targets = torch.empty((size, MAX_GT, 6), dtype=torch.float32, device=device)
        self.head = 0
        for _ in range(2 * max(workers, 1)):
            self._submit()
        for _ in range(size // chunk):
            self.refresh()

    @staticmethod
    def _start_pool(workers: int) -> mp.pool.Pool:
        # One BLAS/OpenMP thread per worker (the scene's textures use numpy.tensordot); set in the environment the
        # spawned children read at import, then restored, so the parent keeps its own pools.
        names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        saved = {name: os.environ.get(name) for name in names}
        os.environ.update(dict.fromkeys(names, "1"))
        try:
            return mp.get_context("spawn").Pool(workers, initializer=_worker_init)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def _submit(self) -> None:
        task = sample_task(self.rng, self.chunk)
        self.pending.append(self.pool.apply_async(_render_task, (task,)) if self.pool else task)

    def refresh(self) -> None:
        """Replace the oldest chunk in the buffer with the next rendered one (waits for it)."""
        job = self.pending.popleft()
        images, targets = job.get() if self.pool else _render_task(job)
        self._submit()
        sl = slice(self.head, self.head + len(images))
        self.images[sl] = torch.from_numpy(images).to(self.device, non_blocking=True)
        self.targets[sl] = torch.from_numpy(targets).to(self.device, non_blocking=True)
        self.head = (self.head + len(images)) % self.size

    def close(self) -> None:
        """Stop the workers."""
        if self.pool:
            self.pool.terminate()


def augment(images: torch.Tensor, targets: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Photometric jitter + horizontal and vertical flips; images uint8 (B, 3, H, W) -> float in [0, 1]."""
    b, dev = images.shape[0], images.device
    x = images.float() / 255.0
    r = torch.rand((b, 5), generator=gen, device=dev)
    contrast = 0.75 + 0.5 * r[:, 0]
    brightness = 0.15 * (r[:, 1] - 0.5)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * contrast.view(-1, 1, 1, 1) + mean + brightness.view(-1, 1, 1, 1)
    noise = torch.randn(x.shape, generator=gen, device=dev) * (0.03 * r[:, 2]).view(-1, 1, 1, 1)
    x = (x + noise).clamp_(0.0, 1.0)
    t = targets.clone()
    valid = t[..., 0] >= 0
    # A mirror turns a box at angle a into one at -a (up-down) or pi - a (left-right); both kept in [0, pi).
    flip_x, flip_y = r[:, 3] < 0.5, r[:, 4] < 0.5
    x = torch.where(flip_x.view(-1, 1, 1, 1), x.flip(3), x)
    x = torch.where(flip_y.view(-1, 1, 1, 1), x.flip(2), x)
    fx, fy = flip_x.view(-1, 1) & valid, flip_y.view(-1, 1) & valid
    t[..., 1] = torch.where(fx, IMGSZ - t[..., 1], t[..., 1])
    t[..., 2] = torch.where(fy, IMGSZ - t[..., 2], t[..., 2])
    t[..., 5] = torch.where(fx ^ fy, torch.remainder(-t[..., 5], math.pi), t[..., 5])
    return x, t


# -- probIoU, assignment and loss -------------------------------------------------------------------------


def _covariance(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entries (a, b, c) of the covariance [[a, c], [c, b]] of the uniform distribution over each rotated box."""
    var_w, var_h = boxes[..., 2].square() / 12.0, boxes[..., 3].square() / 12.0
    cos, sin = boxes[..., 4].cos(), boxes[..., 4].sin()
    return (
        var_w * cos.square() + var_h * sin.square(),
        var_w * sin.square() + var_h * cos.square(),
        (var_w - var_h) * cos * sin,
    )


def probiou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``1 - Hellinger distance`` between the Gaussians of rotated boxes (..., 5) ``cx, cy, w, h, angle``.

    The Bhattacharyya distance of two Gaussians is ``d' S^-1 d / 8 + ln(det S / sqrt(det S1 det S2)) / 2`` with
    ``S = (S1 + S2) / 2``; probIoU is ``1 - sqrt(1 - exp(-BD))``. Broadcasts over the leading dimensions.
    """
    a1, b1, c1 = _covariance(a)
    a2, b2, c2 = _covariance(b)
    sa, sb, sc = a1 + a2, b1 + b2, c1 + c2  # 2 S
    det = sa * sb - sc.square()
    dx, dy = a[..., 0] - b[..., 0], a[..., 1] - b[..., 1]
    mahal = (sb * dx.square() + sa * dy.square() - 2.0 * sc * dx * dy) / (det + eps) / 4.0
    det1 = (a1 * b1 - c1.square()).clamp(min=0.0)
    det2 = (a2 * b2 - c2.square()).clamp(min=0.0)
    shape = 0.5 * torch.log(det / (4.0 * (det1 * det2).sqrt() + eps) + eps)
    bd = (mahal + shape).clamp(eps, 100.0)
    return 1.0 - (1.0 - torch.exp(-bd) + eps).sqrt()


@torch.no_grad()
def assign(
    scores: torch.Tensor,
    boxes: torch.Tensor,
    anchors: torch.Tensor,
    strides: torch.Tensor,
    targets: torch.Tensor,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rotated task-aligned assignment.

    Args:
        scores: (B, N, nc) predicted class probabilities.
        boxes: (B, N, 5) predicted rotated boxes.
        anchors: (N, 2) anchor centres.
        strides: (N, 1) anchor strides.
        targets: (B, M, 6) ``(class_id, cx, cy, w, h, angle)``, class -1 for padding.

    Returns:
        fg (B, N) bool, target boxes (B, N, 5), target scores (B, N, nc) (one-hot times normalised alignment).
    """
    nc = scores.shape[-1]
    gt_cls, gt_box = targets[..., 0].long(), targets[..., 1:]
    valid = gt_cls >= 0  # (B, M)
    d = anchors[None, None] - gt_box[..., None, :2]  # (B, M, N, 2)
    cos, sin = gt_box[..., 4:5].cos(), gt_box[..., 4:5].sin()  # (B, M, 1)
    du = d[..., 0] * cos + d[..., 1] * sin
    dv = d[..., 1] * cos - d[..., 0] * sin
    inside = (du.abs() <= gt_box[..., 2:3] / 2) & (dv.abs() <= gt_box[..., 3:4] / 2)
    # The cell holding the centre at every level is a candidate too: a thin box may cover no anchor centre.
    centre_cell = (d.abs() < strides.view(1, 1, -1, 1) / 2).all(-1)
    candidate = (inside | centre_cell) & valid[..., None]  # (B, M, N)
    overlaps = probiou(gt_box[:, :, None], boxes[:, None]).clamp(min=0.0) * candidate
    cls_scores = scores.gather(2, gt_cls.clamp(min=0)[:, None, :].expand(-1, scores.shape[1], -1)).transpose(1, 2)
    align = cls_scores.pow(alpha) * overlaps.pow(beta) * candidate
    top = align.topk(topk, dim=2).indices  # (B, M, k)
    mask = torch.zeros_like(candidate).scatter_(2, top, True) & candidate
    # An anchor claimed by several objects goes to the one it overlaps most.
    multi = mask.sum(1, keepdim=True) > 1
    best = F.one_hot(overlaps.argmax(1), mask.shape[1]).transpose(1, 2).bool()
    mask = torch.where(multi, best & candidate, mask)
    fg = mask.any(1)  # (B, N)
    idx = mask.float().argmax(1)  # (B, N)
    t_box = gt_box.gather(1, idx[..., None].expand(-1, -1, 5))
    t_cls = gt_cls.gather(1, idx)
    align = align * mask
    norm = align * overlaps.amax(2, keepdim=True) / (align.amax(2, keepdim=True) + 1e-9)
    norm = (norm * mask).amax(1)  # (B, N)
    t_scores = F.one_hot(t_cls.clamp(min=0), nc).float() * (norm * fg)[..., None]
    return fg, t_box, t_scores


def detection_loss(
    model: ShapesOBBNet, x: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss of one batch and its parts."""
    ltrb, logits, angle, anchors, strides = model.forward_train(x)
    boxes = torch.cat((dist2rbox(ltrb, angle, anchors), angle), -1)  # (B, N, 5)
    fg, t_box, t_scores = assign(logits.detach().sigmoid(), boxes.detach(), anchors, strides, targets)
    norm = t_scores.sum().clamp(min=1.0)
    loss_cls = F.binary_cross_entropy_with_logits(logits, t_scores, reduction="sum") / norm
    if fg.any():
        weight = t_scores.sum(-1)[fg]
        loss_box = ((1.0 - probiou(boxes[fg], t_box[fg])) * weight).sum() / norm
    else:
        loss_box = logits.sum() * 0.0
    total = 7.5 * loss_box + 0.5 * loss_cls
    return total, {"box": loss_box.detach(), "cls": loss_cls.detach()}  # tensors: no device sync per step


# -- evaluation -------------------------------------------------------------------------------------------


def decode(out: torch.Tensor, conf: float = 0.25, iou: float = 0.45, max_wh: float = 7680.0) -> list[torch.Tensor]:
    """(B, 4 + nc + 1, N) export-layout output -> per image (K, 7) ``cx, cy, w, h, angle, score, class``.

    Class-aware rotated NMS by probIoU, as ultralytics' ``nms_rotated`` (boxes of other classes are moved apart
    by ``class * max_wh`` first).
    """
    results = []
    nc = out.shape[1] - 5
    for pred in out.float().transpose(1, 2):  # (N, 4 + nc + 1)
        score, cls = pred[:, 4 : 4 + nc].max(1)
        keep = score > conf
        rbox = torch.cat((pred[keep, :4], pred[keep, -1:]), 1)
        score, cls = score[keep], cls[keep]
        order = score.argsort(descending=True)
        rbox, score, cls = rbox[order], score[order], cls[order]
        shifted = torch.cat((rbox[:, :2] + cls[:, None].float() * max_wh, rbox[:, 2:]), 1)
        ious = probiou(shifted[:, None], shifted[None]).triu_(1)
        k = ious.amax(0) < iou if len(rbox) else torch.zeros(0, dtype=torch.bool, device=rbox.device)
        results.append(torch.cat((rbox[k], score[k, None], cls[k, None].float()), 1))
    return results


def match(pred: np.ndarray, gt: np.ndarray, iou_thr: float = 0.5) -> list[float]:
    """Greedy same-class matching by confidence; pred (K, 7) as :func:`decode`, gt (M, 6) ``class, cxcywhr``.

    Returns:
        the rotated IoUs of the matched pairs.
    """
    iou = rotated_iou(pred[:, :5], gt[:, 1:])
    iou[pred[:, 6][:, None] != gt[:, 0][None, :]] = -1.0
    used = np.zeros(len(gt), bool)
    ious = []
    for i in np.argsort(-pred[:, 5], kind="stable"):
        row = np.where(used, -1.0, iou[i])
        if len(row) and row.max() >= iou_thr:
            used[row.argmax()] = True
            ious.append(float(row.max()))
    return ious


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, seed: int, width: int, height: int, frames: int, device: torch.device, batch: int = 16
) -> dict[str, float]:
    """Precision, recall and mean rotated IoU at rotated IoU 0.5 (conf 0.25, NMS 0.45) on a rotated sequence."""
    scene = Scene(seed, width, height, rotated=True)
    n_pred = n_gt = 0
    ious: list[float] = []
    for start in range(0, frames, batch):
        imgs, truths = zip(*(scene.frame(i) for i in range(start, min(frames, start + batch))))
        x, geo = letterbox(torch.from_numpy(np.stack(imgs)).to(device), IMGSZ, IMGSZ)
        for det, objects in zip(decode(model(x)), truths):
            det = det.double().cpu().numpy()
            det[:, 0] = (det[:, 0] - geo.pad_x) / geo.scale
            det[:, 1] = (det[:, 1] - geo.pad_y) / geo.scale
            det[:, 2:4] /= geo.scale
            gt = np.array([(o.class_id, *o.cxcywhr) for o in objects], np.float64).reshape(-1, 6)
            ious += match(det, gt)
            n_pred, n_gt = n_pred + len(det), n_gt + len(gt)
    return {
        "precision": len(ious) / max(n_pred, 1),
        "recall": len(ious) / max(n_gt, 1),
        "mean_iou": float(np.mean(ious or [0.0])),
        "frames": frames,
        "objects": n_gt,
        "detections": n_pred,
    }


def evaluate_held_out(model: torch.nn.Module, device: torch.device, frames: int) -> dict[str, dict[str, float]]:
    """The held-out evaluation recorded in the export metadata: seed 1000003 at 1280x720 and 800x600."""
    out = {}
    for seed, w, h in HELD_OUT:
        out[f"{seed}@{w}x{h}"] = r = evaluate(model, seed, w, h, frames, device)
        print(
            f"held-out seed {seed} {w}x{h}: precision {r['precision']:.4f} recall {r['recall']:.4f} "
            f"mIoU {r['mean_iou']:.4f} ({r['objects']} objects, {r['detections']} detections)",
            flush=True,
        )
    return out


# -- export -----------------------------------------------------------------------------------------------


def export(model: ShapesOBBNet, out_dir: Path, meta_extra: dict, eval_frames: int) -> dict:
    """Fuse, trace on CPU, evaluate the traced module, save TorchScript + labels; returns the metadata."""
    model = copy.deepcopy(model).float().cpu().eval().fuse()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trace's deprecation notice; anchors are constants at a fixed input size
        traced = torch.jit.freeze(torch.jit.trace(model, torch.zeros(1, 3, IMGSZ, IMGSZ)).eval())
    meta = {
        "description": "pyinfer rotated shapes detector",
        "task": "obb",
        "imgsz": [IMGSZ, IMGSZ],
        "stride": 32,
        "batch": 1,
        "names": {str(i): name for i, name in enumerate(ROTATED_CLASSES)},
        "pyinfer": {
            "decoder": "yolo-obb",
            "input": "rgb",
            "letterbox": True,
            "angle": "radians, clockwise on screen (y down), last row, in [-pi/4, 3pi/4) before regularisation",
            **meta_extra,
            "torch": torch.__version__,
            "eval": evaluate_held_out(traced, torch.device("cpu"), eval_frames) if eval_frames else {},
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{NAME}.torchscript"
    torch.jit.save(traced, str(path), _extra_files={"config.txt": json.dumps(meta)})
    (out_dir / f"{NAME}.labels.txt").write_text("".join(f"{name}\n" for name in ROTATED_CLASSES))
    print(f"wrote {path} ({path.stat().st_size} bytes)", flush=True)
    return meta


# -- training ---------------------------------------------------------------------------------------------


def train(args: argparse.Namespace, model: ShapesOBBNet, device: torch.device) -> ShapesOBBNet:
    """Train ``model`` in place; returns the EMA copy (the weights to keep)."""
    stream = ReplayStream(args.buffer, args.chunk, args.workers, args.seed, device)
    print(f"buffer filled ({args.buffer} images) after {time.perf_counter() - T0:.1f}s", flush=True)
    model.to(device).train()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    ema_float = [v for v in ema.state_dict().values() if v.dtype.is_floating_point]
    ema_other = [v for v in ema.state_dict().values() if not v.dtype.is_floating_point]
    model_float = [v for v in model.state_dict().values() if v.dtype.is_floating_point]
    model_other = [v for v in model.state_dict().values() if not v.dtype.is_floating_point]
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.937, 0.999),
    )
    warmup = min(300, args.steps // 10)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    stats: collections.defaultdict[str, torch.Tensor | float] = collections.defaultdict(float)
    t_start = time.perf_counter()
    total, step = args.steps, 0
    while step < total:
        if step % args.refresh_every == 0:
            stream.refresh()
        if step < warmup:
            lr_scale = (step + 1) / warmup
        else:
            lr_scale = 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
        for g in opt.param_groups:
            g["lr"] = args.lr * lr_scale
        idx = torch.randint(0, args.buffer, (args.batch,), generator=gen, device=device)
        x, t = augment(stream.images[idx], stream.targets[idx], gen)
        with autocast:
            loss, parts = detection_loss(model, x.contiguous(memory_format=torch.channels_last), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        with torch.no_grad():  # ultralytics' ModelEMA: decay ramps up to 0.9999; foreach: a few kernels, not 800
            d = 0.9999 * (1 - math.exp(-(step + 1) / 2000))
            torch._foreach_mul_(ema_float, d)
            torch._foreach_add_(ema_float, model_float, alpha=1 - d)
            for pe, pm in zip(ema_other, model_other):
                pe.copy_(pm)
        for k, v in parts.items():
            stats[k] += v
        step += 1
        if args.time_budget and step == args.budget_after:
            # Fit the schedule to the budget from the measured rate; rerun with --steps <total> to reproduce.
            rate = (time.perf_counter() - t_start) / step
            left = args.time_budget - (time.perf_counter() - T0)
            total = max(step, min(args.steps, step + int(left / rate) // 100 * 100))
            print(f"{rate * 1000:.0f} ms/step: training for {total} steps", flush=True)
        if step % args.log_every == 0 or step == total:
            n = args.log_every if step % args.log_every == 0 else step % args.log_every
            msg = " ".join(f"{k} {float(v) / n:.4f}" for k, v in stats.items())
            print(
                f"step {step}/{total} lr {args.lr * lr_scale:.2e} {msg} ({time.perf_counter() - t_start:.0f}s)",
                flush=True,
            )
            stats.clear()
        if args.time_limit and time.perf_counter() - T0 > args.time_limit:
            print(f"time limit reached at step {step}: stopping early (run not reproducible)", flush=True)
            break
    stream.close()
    args.steps_done = step
    return ema


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("out"), help=f"where {NAME}.pt and {NAME}.json go")
    p.add_argument("--weights", type=Path, help=f"start from this state_dict ({NAME}.pt)")
    p.add_argument("--export", type=Path, help=f"write {NAME}.torchscript + {NAME}.labels.txt here")
    p.add_argument("--workers", type=int, default=max(1, (mp.cpu_count() or 2) - 1))
    p.add_argument("--buffer", type=int, default=4096, help="replay buffer size, images")
    p.add_argument("--chunk", type=int, default=16, help="frames rendered per scene per task")
    p.add_argument("--refresh-every", type=int, default=1, help="steps between fresh chunks")
    p.add_argument("--eval-frames", type=int, default=200)
    p.add_argument("--time-limit", type=float, default=0.0, help="seconds; stop training early past this")
    p.add_argument(
        "--time-budget",
        type=float,
        default=0.0,
        help="seconds from start; after --budget-after steps, cut --steps to what fits (cosine schedule included)",
    )
    p.add_argument("--budget-after", type=int, default=200, help="steps timed before --time-budget applies")
    p.add_argument("--log-every", type=int, default=100)
    args = p.parse_args(argv)

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = ShapesOBBNet(nc=len(ROTATED_CLASSES))
    print(f"ShapesOBBNet: {sum(q.numel() for q in model.parameters())} parameters", flush=True)
    if args.weights:
        model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    info: dict = {"seed": args.seed, "steps": args.steps}
    if args.steps > 0:
        model = train(args, model, device)
        args.out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
        torch.save(state, args.out / f"{NAME}.pt")
        info = {
            "seed": args.seed,
            "steps": args.steps_done,
            "batch": args.batch,
            "lr": args.lr,
            "buffer": args.buffer,
            "train_seconds": round(time.perf_counter() - T0),
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        }
        print(f"saved weights to {args.out} after {time.perf_counter() - T0:.0f}s", flush=True)
    model.to(device).eval()
    if args.eval_frames and args.steps > 0:
        info["eval"] = evaluate_held_out(model, device, args.eval_frames)
    if args.steps > 0:
        (args.out / f"{NAME}.json").write_text(json.dumps(info, indent=1))
    if args.export:
        info_path = (args.weights.parent if args.steps == 0 and args.weights else args.out) / f"{NAME}.json"
        if info_path.exists():
            info = json.loads(info_path.read_text())
        info.pop("eval", None)  # the export re-evaluates the traced module itself
        meta = export(model, args.export, {"train": info}, args.eval_frames)
        print(json.dumps(meta, indent=1), flush=True)
    print(f"done after {time.perf_counter() - T0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
