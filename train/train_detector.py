"""Train, evaluate and export pyinfer's embedded shapes detector (``pyinfer.models.net.ShapesNet``).

Data: frames of :class:`pyinfer.scene.Scene` for many seeds and random resolutions and aspect ratios, letterboxed
to 384x384 with :func:`pyinfer.ops.letterbox.letterbox` (exactly what the inference element does). Worker processes
render chunks of frames into a replay buffer on the training device; each step draws a batch from the buffer and
one fresh chunk replaces the oldest, in a fixed order, so a run is reproducible from its arguments.

Loss: YOLOv8's task-aligned assignment (centre-inside candidates, top-10 by ``score^0.5 * IoU^6``), BCE on class
scores with IoU-aware targets, CIoU + L1 (in strides) on boxes. AdamW, warm-up + cosine, weight EMA.

How the committed model was made (from ``train/``; an H200 + 15 render workers, then here with the runtime's torch)::

    PYTHONPATH=../src python3 train_detector.py --device cuda --steps 1400 --batch 128 --buffer 8192 --chunk 16 \
        --out /tmp/run                      # the run used --steps 20000 --time-budget 420, which settled on 1400
    PYTHONPATH=../src python3 train_detector.py --weights /tmp/run/shapes.pt --steps 0 --export ../src/pyinfer/models
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
import torchvision
from torch.nn import functional as F

from pyinfer.models.net import ShapesNet
from pyinfer.ops.letterbox import letterbox
from pyinfer.scene import CLASSES, Scene

IMGSZ = 384
MAX_GT = 16  # scenes show 3..10 objects; room to spare
HELD_OUT_SEEDS = frozenset({1000003, 424242})
# Training aspect ratios (width / height): 4:3, 16:9, square, portrait, ultra-wide, and a random one per chunk.
ASPECTS = (4 / 3, 16 / 9, 1.0, 3 / 4, 9 / 16, 21 / 9, None)


# -- data -------------------------------------------------------------------------------------------------


def render(seed: int, width: int, height: int, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Render and letterbox frames of one scene.

    Returns:
        (K, 3, 384, 384) uint8 letterboxed images and (K, MAX_GT, 5) float32 targets
        ``(class_id, x1, y1, x2, y2)`` in model-input pixels, padded with class -1.
    """
    scene = Scene(seed, width, height)
    frames, targets = [], np.full((len(indices), MAX_GT, 5), -1.0, np.float32)
    for k, index in enumerate(indices):
        img, objects = scene.frame(index)
        frames.append(img)
        for j, obj in enumerate(objects[:MAX_GT]):
            left, top, w, h = obj.bbox
            targets[k, j] = (obj.class_id, left, top, left + w, top + h)
    x, geo = letterbox(torch.from_numpy(np.stack(frames)), IMGSZ, IMGSZ)
    valid = targets[..., 0] >= 0
    targets[..., 1:5:2] = np.where(valid[..., None], targets[..., 1:5:2] * geo.scale + geo.pad_x, -1.0)
    targets[..., 2:5:2] = np.where(valid[..., None], targets[..., 2:5:2] * geo.scale + geo.pad_y, -1.0)
    return x.mul_(255.0).round_().to(torch.uint8).numpy(), targets


def sample_task(rng: random.Random, chunk: int) -> tuple[int, int, int, list[int]]:
    """A random training chunk: (seed, width, height, frame indices); never a held-out seed."""
    seed = rng.randrange(1, 900_000)
    while seed in HELD_OUT_SEEDS:
        seed = rng.randrange(1, 900_000)
    aspect = rng.choice(ASPECTS) or math.exp(rng.uniform(math.log(0.5), math.log(2.4)))
    long_side = rng.randint(320, 1920)
    if aspect >= 1.0:
        width, height = long_side, round(long_side / aspect)
    else:
        width, height = round(long_side * aspect), long_side
    width, height = max(64, width // 2 * 2), max(64, height // 2 * 2)
    indices = sorted(rng.sample(range(1200), chunk))
    return seed, width, height, indices


def _worker_init() -> None:
    torch.set_num_threads(1)


def _start_pool(workers: int) -> mp.pool.Pool:
    """Spawn render workers with one BLAS/OpenMP thread each (the scene's textures use numpy.tensordot)."""
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


def _render_task(task: tuple[int, int, int, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    return render(*task)


class ReplayStream:
    """Renders chunks in worker processes, in submission order, into a ring buffer of images on ``device``."""

    def __init__(self, size: int, chunk: int, workers: int, seed: int, device: torch.device) -> None:
        """Start the workers and fill the buffer (blocks until full)."""
        self.rng = random.Random(seed)
        self.chunk, self.size, self.device = chunk, size, device
        self.pool = _start_pool(workers) if workers > 0 else None
        self.pending: collections.deque = collections.deque()
        self.images = torch.empty((size, 3, IMGSZ, IMGSZ), dtype=torch.uint8, device=device)
        self.targets = torch.empty((size, MAX_GT, 5), dtype=torch.float32, device=device)
        self.head = 0
        for _ in range(2 * max(workers, 1)):
            self._submit()
        for _ in range(size // chunk):
            self.refresh()

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
    """Light photometric augmentation + horizontal flip; images uint8 (B, 3, H, W) -> float in [0, 1]."""
    b, dev = images.shape[0], images.device
    x = images.float() / 255.0
    r = torch.rand((b, 4), generator=gen, device=dev)
    contrast = 0.75 + 0.5 * r[:, 0]
    brightness = 0.15 * (r[:, 1] - 0.5)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * contrast.view(-1, 1, 1, 1) + mean + brightness.view(-1, 1, 1, 1)
    noise = torch.randn(x.shape, generator=gen, device=dev) * (0.03 * r[:, 2]).view(-1, 1, 1, 1)
    x = (x + noise).clamp_(0.0, 1.0)
    flip = r[:, 3] < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    t = targets.clone()
    fx = flip.view(-1, 1) & (t[..., 0] >= 0)
    x1, x2 = t[..., 1].clone(), t[..., 3].clone()
    t[..., 1] = torch.where(fx, IMGSZ - x2, x1)
    t[..., 3] = torch.where(fx, IMGSZ - x1, x2)
    return x, t


# -- assignment and loss ----------------------------------------------------------------------------------


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of (B, M, 4) against (B, N, 4) xyxy boxes -> (B, M, N)."""
    a, b = a[:, :, None], b[:, None]
    lt, rb = torch.maximum(a[..., :2], b[..., :2]), torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a + area_b - inter + 1e-9)


@torch.no_grad()
def assign(
    scores: torch.Tensor,
    boxes: torch.Tensor,
    anchors: torch.Tensor,
    targets: torch.Tensor,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Task-aligned assignment (YOLOv8's TaskAlignedAssigner).

    Args:
        scores: (B, N, nc) predicted class probabilities.
        boxes: (B, N, 4) predicted xyxy boxes.
        anchors: (N, 2) anchor centres.
        targets: (B, M, 5) ``(class_id, x1, y1, x2, y2)``, class -1 for padding.

    Returns:
        fg (B, N) bool, target boxes (B, N, 4), target scores (B, N, nc) (one-hot times normalised alignment).
    """
    nc = scores.shape[-1]
    gt_cls, gt_box = targets[..., 0].long(), targets[..., 1:]
    valid = gt_cls >= 0  # (B, M)
    ax, ay = anchors[:, 0], anchors[:, 1]
    inside = (
        (ax > gt_box[..., 0:1])
        & (ax < gt_box[..., 2:3])
        & (ay > gt_box[..., 1:2])
        & (ay < gt_box[..., 3:4])
        & valid[..., None]
    )  # (B, M, N)
    overlaps = pairwise_iou(gt_box, boxes) * inside
    cls_scores = scores.gather(2, gt_cls.clamp(min=0)[:, None, :].expand(-1, scores.shape[1], -1)).transpose(1, 2)
    align = cls_scores.pow(alpha) * overlaps.pow(beta) * inside
    top = align.topk(topk, dim=2).indices  # (B, M, k)
    mask = torch.zeros_like(inside).scatter_(2, top, True) & inside
    # An anchor claimed by several objects goes to the one it overlaps most.
    multi = mask.sum(1, keepdim=True) > 1
    best = F.one_hot(overlaps.argmax(1), mask.shape[1]).transpose(1, 2).bool()
    mask = torch.where(multi, best & inside, mask)
    fg = mask.any(1)  # (B, N)
    idx = mask.float().argmax(1)  # (B, N)
    t_box = gt_box.gather(1, idx[..., None].expand(-1, -1, 4))
    t_cls = gt_cls.gather(1, idx)
    align = align * mask
    norm = align * overlaps.amax(2, keepdim=True) / (align.amax(2, keepdim=True) + 1e-9)
    norm = (norm * mask).amax(1)  # (B, N)
    t_scores = F.one_hot(t_cls.clamp(min=0), nc).float() * (norm * fg)[..., None]
    return fg, t_box, t_scores


def detection_loss(model: ShapesNet, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss of one batch and its parts."""
    ltrb, logits, anchors, strides = model.forward_train(x)
    boxes = torch.cat((anchors - ltrb[..., :2], anchors + ltrb[..., 2:]), -1)
    fg, t_box, t_scores = assign(logits.detach().sigmoid(), boxes.detach(), anchors, targets)
    norm = t_scores.sum().clamp(min=1.0)
    loss_cls = F.binary_cross_entropy_with_logits(logits, t_scores, reduction="sum") / norm
    if fg.any():
        weight = t_scores.sum(-1)[fg]
        ciou = torchvision.ops.complete_box_iou_loss(boxes[fg], t_box[fg], reduction="none")
        loss_box = (ciou * weight).sum() / norm
        a, s = anchors.expand_as(boxes[..., :2])[fg], strides.expand_as(ltrb[..., :1])[fg]
        t_ltrb = torch.cat((a - t_box[fg][:, :2], t_box[fg][:, 2:] - a), -1) / s
        loss_l1 = ((ltrb[fg] / s - t_ltrb).abs().sum(-1) * weight).sum() / norm
    else:
        loss_box = loss_l1 = logits.sum() * 0.0
    total = 7.5 * loss_box + 0.5 * loss_cls + 0.5 * loss_l1
    return total, {"box": loss_box.item(), "cls": loss_cls.item(), "l1": loss_l1.item()}


# -- evaluation -------------------------------------------------------------------------------------------


def decode(out: torch.Tensor, conf: float = 0.25, iou: float = 0.45) -> list[torch.Tensor]:
    """(B, 4 + nc, N) export-layout output -> per image (K, 6) ``x1, y1, x2, y2, score, class`` (model pixels)."""
    results = []
    for pred in out.float().transpose(1, 2):  # (N, 4 + nc)
        score, cls = pred[:, 4:].max(1)
        keep = score > conf
        cxcywh, score, cls = pred[keep, :4], score[keep], cls[keep]
        xyxy = torchvision.ops.box_convert(cxcywh, "cxcywh", "xyxy")
        k = torchvision.ops.batched_nms(xyxy, score, cls, iou)
        results.append(torch.cat((xyxy[k], score[k, None], cls[k, None].float()), 1))
    return results


def match(pred: np.ndarray, gt: np.ndarray, iou_thr: float = 0.5) -> tuple[int, list[float]]:
    """Greedy same-class matching by confidence; pred (K, 6) and gt (M, 5) ``(class, x1, y1, x2, y2)``.

    Returns:
        true positives and the IoUs of the matched pairs.
    """
    used = np.zeros(len(gt), bool)
    ious = []
    for p in pred[np.argsort(-pred[:, 4])]:
        best, best_j = iou_thr, -1
        for j, g in enumerate(gt):
            if used[j] or int(g[0]) != int(p[5]):
                continue
            iw = min(p[2], g[3]) - max(p[0], g[1])
            ih = min(p[3], g[4]) - max(p[1], g[2])
            inter = max(iw, 0.0) * max(ih, 0.0)
            union = (p[2] - p[0]) * (p[3] - p[1]) + (g[3] - g[1]) * (g[4] - g[2]) - inter
            v = inter / union if union > 0 else 0.0
            if v >= best:
                best, best_j = v, j
        if best_j >= 0:
            used[best_j] = True
            ious.append(best)
    return len(ious), ious


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    seed: int,
    width: int,
    height: int,
    frames: int,
    device: torch.device,
    batch: int = 16,
) -> dict[str, float]:
    """Precision, recall and mean IoU at IoU 0.5 (conf 0.25, class-aware NMS 0.45) on a held-out sequence."""
    scene = Scene(seed, width, height)
    tp = n_pred = n_gt = 0
    ious: list[float] = []
    for start in range(0, frames, batch):
        imgs, truths = zip(*(scene.frame(i) for i in range(start, min(frames, start + batch))))
        x, geo = letterbox(torch.from_numpy(np.stack(imgs)).to(device), IMGSZ, IMGSZ)
        for det, objects in zip(decode(model(x)), truths):
            det[:, :4] = geo.to_frame(det[:, :4])
            gt = np.array(
                [(o.class_id, o.bbox[0], o.bbox[1], o.bbox[0] + o.bbox[2], o.bbox[1] + o.bbox[3]) for o in objects],
                np.float64,
            ).reshape(-1, 5)
            t, v = match(det.cpu().double().numpy(), gt)
            tp, n_pred, n_gt = tp + t, n_pred + len(det), n_gt + len(gt)
            ious += v
    return {
        "precision": tp / max(n_pred, 1),
        "recall": tp / max(n_gt, 1),
        "mean_iou": float(np.mean(ious or [0.0])),
        "frames": frames,
        "objects": n_gt,
        "detections": n_pred,
    }


def evaluate_held_out(model: torch.nn.Module, device: torch.device, frames: int) -> dict[str, dict[str, float]]:
    """The held-out evaluation recorded in the export metadata: seed 1000003 at 1280x720 and 800x600."""
    out = {}
    for w, h in ((1280, 720), (800, 600)):
        out[f"1000003@{w}x{h}"] = r = evaluate(model, 1000003, w, h, frames, device)
        print(
            f"held-out seed 1000003 {w}x{h}: precision {r['precision']:.4f} recall {r['recall']:.4f} "
            f"mIoU {r['mean_iou']:.4f} ({r['objects']} objects, {r['detections']} detections)",
            flush=True,
        )
    return out


# -- export -----------------------------------------------------------------------------------------------


def export(model: ShapesNet, out_dir: Path, meta_extra: dict, eval_frames: int) -> dict:
    """Fuse, trace on CPU, evaluate the traced module, save TorchScript + labels; returns the metadata."""
    model = copy.deepcopy(model).float().cpu().eval().fuse()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trace's deprecation notice; anchors are constants at a fixed input size
        traced = torch.jit.freeze(torch.jit.trace(model, torch.zeros(1, 3, IMGSZ, IMGSZ)).eval())
    meta = {
        "description": "pyinfer shapes detector",
        "task": "detect",
        "imgsz": [IMGSZ, IMGSZ],
        "stride": 32,
        "batch": 1,
        "names": {str(i): name for i, name in enumerate(CLASSES)},
        "pyinfer": {
            "decoder": "yolov8",
            "input": "rgb",
            "letterbox": True,
            **meta_extra,
            "torch": torch.__version__,
            "eval": evaluate_held_out(traced, torch.device("cpu"), eval_frames),
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(out_dir / "shapes.torchscript"), _extra_files={"config.txt": json.dumps(meta)})
    (out_dir / "shapes.labels.txt").write_text("".join(f"{name}\n" for name in CLASSES))
    print(f"wrote {out_dir / 'shapes.torchscript'} ({(out_dir / 'shapes.torchscript').stat().st_size} bytes)")
    return meta


# -- training ---------------------------------------------------------------------------------------------


def train(args: argparse.Namespace, model: ShapesNet, device: torch.device) -> ShapesNet:
    """Train ``model`` in place; returns the EMA copy (the weights to keep)."""
    stream = ReplayStream(args.buffer, args.chunk, args.workers, args.seed, device)
    print(f"buffer filled ({args.buffer} images) after {time.perf_counter() - T0:.1f}s", flush=True)
    model.to(device).train()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
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
    stats: collections.defaultdict[str, float] = collections.defaultdict(float)
    t_start = time.perf_counter()
    total = args.steps
    step = 0
    while step < total:
        if step % args.refresh_every == 0:
            stream.refresh()
        lr_scale = (
            (step + 1) / warmup
            if step < warmup
            else (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))
        )
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
        with torch.no_grad():  # ultralytics' ModelEMA: decay ramps up to 0.9999
            d = 0.9999 * (1 - math.exp(-(step + 1) / 2000))
            for pe, pm in zip(ema.state_dict().values(), model.state_dict().values()):
                if pe.dtype.is_floating_point:
                    pe.mul_(d).add_(pm.detach(), alpha=1 - d)
                else:
                    pe.copy_(pm)
        for k, v in parts.items():
            stats[k] += v
        step += 1
        if args.time_budget and step == 200:
            # Fit the schedule to the budget from the measured rate; rerun with --steps <total> to reproduce.
            rate = (time.perf_counter() - t_start) / step
            left = args.time_budget - (time.perf_counter() - T0)
            total = min(args.steps, step + int(left / rate) // 100 * 100)
            print(f"{rate * 1000:.0f} ms/step: training for {total} steps", flush=True)
        if step % args.log_every == 0 or step == total:
            n = args.log_every if step % args.log_every == 0 else step % args.log_every
            msg = " ".join(f"{k} {v / n:.4f}" for k, v in stats.items())
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
    p.add_argument("--out", type=Path, default=Path("out"), help="where shapes.pt (+ .safetensors) go")
    p.add_argument("--weights", type=Path, help="start from this state_dict (shapes.pt)")
    p.add_argument("--export", type=Path, help="write shapes.torchscript + shapes.labels.txt here")
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
        help="seconds from start; after 200 steps, cut --steps to what fits (cosine schedule included)",
    )
    p.add_argument("--log-every", type=int, default=100)
    args = p.parse_args(argv)

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = ShapesNet()
    print(f"ShapesNet: {sum(q.numel() for q in model.parameters())} parameters", flush=True)
    if args.weights:
        model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    if args.steps > 0:
        model = train(args, model, device)
        args.out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
        torch.save(state, args.out / "shapes.pt")
        try:
            from safetensors.torch import save_file
        except ImportError:
            print("safetensors not installed: skipping shapes.safetensors")
        else:
            save_file(state, str(args.out / "shapes.safetensors"))
        info = {
            "seed": args.seed,
            "steps": args.steps_done,
            "batch": args.batch,
            "lr": args.lr,
            "train_seconds": round(time.perf_counter() - T0),
            "torch": torch.__version__,
        }
        (args.out / "shapes.json").write_text(json.dumps(info))
        print(f"saved weights to {args.out} after {time.perf_counter() - T0:.0f}s", flush=True)
    model.to(device).eval()
    if args.eval_frames:
        evaluate_held_out(model, device, args.eval_frames)
    if args.export:
        info_path = (args.weights.parent if args.steps == 0 and args.weights else args.out) / "shapes.json"
        info = json.loads(info_path.read_text()) if info_path.exists() else {"seed": args.seed, "steps": args.steps}
        meta = export(
            model, args.export, {"train": info, "seed": info["seed"], "steps": info["steps"]}, args.eval_frames
        )
        print(json.dumps(meta, indent=1))
    return 0


T0 = time.perf_counter()

if __name__ == "__main__":
    sys.exit(main())
