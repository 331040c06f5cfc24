#!/usr/bin/env python
"""Secondary inference at many objects per frame (issue #15): what the secondary stage costs per object.

``appsrc ! pyinfer process-mode=secondary ! fakesink``, where every 1080p RGB frame pushed by the appsrc already
carries ``--objects`` ROI metas (boxes of 24-200 px spread over the frame, written as a primary pyinfer writes
them), so the primary detector's cost is not in the figures. The secondary is a small classifier
(``--model``: a ``module:factory`` or a model file with ``decoder=classifier``; default: a 4-layer CNN at
64x64 with random weights, built here). Side by side in one run, frames/s and the cost per object of:

- ``crop``: :func:`pyinfer.ops.crops.crop_resize` alone on the frames (all objects of a frame in one call);
- ``model``: the classifier alone on ``--objects`` crops (``Engine.infer`` in calls of ``batch-size``);
- ``element``: the whole element (objects read from the metas, crops, model, results written), with
  ``secondary-reinfer-interval`` 0 and, when ``--reinfer`` is given, that interval with tracked objects
  (every object carries a track id: only one in ``reinfer`` frames is inferred again);
- ``passthrough``: the same pipeline with ``operate-on-gie-id`` set to a producer that is not there (objects
  read and filtered out, nothing inferred): the fixed cost of the element per frame.

Writes bench/results/secondary-<machine>-<UTC date>.json (or ``--out``) with the command, machine and date.

    .venv/bin/python bench/secondary.py --frames 40 --objects 100 --batch 32 --reinfer 10
    # H200 (device tool): PYTHONPATH=src:bench:$PYTHONPATH python3 bench/secondary.py --device cuda --out $OUT/s.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import numpy as np


def small_cnn():
    """The default secondary: 4 conv layers + linear, 3 classes, 64x64 input (random weights, seeded)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    ch = 3
    for out in (16, 32, 64, 64):
        layers += [nn.Conv2d(ch, out, 3, stride=2, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
        ch = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, 3)]
    return nn.Sequential(*layers).eval()


small_cnn.imgsz = 64  # type: ignore[attr-defined]
small_cnn.decoder = "classifier"  # type: ignore[attr-defined]
small_cnn.names = ["a", "b", "c"]  # type: ignore[attr-defined]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--objects", type=int, default=100)
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--batch", type=int, default=32, help="objects per model call (the secondary's batch-size)")
    p.add_argument("--reinfer", type=int, default=0, help="also run with secondary-reinfer-interval=N, tracked")
    p.add_argument("--model", default="secondary:small_cnn", help="the secondary model (module:factory or file)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=3, help="runs of each variant (medians are quoted)")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def boxes_for(objects: int, width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    size = rng.uniform(24, 200, (objects, 2))
    x0 = rng.uniform(0, width - size[:, 0])
    y0 = rng.uniform(0, height - size[:, 1])
    return np.stack([x0, y0, x0 + size[:, 0], y0 + size[:, 1]], axis=1).astype(np.float32)


def make_buffers(frames: list[np.ndarray], boxes: list[np.ndarray], tracked: bool) -> list:
    """Gst buffers of the frames, each with its boxes as a primary pyinfer (unique-id 1) writes them."""
    from pyinfer._gi import Gst
    from pyinfer.detections import Detections
    from pyinfer.meta import roi

    out = []
    for i, (frame, b) in enumerate(zip(frames, boxes)):
        buf = Gst.Buffer.new_wrapped(np.ascontiguousarray(frame).tobytes())
        buf.pts, buf.duration = i * Gst.SECOND // 30, Gst.SECOND // 30
        n = len(b)
        dets = Detections(xyxy=b, confidence=np.full(n, 0.9, np.float32), class_id=np.zeros(n, np.int32),
                          labels=("object",))  # fmt: skip
        metas = roi.write_detections(buf, dets, unique_id=1)
        if tracked:
            roi.set_track_ids(metas, range(n), range(1, n + 1))
        out.append(buf)
    return out


def run_element(bufs: list, caps: str, props: str) -> float:
    """Seconds to push every buffer through ``appsrc ! pyinfer process-mode=secondary PROPS ! fakesink``."""
    from pyinfer._gi import Gst

    pipeline = Gst.parse_launch(
        f"appsrc name=src format=time caps={caps} ! pyinfer process-mode=secondary {props} ! fakesink sync=false"
    )
    src = pipeline.get_by_name("src")
    warm = bufs[0].copy_deep()
    warm.pts = 0
    pipeline.set_state(Gst.State.PLAYING)
    src.emit("push-buffer", warm)  # the first buffer builds what the model needs (not timed)
    time.sleep(0.5)
    t0 = time.perf_counter()
    for i, buf in enumerate(bufs):
        b = buf.copy_deep()
        b.pts = (i + 1) * Gst.SECOND // 30
        src.emit("push-buffer", b)
    src.emit("end-of-stream")
    msg = pipeline.get_bus().timed_pop_filtered(600 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    seconds = time.perf_counter() - t0
    pipeline.set_state(Gst.State.NULL)
    if msg is None or msg.type != Gst.MessageType.EOS:
        raise RuntimeError(msg.parse_error()[0].message if msg is not None else "timeout")
    return seconds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    import pyinfer
    from pyinfer.engine import Engine, EngineConfig
    from pyinfer.ops.crops import crop_resize
    from pyinfer.params import InferParams

    pyinfer.register()
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8) for _ in range(args.frames)]
    boxes = [boxes_for(args.objects, args.width, args.height, i) for i in range(args.frames)]
    n_obj = args.frames * args.objects
    results: dict = {}

    def note(name: str, runs: list[float]) -> None:
        med = statistics.median(runs)
        results[name] = {
            "seconds": [round(r, 4) for r in runs],
            "frames_per_s": round(args.frames / med, 2),
            "us_per_object": round(1e6 * med / n_obj, 1),
        }
        print(f"{name:32s} {args.frames / med:8.2f} frames/s {1e6 * med / n_obj:9.1f} us/object", flush=True)

    device = torch.device(args.device)
    engine = Engine.build(EngineConfig(model=args.model, device=args.device, decoder="classifier",
                                       max_batch=args.batch))  # fmt: skip
    tensors = [torch.from_numpy(f).to(device)[None] for f in frames]
    tboxes = [torch.from_numpy(b) for b in boxes]
    zeros = torch.zeros(args.objects, dtype=torch.int64)
    iw, ih = engine.input_width, engine.input_height
    crops = []
    runs = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        crops = [crop_resize(t, zeros, b, iw, ih) for t, b in zip(tensors, tboxes)]
        if device.type == "cuda":
            torch.cuda.synchronize()
        runs.append(time.perf_counter() - t0)
    note("crop", runs)
    params = InferParams(0.0)
    runs = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        for c in crops:
            for s in range(0, len(c), args.batch):
                engine.collect(engine.submit(c[s : s + args.batch], params=params))
        runs.append(time.perf_counter() - t0)
    note("model", runs)
    caps = f"video/x-raw,format=RGB,width={args.width},height={args.height},framerate=30/1"
    base = f"model-engine={args.model} decoder=classifier device={args.device} batch-size={args.batch} unique-id=2"
    plain = make_buffers(frames, boxes, tracked=False)
    variants = [("element", plain, base), ("passthrough", plain, base + " operate-on-gie-id=99")]
    if args.reinfer:
        tracked = make_buffers(frames, boxes, tracked=True)
        props = base + f" secondary-reinfer-interval={args.reinfer}"
        variants.append((f"element reinfer={args.reinfer}", tracked, props))
    for name, bufs, props in variants:
        note(name, [run_element(bufs, caps, props) for _ in range(args.reps)])
    result = {
        "benchmark": "secondary inference: crop + model + element per object (issue #15)",
        "command": common.command_line(),
        "machine": common.machine_info(),
        "date_utc": common.utc_now(),
        "setup": {
            "frames": args.frames,
            "objects_per_frame": args.objects,
            "frame": f"{args.width}x{args.height} RGB",
            "batch": args.batch,
            "model": args.model,
            "input": f"{iw}x{ih}",
            "device": args.device,
            "reps": args.reps,
        },
        "results": results,
    }
    out = args.out or common.RESULTS_DIR / f"secondary-{args.device}-{common.utc_now()[:10]}.json"
    common.write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
