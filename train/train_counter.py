"""Train, evaluate and export pyinfer's embedded text model ``counter`` (``pyinfer.text.counter``, issue #16).

What it is, honestly: a small CNN with one classification head per shape class (circle, square, triangle), each
choosing a count from 0 to ``MAX_COUNT`` (the last meaning "that many or more"); the text ("2 circles, 1 square")
is written from those counts by :func:`pyinfer.text.counter.caption`. It is an image-to-text model in the sense
that matters here (image and prompt in, words out, ground truth known), not a language model.

Data: frames of the scene generator (``Scene(seed, 384, 216)``) for seeds below 100 000, every ``--stride``-th
frame, resized to the model input (128x72) with the same antialiased bilinear resize the model's wrapper uses at
run time. The target of each class is the number of truth objects of that class (objects at least 25 % visible, as
``pyinfer scene`` counts them). Held out: seeds from 1 000 000 on, which training never draws.

Runs on the CPU in a few minutes (2 cores); deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pyinfer.scene.generator import CLASSES, Scene  # noqa: E402
from pyinfer.text.counter import INPUT_HW, MAX_COUNT, CounterNet  # noqa: E402

HELD_OUT_SEED = 1_000_000


def render(seeds: range, frames: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) uint8 inputs and (N, 3) int64 count targets, clipped to MAX_COUNT."""
    xs, ys = [], []
    for seed in seeds:
        scene = Scene(seed, 384, 216)
        for k in range(frames):
            img, objs = scene.frame(k * stride)
            counts = np.bincount([o.class_id for o in objs], minlength=len(CLASSES))[: len(CLASSES)]
            x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
            x = F.interpolate(x, size=INPUT_HW, mode="bilinear", antialias=True, align_corners=False)
            xs.append(x.round().clamp(0, 255).to(torch.uint8))
            ys.append(torch.from_numpy(np.minimum(counts, MAX_COUNT)))
    return torch.cat(xs), torch.stack(ys).long()


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    model.eval()
    with torch.inference_mode():
        logits = torch.cat([model(x[i : i + 256]) for i in range(0, len(x), 256)])
    pred = logits.argmax(-1)
    right = pred == y
    out = {"exact": float(right.all(1).float().mean()), "frames": len(x)}
    for c, name in enumerate(CLASSES):
        out[f"{name}_accuracy"] = float(right[:, c].float().mean())
        out[f"{name}_mae"] = float((pred[:, c] - y[:, c]).abs().float().mean())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", type=int, default=160)
    p.add_argument("--frames-per-scene", type=int, default=10)
    p.add_argument("--stride", type=int, default=23, help="frames between two samples of a scene")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-scenes", type=int, default=40)
    p.add_argument("--out", type=Path, default=ROOT / "src" / "pyinfer" / "models")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    x, y = render(range(args.scenes), args.frames_per_scene, args.stride)
    vx, vy = render(range(HELD_OUT_SEED, HELD_OUT_SEED + args.eval_scenes), 5, 37)
    print(f"rendered {len(x)} training and {len(vx)} held-out frames in {time.time() - t0:.0f} s", flush=True)
    model = CounterNet()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * ((len(x) + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), args.batch):
            idx = order[i : i + args.batch]
            xb = x[idx]
            if torch.rand((), generator=gen) < 0.5:  # a mirrored scene has the same counts
                xb = xb.flip(-1)
            logits = model(xb)
            loss = F.cross_entropy(logits.reshape(-1, MAX_COUNT + 1), y[idx].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            print(f"epoch {epoch + 1}: loss {total / len(x):.4f} held-out {evaluate(model, vx, vy)}", flush=True)
    metrics = evaluate(model, vx, vy)
    metrics["train_seconds"] = round(time.time() - t0, 1)
    model.eval()
    traced = torch.jit.trace(model, torch.zeros(1, 3, *INPUT_HW, dtype=torch.uint8))
    meta = {"classes": list(CLASSES), "max_count": MAX_COUNT, "input_hw": list(INPUT_HW), "held_out": metrics,
            "args": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "counter.torchscript"
    torch.jit.save(traced, str(path), _extra_files={"config.txt": json.dumps(meta)})
    print(json.dumps(metrics, indent=1))
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
