#!/usr/bin/env python
"""Where a batch of GPU-resident NV12 frames spends its GPU time (issue #12): the element's path apart from GStreamer.

    # GPU machine (ultralytics from the carried wheel, as throughput.py):
    PYTHONPATH=src:bench/gpu:bench:$PYTHONPATH python3 bench/gpu/profile_yuv.py --out $OUT
    # this machine: nothing to time (CUDA only)

YOLOv8n fp16 640x640 with cuda-graphs + channels-last (the knobs of element.py's "graphs" rows), 1080p NV12
frames already on the GPU. GPU time per batch (CUDA events over back-to-back replays, median of 5) of:
the raw model's graph (element.py's ceiling: a copy of the letterboxed input + the model), the model as the fast
path runs it, the YUV -> letterbox kernel, the fixed decode, the fast path's whole graph, the gather of the
frames' planes into the element's staging slot, the copy of that slot into the graph's static planes, the
device-to-host copy of the packed detections. Then frames/s of loops that add one step at a time: the raw graph;
FastPath.submit/collect two batches in flight on a YuvFrames batch; the same with the gather of 16 frames' planes
(as the element does); the same through ``Engine`` (its submit/collect, what the element's worker calls). Last, a
torch.profiler trace of the fast path's pipelined loop: GPU busy time over wall time, and the kernels' table.
Results: OUT/profile-yuv.json (+ the trace).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import deque
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import throughput as tp  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp"))
    ap.add_argument("--batches", default="16,1")
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    args = ap.parse_args()
    import torch

    from pyinfer import accel
    from pyinfer.accel import AccelSettings, decode_fixed
    from pyinfer.ops import yuv_triton
    from pyinfer.ops.colour import YuvColour, YuvFrames
    from pyinfer.pipeline import StagingRing

    dev = "cuda"
    dtype = torch.float16
    torch.backends.cudnn.benchmark = True
    t_start = time.perf_counter()
    bundle = tp.build_model("n", dev, dtype)
    model = tp.loaded(bundle.module, dev, "fp16", "profile-yuv")
    settings = AccelSettings(cuda_graphs=True, compile="off", channels_last=True)
    timer = tp.Timer(True, min_time=0.5, reps=5)
    report: dict = {
        "benchmark": "GPU time of the element's NV12 path, stage by stage (issue #12)",
        "command": sys.argv,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": bundle.source,
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "frame": f"{args.width}x{args.height} NV12 (random planes) on cuda",
        "stages_us": {},
        "loops_fps": {},
    }

    def note(bs: int, kind: str, name: str, value) -> None:
        report[kind].setdefault(f"b{bs}", {})[name] = value
        print(f"  b{bs:<3d} {kind:9s} {name:60s} {value}", flush=True)

    def graphed(fn):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        return g

    def gpu_us(fn, reps: int = 100) -> float:
        for _ in range(10):
            fn()
        out = []
        for _ in range(5):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(reps):
                fn()
            e.record()
            e.synchronize()
            out.append(s.elapsed_time(e) * 1000 / reps)
        return round(statistics.median(out), 1)

    def stage_us(fn) -> float:
        return gpu_us(graphed(fn).replay)

    w, h = args.width, args.height
    colour = YuvColour("bt709", False, False, False)
    gen = torch.Generator(device=dev).manual_seed(7)

    def nv12_frame():  # one decoded frame as NVDEC gives it: Y (H, W, 1) and UV (H/2, W/2, 2) planes
        y = torch.randint(16, 236, (h, w, 1), dtype=torch.uint8, device=dev, generator=gen)
        uv = torch.randint(16, 241, (h // 2, w // 2, 2), dtype=torch.uint8, device=dev, generator=gen)
        return [y, uv]

    pool = [nv12_frame() for _ in range(48)]

    def one(bs: int) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f} s] batch {bs}", flush=True)
        eng = tp.make_engine(model, settings)
        fast = eng.fast
        ring = StagingRing([(h, w, 1), (h // 2, w // 2, 2)], bs, device=dev, slots=3)
        slots = [ring.acquire() for _ in range(3)]

        def yuv_of(slot, n):
            uv = slot[1][:n]
            return YuvFrames(slot[0][:n, ..., 0], uv[..., 0], uv[..., 1], colour)

        batches = []
        for j in range(3):
            StagingRing.put_many(slots[j], [(i, pool[(j * bs + i) % len(pool)]) for i in range(bs)])
            batches.append(yuv_of(slots[j], bs))
        torch.cuda.synchronize()
        t = time.perf_counter()
        fast.infer(batches[0])
        note(bs, "loops_fps", "setup_s (capture)", round(time.perf_counter() - t, 1))
        inst = next(iter(fast._instances.values()))[0]
        static = inst.frames
        with torch.inference_mode():
            # the raw model, as element.py's "raw" row times it
            lb = torch.rand((bs, 3, 640, 640), device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
            x_in = lb.clone()
            note(bs, "stages_us", "raw: copy letterboxed input + model (element.py's ceiling)",
                 stage_us(lambda: (x_in.copy_(lb), bundle.module(x_in))))  # fmt: skip
            note(bs, "stages_us", "model alone", stage_us(lambda: bundle.module(x_in)))
            note(bs, "stages_us", "model as the fast path runs it", stage_us(lambda: fast._model_fn(x_in)))
            out = torch.empty((bs, 3, 640, 640), dtype=dtype, device=dev, memory_format=torch.channels_last)
            geo = inst.geometry
            view = out[
                :, :, int(geo.pad_y) : int(geo.pad_y) + geo.resized_h, int(geo.pad_x) : int(geo.pad_x) + geo.resized_w
            ]
            note(bs, "stages_us", "YUV -> letterbox Triton kernel (resized area)",
                 stage_us(lambda: yuv_triton.yuv_letterbox(static, geo.resized_w, geo.resized_h, view)))  # fmt: skip
            note(bs, "stages_us", "letterbox stage as captured (pad fill + kernel)",
                 stage_us(lambda: accel._letterbox_stage(static, 640, 640, dtype, "RGB", False, True)))  # fmt: skip
            outs = fast._model_fn(x_in)
            out0 = outs[0].clone()
            note(bs, "stages_us", "decode_fixed",
                 stage_us(lambda: decode_fixed(out0, fast._conf, fast._iou, geometry=geo,
                                               candidates=fast.candidates, max_det=300)))  # fmt: skip
            full = out0.clone()
            full[:, 4, :] = 0.9  # every anchor above the threshold: all 512 candidate slots valid (the worst case)
            note(bs, "stages_us", "decode_fixed, 512 candidates a frame (worst case)",
                 stage_us(lambda: decode_fixed(full, fast._conf, fast._iou, geometry=geo,
                                               candidates=fast.candidates, max_det=300)))  # fmt: skip
            note(bs, "stages_us", "whole captured graph (letterbox + model + decode)", gpu_us(inst.graph.replay))
            gather = [(i, pool[i % len(pool)]) for i in range(bs)]
            note(bs, "stages_us", "gather 16 frames' planes into a slot (put_many)",
                 gpu_us(lambda: StagingRing.put_many(slots[0], gather)))  # fmt: skip
            b0 = batches[1]
            note(bs, "stages_us", "slot -> graph's static planes (_foreach_copy_)",
                 gpu_us(lambda: torch._foreach_copy_([static.y, static.u, static.v], [b0.y, b0.u, b0.v])))  # fmt: skip
            note(bs, "stages_us", "device-to-host copy of the packed detections",
                 gpu_us(lambda: inst.host.copy_(inst.packed, non_blocking=True)))  # fmt: skip

            def replay_all():
                torch._foreach_copy_([static.y, static.u, static.v], [b0.y, b0.u, b0.v])
                inst.graph.replay()
                inst.host.copy_(inst.packed, non_blocking=True)

            note(bs, "stages_us", "copy + graph + device-to-host", gpu_us(replay_all))

        # loops, frames/s
        with torch.inference_mode():
            raw_graph = tp.capture(bundle.module, x_in)

        def raw_step(_):
            with torch.inference_mode():  # x_in and lb are inference tensors
                x_in.copy_(lb)
            raw_graph.replay()

        note(bs, "loops_fps", "raw graph", timer.measure(raw_step, [0], bs)["frames_per_s"])

        def done(ticket, through_engine: bool) -> None:
            if through_engine:
                eng.collect(ticket)
            else:
                fast.collect(ticket).detections(eng.labels)

        def piped(step_batches, gather_each: bool, through_engine: bool):
            def run(iters: int) -> None:
                q: deque = deque()
                for i in range(iters):
                    if len(q) == 2:
                        done(q.popleft(), through_engine)
                    j = i % 3
                    if gather_each:
                        StagingRing.put_many(slots[j], [(k, pool[(i * bs + k) % len(pool)]) for k in range(bs)])
                    b = step_batches[j]
                    q.append(eng.submit(b) if through_engine else fast.submit(b))
                while q:
                    done(q.popleft(), through_engine)

            return run

        for name, fn in (
            ("FastPath submit/collect, 2 in flight", piped(batches, False, False)),
            ("+ gather of the planes each batch", piped(batches, True, False)),
            ("through Engine.submit/collect, with the gather", piped(batches, True, True)),
        ):
            fn(4)
            torch.cuda.synchronize()
            runs = []
            for _ in range(5):
                iters = max(8, int(2000 / bs))
                t0 = time.perf_counter()
                fn(iters)
                torch.cuda.synchronize()
                runs.append(iters * bs / (time.perf_counter() - t0))
            note(bs, "loops_fps", name, round(statistics.median(runs), 1))
        # GPU busy over wall time in the pipelined loop, and the kernels
        from torch.profiler import ProfilerActivity, profile

        run = piped(batches, True, False)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            run(40)
            torch.cuda.synchronize()
            wall = time.perf_counter() - t0
        events = [
            e for e in prof.events() if getattr(e, "device_type", None) is not None and "CUDA" in str(e.device_type)
        ]
        busy = sum(e.time_range.elapsed_us() for e in events)
        note(
            bs, "loops_fps", "profiled loop: GPU kernel time / wall (40 batches)", f"{busy / 1e6:.4f} s / {wall:.4f} s"
        )
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60)
        report.setdefault("kernels", {})[f"b{bs}"] = table
        print(table, flush=True)
        try:
            prof.export_chrome_trace(str(args.out / f"profile-yuv-b{bs}.trace.json"))
        except Exception as exc:
            print("trace not written:", exc)
        fast.release()

    args.out.mkdir(parents=True, exist_ok=True)
    for bs in (int(b) for b in args.batches.split(",")):
        one(bs)
        (args.out / "profile-yuv.json").write_text(json.dumps(report, indent=1))
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
