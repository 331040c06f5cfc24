"""Train, evaluate and export pyinfer's embedded instance segmentation model (``pyinfer.models.net_seg``).

``shapes-seg`` is the embedded ``shapes`` detector with a YOLOv8-seg head: prototypes at stride 4 and per anchor 32
mask coefficients, exported in ultralytics' YOLOv8-seg layout (``pyinfer.decoders.yolo_seg``). The detection part
is the committed ``shapes.torchscript`` itself (its weights read back by
:func:`pyinfer.models.net_seg.load_frozen_detector`) and stays frozen, so boxes, scores and classes are exactly the
detector's; only the prototype branch (``proto``) and the coefficient branches (``coef``) are trained.

Data: frames of :class:`pyinfer.scene.Scene` for random seeds below 900 000 at random resolutions and aspect ratios,
letterboxed to 384x384 with :func:`pyinfer.ops.letterbox.letterbox` (the element's own resize), rendered in worker
processes in a fixed order. The truth masks are exact: :meth:`pyinfer.scene.Scene.instance_map` (each object's
visible pixels; objects drawn later cover earlier ones), letterboxed into the model input by area averaging and
averaged over 4x4 input pixels, i.e. the fraction of each prototype cell the object covers (a soft target).

Because the detector is frozen, its neck outputs (strides 8, 16, 32) are computed once per training image and kept
(float16); training runs the two branches on them. Positive anchors: those whose box, as the frozen detector decodes
it, has IoU >= 0.5 with a truth box (the best-matching one is the anchor's object), at most ``--topk`` per object,
the ones with the highest detector score for the object's class (the anchors NMS keeps are among them).

Loss: ultralytics' mask loss. Per positive anchor, the mask logits are ``coef @ protos`` at prototype resolution
(96x96), binary cross-entropy against the truth mask, averaged over the cells of the truth box grown by
``--margin`` cells per side (the decoder reads the mask inside the detector's box, which is not exactly the truth
box), then averaged over the positives. AdamW, warm-up + cosine.

Held-out figures (seeds >= 1 000 000, which training never draws): the exported TorchScript file itself, run through
``pyinfer.engine.Engine`` (decoder ``yolo-seg`` chosen from its metadata, confidence 0.25, NMS 0.45); predictions
matched to truth boxes at IoU 0.5 (same class, greedy by confidence); for matched objects the IoU of the predicted
mask (``Detections.frame_mask``: the decoder's 64x64 box-local mask, nearest cell, threshold 0.5) with the exact
instance mask over the whole frame; and box precision and recall.

Only torch, numpy and pyinfer's own ``src`` are needed; it runs on the 2-CPU development machine in about 10 minutes.
How the committed model was made: see docs/models.md.
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

from pyinfer.models.net_seg import IMGSZ, NM, ShapesSegNet, from_detector, train_mode
from pyinfer.ops.letterbox import LetterboxGeometry, letterbox
from pyinfer.scene import CLASSES, Scene

NAME = "shapes-seg"
DETECTOR = Path(__file__).resolve().parents[1] / "src" / "pyinfer" / "models" / "shapes.torchscript"
PROTO = IMGSZ // 4
MAX_GT = 16  # scenes show 3..10 objects
HELD_OUT = ((1000003, 1280, 720), (1000003, 800, 600), (1000019, 640, 480))
TRAIN_SEEDS = 900_000  # training draws seeds below this; every held-out seed is >= 1 000 000
ASPECTS = (4 / 3, 16 / 9, 1.0, 3 / 4, 9 / 16, 21 / 9, None)  # width / height; None: a random one
T0 = time.perf_counter()


# -- data -------------------------------------------------------------------------------------------------


def proto_masks(ids: np.ndarray, object_ids: list[int], geo: LetterboxGeometry) -> np.ndarray:
    """The objects' exact masks (from an instance map) at prototype resolution: (M, 96, 96) uint8, the covered
    fraction of each cell x 255. The frame is letterboxed as ``geo`` says, by area averaging."""
    if not object_ids:
        return np.zeros((0, PROTO, PROTO), np.uint8)
    m = torch.from_numpy(np.stack([ids == i for i in object_ids])).float()[None]  # (1, M, H, W)
    resized = F.interpolate(m, size=(geo.resized_h, geo.resized_w), mode="area")[0]
    canvas = torch.zeros((len(object_ids), IMGSZ, IMGSZ))
    x0, y0 = int(geo.pad_x), int(geo.pad_y)
    canvas[:, y0 : y0 + geo.resized_h, x0 : x0 + geo.resized_w] = resized
    return F.avg_pool2d(canvas, 4).mul_(255.0).round_().to(torch.uint8).numpy()


def render(seed: int, width: int, height: int, indices: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render and letterbox frames of one scene.

    Returns:
        (K, 3, 384, 384) uint8 letterboxed images, (K, MAX_GT, 5) float32 targets ``(class_id, x1, y1, x2, y2)`` in
        model-input pixels (class -1: padding) and (K, MAX_GT, 96, 96) uint8 truth masks at prototype resolution.
    """
    scene = Scene(seed, width, height)
    frames = []
    targets = np.full((len(indices), MAX_GT, 5), -1.0, np.float32)
    masks = np.zeros((len(indices), MAX_GT, PROTO, PROTO), np.uint8)
    geo = LetterboxGeometry.compute(width, height, IMGSZ, IMGSZ)
    for k, index in enumerate(indices):
        img, objects = scene.frame(index)
        objects = objects[:MAX_GT]
        frames.append(img)
        masks[k, : len(objects)] = proto_masks(scene.instance_map(index), [o.object_id for o in objects], geo)
        for j, obj in enumerate(objects):
            left, top, w, h = obj.bbox
            x1, y1 = left * geo.gain_x + geo.pad_x, top * geo.gain_y + geo.pad_y
            x2, y2 = (left + w) * geo.gain_x + geo.pad_x, (top + h) * geo.gain_y + geo.pad_y
            targets[k, j] = (obj.class_id, x1, y1, x2, y2)
    x, _ = letterbox(torch.from_numpy(np.stack(frames)), IMGSZ, IMGSZ)
    return x.mul_(255.0).round_().to(torch.uint8).numpy(), targets, masks


def sample_task(rng: random.Random, frames: int) -> tuple[int, int, int, list[int]]:
    """A random training scene: (seed, width, height, frame indices); never a held-out seed."""
    seed = rng.randrange(1, TRAIN_SEEDS)
    aspect = rng.choice(ASPECTS) or math.exp(rng.uniform(math.log(0.5), math.log(2.4)))
    long_side = rng.randint(320, 1920)
    if aspect >= 1.0:
        width, height = long_side, round(long_side / aspect)
    else:
        width, height = round(long_side * aspect), long_side
    width, height = max(64, width // 2 * 2), max(64, height // 2 * 2)
    indices = sorted(rng.sample(range(0, 1200, 10), frames))  # 10 frames apart at least
    return seed, width, height, indices


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
    """Render ``--scenes`` scenes of ``--frames-per-scene`` frames (in a fixed order, whatever the worker count)."""
    rng = random.Random(args.seed)
    tasks = [sample_task(rng, args.frames_per_scene) for _ in range(args.scenes)]
    if args.workers > 0:
        pool = _start_pool(args.workers)
        try:
            parts = list(pool.imap(_render_task, tasks, chunksize=2))
        finally:
            pool.terminate()
    else:
        parts = [_render_task(t) for t in tasks]
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    t = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    m = torch.from_numpy(np.concatenate([p[2] for p in parts]))
    objects = int((t[..., 0] >= 0).sum())
    print(f"data set: {len(x)} images, {objects} objects ({time.perf_counter() - T0:.0f}s)", flush=True)
    return x, t, m


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of (B, N, 4) against (B, M, 4) xyxy boxes -> (B, N, M)."""
    a, b = a[:, :, None], b[:, None]
    lt, rb = torch.maximum(a[..., :2], b[..., :2]), torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a + area_b - inter + 1e-9)


@torch.no_grad()
def positives(det: torch.Tensor, targets: torch.Tensor, topk: int, min_iou: float = 0.5) -> torch.Tensor:
    """Each anchor's object (index into the targets) or -1, from the frozen detector's decoded boxes.

    Args:
        det: (B, 4 + nc, N) detection rows (cx, cy, w, h, class scores).
        targets: (B, M, 5) ``(class_id, x1, y1, x2, y2)``, class -1 for padding.
        topk: at most this many anchors per object, those with the highest score for its class.
        min_iou: an anchor's box must overlap its object's box at least this much.

    Returns:
        (B, N) int64.
    """
    cxcy, wh = det[:, :2].transpose(1, 2), det[:, 2:4].transpose(1, 2)
    boxes = torch.cat((cxcy - wh / 2, cxcy + wh / 2), -1)  # (B, N, 4)
    valid = targets[..., 0] >= 0
    iou = box_iou(boxes, targets[..., 1:]) * valid[:, None]  # (B, N, M)
    best, obj = iou.max(2)
    obj = torch.where(best >= min_iou, obj, -1)
    # the object's class score at each anchor; keep the topk anchors per object
    cls = targets[..., 0].long().clamp(min=0).gather(1, obj.clamp(min=0))  # (B, N)
    score = det[:, 4:].gather(1, cls[:, None]).squeeze(1)  # (B, N)
    out = torch.full_like(obj, -1)
    for j in range(targets.shape[1]):
        s = torch.where(obj == j, score, -1.0)
        top = s.topk(min(topk, s.shape[1]), dim=1)
        keep = top.values >= 0
        out.scatter_(1, top.indices, torch.where(keep, j, out.gather(1, top.indices)))
    return out


@torch.no_grad()
def precompute(
    model: ShapesSegNet, x: torch.Tensor, t: torch.Tensor, topk: int, batch: int = 32
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The frozen detector's neck outputs (float16) and each anchor's object for every training image."""
    feats: list[list[torch.Tensor]] = [[], [], []]
    assigned = []
    for start in range(0, len(x), batch):
        f = model.features(x[start : start + batch].float() / 255.0)
        for k in range(3):
            feats[k].append(f[k].half())
        assigned.append(positives(model.detect(f), t[start : start + batch], topk))
    a = torch.cat(assigned)
    per_object = (a >= 0).sum() / max(int((t[..., 0] >= 0).sum()), 1)
    covered = float(sum(len(set(r[r >= 0].tolist())) for r in a)) / max(int((t[..., 0] >= 0).sum()), 1)
    print(
        f"features cached: {float(per_object):.1f} positive anchors per object, {covered:.3f} of the objects "
        f"have some ({time.perf_counter() - T0:.0f}s)",
        flush=True,
    )
    return [torch.cat(f) for f in feats], a


# -- training ---------------------------------------------------------------------------------------------


def mask_loss(
    coef: torch.Tensor,
    protos: torch.Tensor,
    assigned: torch.Tensor,
    targets: torch.Tensor,
    masks: torch.Tensor,
    margin: float,
) -> tuple[torch.Tensor, int]:
    """ultralytics' mask loss: per positive anchor, BCE of ``sigmoid(coef @ protos)`` against the truth mask, averaged
    over the cells of the truth box (grown by ``margin`` cells); the mean over positives, and their count."""
    cells = (torch.arange(PROTO, dtype=torch.float32) + 0.5)[None]  # (1, P) cell centres in prototype cells
    total, count = coef.sum() * 0.0, 0
    for b in range(coef.shape[0]):
        pos = assigned[b] >= 0
        if not pos.any():
            continue
        obj = assigned[b][pos]
        logits = (coef[b][:, pos].T @ protos[b].flatten(1)).view(-1, PROTO, PROTO)
        gt = masks[b][obj].float() / 255.0
        box = targets[b][obj, 1:] / 4.0  # prototype cells
        inx = (cells >= box[:, 0:1] - margin) & (cells <= box[:, 2:3] + margin)  # (P, PROTO)
        iny = (cells >= box[:, 1:2] - margin) & (cells <= box[:, 3:4] + margin)
        crop = (iny[:, :, None] & inx[:, None, :]).float()
        bce = F.binary_cross_entropy_with_logits(logits, gt, reduction="none")
        total = total + ((bce * crop).sum((1, 2)) / crop.sum((1, 2)).clamp(min=1.0)).sum()
        count += int(pos.sum())
    return total / max(count, 1), count


def train(
    args: argparse.Namespace,
    model: ShapesSegNet,
    feats: list[torch.Tensor],
    assigned: torch.Tensor,
    targets: torch.Tensor,
    masks: torch.Tensor,
) -> ShapesSegNet:
    """Train the prototype and coefficient branches in place (AdamW, warm-up + cosine); returns the model."""
    train_mode(model)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr
    )
    warmup = min(100, args.steps // 10)
    gen = torch.Generator().manual_seed(args.seed)
    usable = torch.nonzero((assigned >= 0).any(1)).squeeze(1)  # images with at least one positive anchor
    t_start, loss_sum = time.perf_counter(), 0.0
    for step in range(args.steps):
        if step < warmup:
            lr_scale = (step + 1) / warmup
        else:
            lr_scale = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))
        for g in opt.param_groups:
            g["lr"] = args.lr * lr_scale
        idx = usable[torch.randint(0, len(usable), (args.batch,), generator=gen)]
        coef, protos = model.segment(tuple(f[idx].float() for f in feats))
        loss, _ = mask_loss(coef, protos, assigned[idx], targets[idx], masks[idx], args.margin)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += float(loss.detach())
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            n = (step % args.log_every) + 1
            print(
                f"step {step + 1}/{args.steps} lr {args.lr * lr_scale:.2e} mask loss {loss_sum / n:.4f} "
                f"({time.perf_counter() - t_start:.0f}s)",
                flush=True,
            )
            loss_sum = 0.0
    return model.eval()


# -- evaluation -------------------------------------------------------------------------------------------


def match_pairs(
    xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray, gt: np.ndarray, gt_cls: np.ndarray, thr: float = 0.5
) -> list[tuple[int, int]]:
    """Greedy same-class matching by confidence at IoU >= ``thr``: (prediction, truth) index pairs."""
    used = np.zeros(len(gt), bool)
    pairs = []
    for i in np.argsort(-conf, kind="stable"):
        best, best_j = thr, -1
        for j in range(len(gt)):
            if used[j] or int(gt_cls[j]) != int(cls[i]):
                continue
            iw = min(xyxy[i, 2], gt[j, 2]) - max(xyxy[i, 0], gt[j, 0])
            ih = min(xyxy[i, 3], gt[j, 3]) - max(xyxy[i, 1], gt[j, 1])
            inter = max(iw, 0.0) * max(ih, 0.0)
            union = np.prod(xyxy[i, 2:] - xyxy[i, :2]) + np.prod(gt[j, 2:] - gt[j, :2]) - inter
            v = inter / union if union > 0 else 0.0
            if v >= best:
                best, best_j = v, j
        if best_j >= 0:
            used[best_j] = True
            pairs.append((int(i), best_j))
    return pairs


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (1.0 when both are empty)."""
    union = int((a | b).sum())
    return float((a & b).sum()) / union if union else 1.0


def evaluate(engine: Any, seed: int, width: int, height: int, frames: int) -> dict[str, Any]:
    """Box precision / recall and mask IoUs of matched objects on one held-out sequence."""
    scene = Scene(seed, width, height)
    tp = n_pred = n_gt = 0
    ious: list[float] = []
    classes: list[int] = []
    for start in range(0, frames, 8):
        shots = [(*scene.frame(i), scene.instance_map(i)) for i in range(start, min(frames, start + 8))]
        dets = engine.infer(torch.from_numpy(np.stack([img for img, _, _ in shots])))
        for (_, objects, ids), det in zip(shots, dets):
            gt = np.array([(o.bbox[0], o.bbox[1], o.bbox[0] + o.bbox[2], o.bbox[1] + o.bbox[3]) for o in objects])
            gt_cls = np.array([o.class_id for o in objects])
            pairs = match_pairs(det.xyxy.astype(np.float64), det.confidence, det.class_id, gt.reshape(-1, 4), gt_cls)
            tp, n_pred, n_gt = tp + len(pairs), n_pred + len(det), n_gt + len(objects)
            for i, j in pairs:
                ious.append(mask_iou(det.frame_mask(i, width, height), ids == objects[j].object_id))
                classes.append(objects[j].class_id)
    iou, cls = np.array(ious), np.array(classes)
    return {
        "frames": frames,
        "objects": n_gt,
        "detections": n_pred,
        "matched": tp,
        "precision": round(tp / max(n_pred, 1), 4),
        "recall": round(tp / max(n_gt, 1), 4),
        "mask_iou_mean": round(float(iou.mean()), 4) if len(iou) else None,
        "mask_iou_median": round(float(np.median(iou)), 4) if len(iou) else None,
        "mask_iou_p10": round(float(np.percentile(iou, 10)), 4) if len(iou) else None,
        "mask_iou_below_0_5": int((iou < 0.5).sum()),
        "per_class_mask_iou_mean": {
            name: round(float(iou[cls == k].mean()), 4) for k, name in enumerate(CLASSES) if (cls == k).any()
        },
        "_ious": ious,
    }


def evaluate_held_out(model_path: Path, frames: int) -> dict[str, Any]:
    """The held-out evaluation of an exported file, through the engine: per sequence and all together."""
    from pyinfer.engine import Engine, EngineConfig

    engine = Engine.build(EngineConfig(model=str(model_path), device="cpu", max_batch=8))
    assert engine.decoder_choice.name == "yolo-seg", engine.decoder_choice
    out: dict[str, Any] = {"frames": frames, "sequences": {}}
    ious: list[float] = []
    totals = dict.fromkeys(("objects", "detections", "matched"), 0)
    for seed, w, h in HELD_OUT:
        r = evaluate(engine, seed, w, h, frames)
        ious += r.pop("_ious")
        for k in totals:
            totals[k] += r[k]
        out["sequences"][f"{seed}@{w}x{h}"] = r
        print(
            f"held-out seed {seed} {w}x{h}: precision {r['precision']:.4f} recall {r['recall']:.4f} mask IoU mean "
            f"{r['mask_iou_mean']} median {r['mask_iou_median']} ({r['matched']} matched objects) "
            f"({time.perf_counter() - T0:.0f}s)",
            flush=True,
        )
    iou = np.array(ious)
    out.update(
        totals,
        precision=round(totals["matched"] / max(totals["detections"], 1), 4),
        recall=round(totals["matched"] / max(totals["objects"], 1), 4),
        mask_iou_mean=round(float(iou.mean()), 4),
        mask_iou_median=round(float(np.median(iou)), 4),
        mask_iou_p10=round(float(np.percentile(iou, 10)), 4),
        mask_iou_below_0_5=int((iou < 0.5).sum()),
    )
    print(
        f"held-out, all: precision {out['precision']:.4f} recall {out['recall']:.4f} mask IoU mean "
        f"{out['mask_iou_mean']:.4f} median {out['mask_iou_median']:.4f}",
        flush=True,
    )
    return out


# -- export -----------------------------------------------------------------------------------------------


def trace(model: ShapesSegNet) -> Any:
    """Fuse, trace and freeze on the CPU; checked against the unfused model, and its detection rows against the
    committed detector's (they must be identical: the detection part is frozen)."""
    fused = copy.deepcopy(model).float().cpu().eval().fuse()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trace's deprecation notice
        traced = torch.jit.freeze(torch.jit.trace(fused, torch.zeros(1, 3, IMGSZ, IMGSZ)).eval())
        detector = torch.jit.load(str(DETECTOR), map_location="cpu")
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        out, protos = traced(x)
        ref_out, ref_protos = model.eval()(x)
        torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(protos, ref_protos, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(out[:, : 4 + len(CLASSES)], detector(x), rtol=0, atol=0)
    return traced


def save(traced: Any, out_dir: Path, meta_extra: dict, report: dict) -> dict:
    """Save TorchScript (metadata in ``config.txt``) + labels in ``out_dir``; returns the metadata."""
    meta = {
        "description": "pyinfer shapes-seg: instance segmentation of pyinfer's synthetic scenes (the shapes detector, "
        "frozen, with a YOLOv8-seg head)",
        "task": "segment",
        "imgsz": [IMGSZ, IMGSZ],
        "stride": 32,
        "batch": 1,
        "end2end": False,
        "names": {str(i): name for i, name in enumerate(CLASSES)},
        "pyinfer": {
            "decoder": "yolo-seg",
            "input": "rgb",
            "letterbox": True,
            "output": f"YOLOv8-seg layout: [B, 4 + {len(CLASSES)} + {NM}, N] (cx, cy, w, h in input pixels, class "
            f"scores after sigmoid, {NM} mask coefficients) and prototypes [B, {NM}, {PROTO}, {PROTO}]",
            "detector": "shapes.torchscript, frozen: boxes, scores and classes are the shapes detector's",
            **meta_extra,
            "torch": torch.__version__,
            "eval": report,
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{NAME}.torchscript"
    torch.jit.save(traced, str(path), _extra_files={"config.txt": json.dumps(meta)})
    (out_dir / f"{NAME}.labels.txt").write_text("".join(f"{name}\n" for name in CLASSES))
    print(f"wrote {path} ({path.stat().st_size} bytes)", flush=True)
    return meta


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenes", type=int, default=400, help="training scenes rendered")
    p.add_argument("--frames-per-scene", type=int, default=4)
    p.add_argument("--topk", type=int, default=10, help="positive anchors per object at most")
    p.add_argument("--margin", type=float, default=2.0, help="loss crop: truth box grown by this many proto cells")
    p.add_argument("--c-proto", type=int, default=32, help="hidden channels of the prototype branch")
    p.add_argument("--workers", type=int, default=max(1, mp.cpu_count() or 1))
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--eval-frames", type=int, default=100, help="held-out frames per sequence (0: none)")
    p.add_argument("--export", type=Path, help=f"write {NAME}.torchscript + {NAME}.labels.txt here")
    p.add_argument("--report", type=Path, help="write the evaluation JSON here too")
    p.add_argument("--log-every", type=int, default=100)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    model = from_detector(DETECTOR, c_proto=args.c_proto)
    trainable = sum(q.numel() for q in model.parameters() if q.requires_grad)
    print(f"ShapesSegNet: {sum(q.numel() for q in model.parameters())} parameters, {trainable} trained", flush=True)
    x, t, m = build_dataset(args)
    model.eval()
    feats, assigned = precompute(model, x, t, args.topk)
    del x
    torch.manual_seed(args.seed)
    model = train(args, model, feats, assigned, t, m)
    train_seconds = round(time.perf_counter() - T0)
    print(f"trained after {train_seconds}s", flush=True)
    info = {
        "seed": args.seed,
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "scenes": args.scenes,
        "frames_per_scene": args.frames_per_scene,
        "images": len(t),
        "objects": int((t[..., 0] >= 0).sum()),
        "topk": args.topk,
        "margin": args.margin,
        "c_proto": args.c_proto,
        "train_seconds": train_seconds,
        "torch": torch.__version__,
        "device": "cpu",
    }
    traced = trace(model)
    report: dict[str, Any] = {}
    if args.eval_frames:  # the exported file itself, through the engine
        with tempfile.TemporaryDirectory() as tmp:
            save(traced, Path(tmp), {"train": info}, {})
            report = evaluate_held_out(Path(tmp) / f"{NAME}.torchscript", args.eval_frames)
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
