"""GPU run of the element: throughput, GPU memory over a long run, and GPU-vs-CPU detections.

    python3 bench/gpu/soak_gpu.py --out DIR [--frames 10000]

On the GPU machine (see ../shared/device): elements are registered in-process. For batch sizes 1 and 8:
appsrc pushing 1080p RGB frames from host memory (pre-rendered synthetic scenes, cycled) -> pyinfer
(device=cuda, the embedded model) -> fakesink, with a probe counting frames and sampling
torch.cuda.memory_allocated() every 500 frames. Memory growth is measured from the end of warm-up (10%) to
the end. Then the engine's detections on CUDA are compared with the CPU's on the same frames.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import command_line, machine_info, utc_now


def run_pipeline(frames: list[np.ndarray], total: int, batch: int) -> dict:
    import torch

    from pyinfer._gi import Gst, copy_buffer
    from pyinfer.zoo import get_model

    h, w, _ = frames[0].shape
    model = get_model()
    pipeline = Gst.parse_launch(
        f"appsrc name=src format=time caps=video/x-raw,format=RGB,width={w},height={h},framerate=30/1 "
        f"! pyinfer name=infer model-engine={model.path} device=cuda batch-size={batch} ! fakesink sync=false"
    )
    bufs = [Gst.Buffer.new_wrapped(f.tobytes()) for f in frames]
    samples: list[tuple[int, int]] = []
    state = {"n": 0, "t_first": 0.0, "t_last": 0.0}

    def probe(pad, info):
        state["n"] += 1
        now = time.perf_counter()
        if state["n"] == 1:
            state["t_first"] = now
        state["t_last"] = now
        if state["n"] % 500 == 0:
            samples.append((state["n"], torch.cuda.memory_allocated()))
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("infer").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, probe)
    src = pipeline.get_by_name("src")
    torch.cuda.reset_peak_memory_stats()
    pipeline.set_state(Gst.State.PLAYING)
    for i in range(total):
        b = copy_buffer(bufs[i % len(bufs)])  # shallow: shares the frame memory, own timestamps
        b.pts = i * Gst.SECOND // 30
        if src.emit("push-buffer", b) != Gst.FlowReturn.OK:
            break
    src.emit("end-of-stream")
    msg = pipeline.get_bus().timed_pop_filtered(600 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    if msg is None or msg.type == Gst.MessageType.ERROR:
        return {"error": msg.parse_error()[0].message if msg else "timeout"}
    warm = [s for s in samples if s[0] >= total // 10]
    fps = (state["n"] - 1) / (state["t_last"] - state["t_first"])
    return {
        "batch": batch,
        "frames": state["n"],
        "frames_per_s": round(fps, 1),
        "gpu_mem_after_warmup_bytes": warm[0][1],
        "gpu_mem_final_bytes": samples[-1][1],
        "gpu_mem_growth_bytes": samples[-1][1] - warm[0][1],
        "gpu_peak_bytes": torch.cuda.max_memory_allocated(),
        "samples": samples,
    }


def run_engine(frames: list[np.ndarray], total: int, batch: int) -> dict:
    """The element's core path without GStreamer: host frames -> pinned staging -> GPU -> engine.infer."""
    import torch

    from pyinfer.engine import Engine, EngineConfig
    from pyinfer.zoo import get_model

    engine = Engine.build(EngineConfig(model=str(get_model().path), device="cuda"))
    host = torch.from_numpy(np.stack(frames))
    staging = torch.empty((batch, *host.shape[1:]), dtype=torch.uint8, pin_memory=True)
    samples: list[tuple[int, int]] = []
    torch.cuda.reset_peak_memory_stats()
    done, n_dets = 0, 0
    t0 = None
    while done < total:
        idx = [(done + k) % len(frames) for k in range(batch)]
        staging.copy_(host[idx])
        dets = engine.infer(staging.to("cuda", non_blocking=True))
        n_dets += sum(len(d) for d in dets)
        done += batch
        if t0 is None and done >= total // 10:
            torch.cuda.synchronize()
            t0, warm_done = time.perf_counter(), done
        if done % 496 < batch:
            samples.append((done, torch.cuda.memory_allocated()))
    elapsed = time.perf_counter() - t0
    warm = [s for s in samples if s[0] >= total // 10]
    return {
        "path": "engine (host frames -> pinned staging -> cuda -> letterbox/model/decode/NMS -> host)",
        "batch": batch,
        "frames": done,
        "detections": n_dets,
        "frames_per_s_after_warmup": round((done - warm_done) / elapsed, 1),
        "gpu_mem_after_warmup_bytes": warm[0][1],
        "gpu_mem_final_bytes": samples[-1][1],
        "gpu_mem_growth_bytes": samples[-1][1] - warm[0][1],
        "gpu_peak_bytes": torch.cuda.max_memory_allocated(),
        "samples": samples,
    }


def compare_cpu_gpu(frames: list[np.ndarray]) -> dict:
    import torch

    from pyinfer.engine import Engine, EngineConfig
    from pyinfer.ops.boxes import box_iou
    from pyinfer.zoo import get_model

    path = str(get_model().path)
    cpu = Engine.build(EngineConfig(model=path, device="cpu"))
    gpu = Engine.build(EngineConfig(model=path, device="cuda"))
    worst_iou, same_classes, counts = 1.0, True, [0, 0]
    for f in frames:
        a = cpu.infer(torch.from_numpy(f)[None])[0]
        b = gpu.infer(torch.from_numpy(f)[None].cuda())[0]
        counts[0] += len(a)
        counts[1] += len(b)
        if len(a) != len(b):
            same_classes = False
            continue
        if len(a):
            iou = box_iou(a.xyxy, b.xyxy).diagonal()
            worst_iou = min(worst_iou, float(iou.min()))
            same_classes &= a.class_id.tolist() == b.class_id.tolist()
    return {
        "frames": len(frames),
        "cpu_detections": counts[0],
        "gpu_detections": counts[1],
        "min_matched_iou": round(worst_iou, 5),
        "same_classes": same_classes,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=10_000)
    args = ap.parse_args()
    import torch

    try:
        import pyinfer

        pyinfer.register()
        have_gst = True
    except (ImportError, ValueError) as exc:  # no GStreamer bindings on this machine: engine only
        print(f"GStreamer not available ({exc}); measuring the engine path only", flush=True)
        have_gst = False
    from pyinfer.scene.generator import Scene

    scene = Scene(2026, 1920, 1080)
    frames = [scene.frame(i)[0] for i in range(48)]
    result = {
        "benchmark": "gpu-soak",
        "command": command_line(),
        "date": utc_now(),
        "machine": machine_info(),
        "gpu": torch.cuda.get_device_name(0),
        "runs": [],
    }
    for batch in (1, 8):
        r = run_pipeline(frames, args.frames, batch) if have_gst else run_engine(frames, args.frames, batch)
        print(json.dumps({k: v for k, v in r.items() if k != "samples"}), flush=True)
        result["runs"].append(r)
    result["cpu_vs_gpu"] = compare_cpu_gpu(frames[:24])
    print(json.dumps(result["cpu_vs_gpu"]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu-soak.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
