#!/usr/bin/env python
"""Segmentation and pose models on the GPU (issue #15): the engine's results there against the CPU's, and the speed.

    # GPU machine (see bench/README.md; ultralytics from .whl):
    PYTHONPATH=src:bench/gpu:bench:tests:$PYTHONPATH python3 bench/gpu/seg_pose.py --out $OUT
    # CPU smoke run of the same code:
    .venv/bin/python bench/gpu/seg_pose.py --device cpu --batches 1 --repeats 2 --out /tmp

YOLOv8n, YOLOv8n-seg and YOLOv8n-pose are built from ultralytics' yaml with seeded random weights, calibrated
as tests/reference does so that many boxes score high, and exported to TorchScript at 640x640. For each:

- **agreement**: the engine on ``--device`` (fp32, CUDA graphs) against the engine on the CPU, same 1280x720
  frames: matched boxes (same class, IoU >= 0.99), mask cells that agree, largest keypoint difference;
- **speed**: frames/s of ``Engine.infer`` on host frames (1280x720 RGB, pinned) at each batch size, median of
  ``--repeats`` timed runs of ``--iters`` batches, the detector beside its seg and pose variants: the cost of
  the masks and keypoints is the ratio.

Results: seg-pose-gpu-DATE.json (or -cpu-) under --out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent / "tests"))
import common  # noqa: E402

MODELS = {"detect": "yolov8n.yaml", "seg": "yolov8n-seg.yaml", "pose": "yolov8n-pose.yaml"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batches", default="1,16", help="comma-separated batch sizes")
    p.add_argument("--iters", type=int, default=30, help="batches per timed run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-tf32", action="store_true", help="convolutions and matmuls in full fp32 (torch's cuDNN "
                   "default allows TF32): tells rounding from a real difference in the agreement")  # fmt: skip
    p.add_argument("--tag", default="", help="suffix of the result file's name")
    return p.parse_args(argv)


def _export(cfg: str, frames_bgr, out: Path) -> str:
    from reference.ultra import build

    yolo = build(cfg, frames_bgr, (640, 640))
    cwd = os.getcwd()
    os.chdir(out)
    try:
        return str(Path(yolo.export(format="torchscript", imgsz=640)).resolve())
    finally:
        os.chdir(cwd)


def _agreement(ref, got) -> dict:
    """Pairs of one class, IoU >= 0.99 and the nearest score (random-weight models give near-twin boxes)."""
    import numpy as np

    from reference.ultra import box_iou

    pairs = total = cells = agree = 0
    kpt_err = 0.0
    for r, g in zip(ref, got):
        total += max(len(r), len(g))
        if not len(r) or not len(g):
            continue
        near = np.abs(g.xyxy[:, None, :] - r.xyxy[None, :, :]).max(axis=2) < 0.05  # also boxes clipped to nothing
        ok = ((box_iou(g.xyxy, r.xyxy) >= 0.99) | near) & (g.class_id[:, None] == r.class_id[None, :])
        gap = np.where(ok, np.abs(g.confidence[:, None] - r.confidence[None, :]), np.inf)
        used: set[int] = set()
        for i in range(len(g)):
            order = [j for j in np.argsort(gap[i]).tolist() if np.isfinite(gap[i, j]) and j not in used]
            if not order:
                continue
            j = order[0]
            used.add(j)
            pairs += 1
            if r.masks is not None and g.masks is not None:
                same = (r.masks[j] >= 128) == (g.masks[i] >= 128)
                cells += same.size
                agree += int(same.sum())
            if r.keypoints is not None and g.keypoints is not None:
                kpt_err = max(kpt_err, float(np.abs(r.keypoints[j] - g.keypoints[i]).max()))
    return {"matched": pairs, "detections": total, "mask_cells_agree": agree / cells if cells else None,
            "max_keypoint_diff_px": kpt_err}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.update({"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0", "ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS": "1",
                       "YOLO_VERBOSE": "0"})  # fmt: skip
    import numpy as np
    import torch

    from pyinfer._gi import ensure_init
    from pyinfer.engine import Engine, EngineConfig
    from reference.ultra import bgr_frames

    ensure_init()  # machine_info reads GStreamer's version
    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    out_dir = Path(args.out) if args.out else common.RESULTS_DIR
    work = out_dir / "seg-pose-models"
    work.mkdir(parents=True, exist_ok=True)
    bgr = bgr_frames(1280, 720, 4, block=2)
    rgb = torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1]))
    batches = [int(b) for b in args.batches.split(",")]
    gpu = args.device.startswith("cuda")
    results: dict = {}
    for kind, cfg in MODELS.items():
        path = _export(cfg, bgr, work)
        cpu = Engine.build(EngineConfig(model=path, device="cpu"))
        dev = Engine.build(EngineConfig(model=path, device=args.device, cuda_graphs=gpu, max_batch=max(batches)))
        entry: dict = {"decoder": str(dev.decoder_choice)}
        on_cpu = cpu.infer(rgb, channels="RGB")
        entry["agreement"] = _agreement(on_cpu, dev.infer(rgb, channels="RGB"))
        entry["detections_per_frame"] = sum(len(d) for d in on_cpu) / len(on_cpu)
        speed = {}
        for b in batches:
            frames = rgb[np.arange(b) % len(rgb)].contiguous()
            if gpu:
                frames = frames.pin_memory()
            for _ in range(3):
                dev.infer(frames, channels="RGB")
            runs = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                for _ in range(args.iters):
                    dev.infer(frames, channels="RGB")
                runs.append(b * args.iters / (time.perf_counter() - t0))
            speed[str(b)] = {"fps_median": statistics.median(runs), "runs": runs}
        entry["speed"] = speed
        results[kind] = entry
        print(kind, entry["decoder"], entry["agreement"], {b: round(s["fps_median"]) for b, s in speed.items()},
              flush=True)  # fmt: skip
    ratios = {kind: {b: results[kind]["speed"][b]["fps_median"] / results["detect"]["speed"][b]["fps_median"]
                     for b in results[kind]["speed"]} for kind in ("seg", "pose")}  # fmt: skip
    print("speed relative to the detector:", ratios)
    data = {"command": common.command_line(), "machine": common.machine_info(), "date": common.utc_now(),
            "device": args.device, "tf32": not args.no_tf32,
            "frames": "1280x720 RGB host frames (pinned on the GPU), 640x640 input",
            "models": results, "relative_to_detect": ratios}  # fmt: skip
    tag = "gpu" if gpu else "cpu"
    out = common.write_json(out_dir / f"seg-pose-{tag}-{common.utc_now()[:10]}{args.tag}.json", data)
    print("wrote", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
