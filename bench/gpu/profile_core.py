#!/usr/bin/env python
"""Where the core path's time goes (issue #7): its stages timed apart with CUDA events, YOLOv8n fp16, b1 and b16.

    # GPU machine (ultralytics from the carried wheel, as throughput.py):
    PYTHONPATH=src:bench/gpu:$ULTRALYTICS_SITE python3 bench/gpu/profile_core.py --out $OUT
    # this machine (smoke test of the script, no timings worth reading):
    .venv/bin/python bench/gpu/profile_core.py --device cpu

For each batch size, on the compiled fast path (cuda-graphs + compile=default + channels-last), every stage is
captured in a CUDA graph of its own and its replays timed with events (microseconds per batch, GPU time):
the frame copy into the graph's input buffer, the letterbox (the GPU path before this change: full-frame float
conversion + F.interpolate, and now: uint8 gather; eager and compiled), the model alone and as the backend
wraps it (float32 outputs), the fixed decode (eager, compiled), the whole captured graph; then the host side
(submit, event wait, unpack, Detections), and the three loops throughput.py times (raw graph, synchronous
Engine.infer, pipelined), with the old letterbox swapped back in for the last. A torch.profiler table of one
graph replay's kernels ends each batch size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import throughput as tp  # noqa: E402


def old_letterbox_stage(frames, input_w, input_h, dtype, channels, stretch, channels_last):
    """The GPU letterbox before this change: the whole frame to float, F.interpolate, fill, copy, scale."""
    import torch
    import torch.nn.functional as F

    from pyinfer.ops.letterbox import PAD_VALUE, LetterboxGeometry

    b, h, w, _ = frames.shape
    geo = LetterboxGeometry.compute(w, h, input_w, input_h, stretch=stretch)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((b, 3, input_h, input_w), dtype=dtype, device=frames.device, memory_format=fmt)
    x = frames[..., :3].permute(0, 3, 1, 2).to(dtype)
    if (geo.resized_w, geo.resized_h) != (w, h):
        x = F.interpolate(x, size=(geo.resized_h, geo.resized_w), mode="bilinear", align_corners=False)
    if channels.startswith("B"):
        x = x.flip(1)
    out.fill_(PAD_VALUE / 255.0)
    px, py = int(geo.pad_x), int(geo.pad_y)
    out[:, :, py : py + geo.resized_h, px : px + geo.resized_w] = x.mul_(1.0 / 255.0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--out", type=Path, default=Path("/tmp"))
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--compile", default="default")
    args = ap.parse_args()
    import numpy as np
    import torch

    from pyinfer import accel
    from pyinfer.accel import AccelSettings, decode_fixed, unpack_fixed

    cuda = args.device == "cuda"
    dev = args.device
    dtype = torch.float16 if cuda else torch.float32
    precision = "fp16" if cuda else "fp32"
    torch.backends.cudnn.benchmark = True
    t_start = time.perf_counter()
    frames = tp.render_frames(8)
    frames_dev = torch.from_numpy(np.stack(frames)).to(dev)
    bundle = tp.build_model("n", dev, dtype)
    model = tp.loaded(bundle.module, dev, precision, "profile")
    mode = args.compile if cuda else "off"
    settings = AccelSettings(cuda_graphs=cuda, compile=mode, channels_last=True)
    timer = tp.Timer(cuda, min_time=0.3 if cuda else 0.05, reps=3 if cuda else 1)
    report: dict = {"model": bundle.source, "compile": mode, "stages_us": {}, "host_us": {}, "loops": {}}

    def note(bs: int, kind: str, name: str, value) -> None:
        report[kind].setdefault(f"b{bs}", {})[name] = value
        print(f"  b{bs:<3d} {kind:9s} {name:44s} {value}", flush=True)

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

    def gpu_us(fn, reps: int = 200) -> float:
        """Median over 5 runs of ``reps`` back-to-back calls, GPU time per call (events)."""
        if not cuda:
            t = time.perf_counter()
            fn()
            return round((time.perf_counter() - t) * 1e6, 1)
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
        return gpu_us(graphed(fn).replay) if cuda else gpu_us(fn)

    def one(bs: int) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f} s] batch {bs}", flush=True)
        batches = tp.frame_batches(frames_dev, bs)
        eng = tp.make_engine(model, settings)
        if not cuda:  # the CPU smoke test: the per-shape instances, as on CUDA
            eng.fast = accel.FastPath(model, eng.decoder, (640, 640), settings, fixed_decode=True)
        t = time.perf_counter()
        eng.infer(batches[0])
        note(bs, "loops", "setup_s (compile + capture)", round(time.perf_counter() - t, 1))
        fast = eng.fast
        inst = next(iter(fast._instances.values()))[0]
        # Frames on the device are letterboxed straight into the graph's model input (no static frame buffer).
        static = inst.frames if inst.frames is not None else batches[0].clone()
        with torch.inference_mode():
            x = accel._letterbox_stage(static, 640, 640, dtype, "RGB", False, True)
            if not cuda:
                x = x.contiguous()
            accel.mark_batch_dynamic(x)
            outs = fast._model_fn(x)
            out0 = outs[0].clone()
            raw_out = bundle.module(x)
            note(bs, "loops", "model output dtype (module / backend)", f"{raw_out.dtype} / {outs[0].dtype}")
            src = batches[1]
            # the new letterbox against the old GPU path: 1080p (bit for bit), and other sizes
            gen = torch.Generator(device=dev).manual_seed(bs)
            for fh, fw in ((1080, 1920), (720, 1280), (479, 641)):
                f = torch.randint(0, 256, (bs, fh, fw, 3), dtype=torch.uint8, device=dev, generator=gen)
                a = old_letterbox_stage(f, 640, 640, dtype, "BGR", False, True)
                b = accel._letterbox_stage(f, 640, 640, dtype, "BGR", False, True)
                diff = (a.float() - b.float()).abs()
                note(bs, "loops", f"letterbox new vs old {fw}x{fh}: max diff, elements differing",
                     f"{diff.max().item():.3g}, {int((diff > 0).sum())} of {diff.numel()}")  # fmt: skip
            if cuda:
                note(bs, "stages_us", "copy frames into the input buffer", gpu_us(lambda: static.copy_(src)))
            lb_new_c = fast._letterbox_fn
            lb_old_c = torch.compile(old_letterbox_stage) if mode != "off" else old_letterbox_stage
            for name, fn in (
                ("letterbox old (float + interpolate), eager", old_letterbox_stage),
                ("letterbox new (uint8 gather), eager", accel._letterbox_stage),
                ("letterbox old, compiled", lb_old_c),
                ("letterbox new, compiled", lb_new_c),
            ):
                if name.endswith("compiled") and mode == "off":
                    continue
                note(bs, "stages_us", name, stage_us(lambda fn=fn: fn(static, 640, 640, dtype, "RGB", False, True)))
            note(bs, "stages_us", "model alone (compiled module)", stage_us(lambda: bundle.module(x)))
            note(
                bs,
                "stages_us",
                "model as the fast path runs it (native dtype with the fixed decode)",
                stage_us(lambda: fast._model_fn(x)),
            )
            conf = torch.tensor(0.25, device=dev)
            iou = torch.tensor(0.45, device=dev)
            for name, fn in (("decode_fixed eager", decode_fixed), ("decode_fixed compiled", fast._decode_fn)):
                if name.endswith("compiled") and mode == "off":
                    continue
                note(
                    bs,
                    "stages_us",
                    name,
                    stage_us(
                        lambda fn=fn: fn(
                            out0, conf, iou, geometry=inst.geometry, candidates=fast.candidates, max_det=300
                        )
                    ),
                )
            if inst.graph is not None:
                what = "model+decode" if inst.frames is None else "letterbox+model+decode"
                note(bs, "stages_us", f"whole captured graph ({what})", gpu_us(inst.graph.replay))

                def submit_like():
                    if inst.frames is None:
                        fast._letterbox_direct(src, "RGB", inst.input[: src.shape[0]])
                    else:
                        static.copy_(src)
                    inst.graph.replay()
                    inst.host.copy_(inst.packed, non_blocking=True)

                note(bs, "stages_us", "copy or letterbox + graph + device-to-host copy", gpu_us(submit_like))
        # host side of one synchronous batch
        parts: dict[str, list] = {k: [] for k in ("submit", "wait", "unpack", "detections", "total")}
        for i in range(300):
            f = batches[i % 3]
            t0 = time.perf_counter()
            ticket = fast.submit(f)
            t1 = time.perf_counter()
            if ticket.instance is not None and ticket.instance.event is not None:
                ticket.instance.event.synchronize()
            t2 = time.perf_counter()
            batch = fast.collect(ticket)
            t3 = time.perf_counter()
            batch.detections(eng.labels)
            t4 = time.perf_counter()
            for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                parts[k].append(v)
        for k, v in parts.items():
            note(bs, "host_us", k, round(statistics.median(v) * 1e6, 1))
        if inst.host is not None:
            spans = []
            for _ in range(200):
                t0 = time.perf_counter()
                unpack_fixed(inst.host.numpy(), bs)
                spans.append(time.perf_counter() - t0)
            note(bs, "host_us", "unpack_fixed alone", round(statistics.median(spans) * 1e6, 1))
        # the loops throughput.py times
        lb = tp.letterboxed(batches, dtype)
        if cuda:
            note(bs, "loops", "raw graph, compiled module (frames/s)",
                 tp.raw_graph(bundle.module, lb, bs, timer, channels_last=True)["frames_per_s"])  # fmt: skip
        note(bs, "loops", "core sync Engine.infer (frames/s)", tp.core_sync(eng, batches, bs, timer)["frames_per_s"])
        if cuda:
            note(bs, "loops", "core pipelined (frames/s)", tp.core_pipelined(eng, batches, bs, timer)["frames_per_s"])
            fast.release()
            fast._letterbox_fn = lb_old_c  # the old letterbox inside the graph: frames staged, as host frames are
            fast.direct = False
            eng.infer(batches[0])
            note(bs, "loops", "core pipelined, old letterbox (frames/s)",
                 tp.core_pipelined(eng, batches, bs, timer)["frames_per_s"])  # fmt: skip
            fast.release()
            fast._letterbox_fn = lb_new_c
            fast.direct = True
            eng.infer(batches[0])
            graph = next(iter(fast._instances.values()))[0].graph
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(10):
                    graph.replay()
                torch.cuda.synchronize()
            table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=70)
            report.setdefault("kernels", {})[f"b{bs}"] = table
            print(table, flush=True)

    for bs in (int(b) for b in args.batches.split(",")):
        one(bs)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "profile_core.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("stages_us", "host_us", "loops")}, indent=1))
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
