#!/usr/bin/env python
"""CPU benchmark: raw model forward vs Engine.infer vs the full ``pyinfer`` GStreamer pipeline, on the same frames.

Variants (each repeated ``--reps`` times, interleaved, medians reported):

- ``raw_b{1,4}``: the embedded TorchScript module alone on pre-letterboxed inputs (torch.inference_mode);
- ``engine_b{1,4}``: ``Engine.infer`` on (B, 720, 1280, 3) uint8 frames (letterbox + forward + decode);
- ``pipeline_b{1,4}``: ``appsrc ! pyinfer batch-size=B ! fakesink``, 1280x720 RGB;
- ``source_only``: ``appsrc ! fakesink`` with the same buffers (what the harness costs);
- ``tiny_identity`` / ``tiny_pyinfer``: 640x480 through ``identity`` vs ``pyinfer`` running a trivial 64x64
  model, giving the element's per-buffer overhead in microseconds.

Throughput of every variant is frames / wall time over one run after warm-up, so noise spikes weigh the same
on all of them. Pipeline runs are timed by a pad probe on fakesink's sink pad, from the last buffer of the
warm-up batches to the last buffer. The appsrc queue is filled before PLAYING with shallow copies of ~60
pre-rendered frames (shared memory, distinct timestamps), so no Python runs on the source side while timing.

Usage: python bench/cpu_pipeline.py [--quick] [--out PATH] [--reps N] [--frames N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

from pyinfer.engine import on_fresh_thread

warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.* deprecation
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

W, H = 1280, 720
TINY_W, TINY_H = 640, 480
FPS_CAPS = 30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: few frames, 3 reps (numbers are not meaningful)")
    p.add_argument("--out", type=Path, default=None, help="JSON result path (default bench/results/cpu-DATE.json)")
    p.add_argument("--reps", type=int, default=None, help="repeats per variant (default 5, quick 3)")
    p.add_argument("--frames", type=int, default=None, help="timed frames per run (default 60, quick 8)")
    p.add_argument("--warmup-batches", type=int, default=None, help="untimed batches per run (default 3, quick 1)")
    p.add_argument("--tiny-buffers", type=int, default=None, help="timed buffers per tiny run (default 600, quick 40)")
    p.add_argument("--seed", type=int, default=0, help="scene seed")
    p.add_argument("--pipelines-only", action="store_true",
                   help="time only pipeline_b1 and pipeline_b4 once each and print their frames/s as JSON (what "
                   "bench/element_ab.py runs in a child process per pyinfer version)")  # fmt: skip
    args = p.parse_args(argv)
    q = args.quick
    args.reps = args.reps or (3 if q else 5)
    args.frames = args.frames or (8 if q else 60)
    args.warmup_batches = args.warmup_batches or (1 if q else 3)
    args.tiny_buffers = args.tiny_buffers or (40 if q else 600)
    args.distinct = 8 if q else 60
    args.breakdown_iters = 6 if q else 40
    if args.reps < 1 or args.frames < 4:
        p.error("--reps must be >= 1 and --frames >= 4")
    return args


def in_thread(fn, *args):
    """``fn(*args)`` on a short-lived thread (``pyinfer.engine.on_fresh_thread``).

    All torch work of the benchmark runs this way. libgomp keeps one OpenMP team per thread that ever ran a
    parallel region, alive until that thread exits, and once the process has more OpenMP threads than CPUs
    every team stops spinning at barriers (GOMP throttled spin count): each parallel region then pays futex
    wake-ups. Torch work left on the main thread would therefore slow the pipeline's streaming thread down
    (and vice versa); short-lived threads leave no team behind.
    """
    return on_fresh_thread(fn, *args)


# -- inputs -----------------------------------------------------------------------------------------------
def render(seed: int, w: int, h: int, n: int) -> list:
    from pyinfer.scene.generator import Scene

    scene = Scene(seed, w, h)
    return [scene.frame(i)[0] for i in range(n)]


def gst_buffers(frames: list) -> list:
    """One Gst.Buffer per frame (data copied once); runs push shallow copies of these."""
    from pyinfer._gi import Gst

    return [Gst.Buffer.new_wrapped(f.tobytes()) for f in frames]


# -- raw model / engine -------------------------------------------------------------------------------------
def time_loop(fn, inputs: list, batch: int, warmup: int, frames: int) -> dict:
    """Call fn on inputs (cycled): ``warmup`` untimed calls, then enough calls for ``frames`` frames."""
    iters = max(1, frames // batch)
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    times = []
    t0 = time.perf_counter()
    for i in range(iters):
        t = time.perf_counter()
        fn(inputs[(warmup + i) % len(inputs)])
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    return {"fps": iters * batch / total, "iter_median_fps": batch / statistics.median(times)}


def load_raw(path: Path):
    import torch

    module = torch.jit.load(str(path), map_location="cpu")
    module.eval()

    def forward(x):
        with torch.inference_mode():
            return module(x)

    return forward


# -- pipelines ----------------------------------------------------------------------------------------------
def run_pipeline(desc: str, bufs: list, w: int, h: int, n_push: int, skip: int, timeout_s: float = 300.0) -> dict:
    """Fill appsrc with n_push buffers + EOS, play, time buffers at the sink from buffer ``skip`` on."""
    from pyinfer._gi import Gst

    try:
        from pyinfer._gi import copy_buffer
    except ImportError:  # an older pyinfer (bench/element_ab.py runs this file against one)
        copy_buffer = Gst.Buffer.copy

    pipeline = Gst.parse_launch(desc)
    src, sink = pipeline.get_by_name("src"), pipeline.get_by_name("sink")
    src.set_property(
        "caps", Gst.Caps.from_string(f"video/x-raw,format=RGB,width={w},height={h},framerate={FPS_CAPS}/1")
    )
    src.set_property("format", Gst.Format.TIME)
    for prop in ("max-bytes", "max-buffers", "max-time"):
        if src.find_property(prop) is not None:
            src.set_property(prop, 0)  # unlimited: the whole run is queued before PLAYING
    from pyinfer.meta import read_detections  # whichever metadata the element wrote (GstAnalytics or ROI)

    stamps: list[float] = []
    metas = [0]

    def probe(pad, info):
        stamps.append(time.perf_counter())
        metas[0] += len(read_detections(info.get_buffer()))
        return Gst.PadProbeReturn.OK

    sink.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    bus = pipeline.get_bus()
    try:
        if pipeline.set_state(Gst.State.PAUSED) == Gst.StateChangeReturn.FAILURE:
            msg = bus.timed_pop_filtered(0, Gst.MessageType.ERROR)
            raise RuntimeError(f"{desc}: could not start: {msg.parse_error()[0].message if msg else '?'}")
        dur = Gst.SECOND // FPS_CAPS
        for i in range(n_push):
            b = copy_buffer(bufs[i % len(bufs)])  # shallow: shares the frame's memory
            b.pts, b.duration = i * dur, dur
            src.emit("push-buffer", b)
            del b
        src.emit("end-of-stream")
        pipeline.set_state(Gst.State.PLAYING)
        msg = bus.timed_pop_filtered(int(timeout_s * Gst.SECOND), Gst.MessageType.EOS | Gst.MessageType.ERROR)
    finally:
        pipeline.set_state(Gst.State.NULL)
    if msg is None or msg.type != Gst.MessageType.EOS:
        detail = msg.parse_error()[0].message if msg is not None else "timeout"
        raise RuntimeError(f"{desc}: {detail}")
    if len(stamps) != n_push:
        raise RuntimeError(f"{desc}: {len(stamps)} of {n_push} buffers reached the sink")
    return {
        "fps": (n_push - skip) / (stamps[-1] - stamps[skip - 1]),
        "detections_per_frame": metas[0] / n_push,
    }


# -- breakdown ----------------------------------------------------------------------------------------------
def with_idle_team(fn, *args):
    """``in_thread(fn, *args)`` while another thread that has run an OpenMP region sits idle.

    That is the pipeline's situation: the element loads and warms up its model on the thread that changes the
    state (the application's), then infers on the streaming thread, so two OpenMP teams are alive.
    """
    import torch

    ready, done = threading.Event(), threading.Event()

    def hold() -> None:
        torch.ones(1 << 20).add_(1)  # an elementwise op large enough for at::parallel_for: creates a team
        ready.set()
        done.wait()

    holder = threading.Thread(target=hold, name="bench-idle-team")
    holder.start()
    ready.wait()
    try:
        return in_thread(fn, *args)
    finally:
        done.set()
        holder.join()


def breakdown_b1(engine, bufs: list, w: int, h: int, iters: int) -> dict:
    """The steps of the element's batch-1 path (``_infer_now``) timed one by one, median ms each."""
    import torch

    from pyinfer._gi import Gst, copy_buffer
    from pyinfer.detections import Detections
    from pyinfer.elements._base import writable
    from pyinfer.frames.system import FrameLayout, frame_array
    from pyinfer.meta.roi import write_detections
    from pyinfer.ops.letterbox import letterbox

    layout = FrameLayout.from_caps(Gst.Caps.from_string(f"video/x-raw,format=RGB,width={w},height={h}"))
    steps: dict[str, list[float]] = {
        k: [] for k in ("map+from_numpy", "letterbox", "forward", "decode", "detections", "write_meta+unmap")
    }
    out = None
    n_dets = 0
    for i in range(iters + 2):
        buf = copy_buffer(bufs[i % len(bufs)])
        t0 = time.perf_counter()
        _, info = buf.map(Gst.MapFlags.READ)
        frames = torch.from_numpy(frame_array(info.data, layout.for_buffer(buf)))[None]
        t1 = time.perf_counter()
        x, geo = letterbox(frames, engine.input_width, engine.input_height, out=out, dtype=engine.model.dtype)
        out = x
        t2 = time.perf_counter()
        outputs = engine.model.forward(x)
        t3 = time.perf_counter()
        batch = engine.decoder.decode(outputs, geo, conf_threshold=0.25, iou_threshold=0.45, max_detections=300)
        t4 = time.perf_counter()
        s = batch.split()[0]
        dets = Detections(batch.xyxy[s], batch.confidence[s], batch.class_id[s], labels=engine.labels)
        t5 = time.perf_counter()
        del frames
        buf.unmap(info)
        with writable(buf):
            write_detections(buf, dets, unique_id=15)
        t6 = time.perf_counter()
        if i < 2:
            continue  # warm-up
        n_dets += len(dets)
        for k, (a, b) in zip(steps, [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6)]):
            steps[k].append((b - a) * 1e3)
    med = {k: round(statistics.median(v), 3) for k, v in steps.items()}
    return {"median_ms": med, "sum_ms": round(sum(med.values()), 3), "detections_per_frame": n_dets / iters}


def prepare(frames: list, model_path: Path, tmp: Path) -> dict:
    """Engines, batches, letterboxed inputs, raw modules and the tiny model (run on a short-lived thread)."""
    import torch

    from pyinfer.engine import Engine, EngineConfig
    from pyinfer.ops.letterbox import letterbox

    t_frames = [torch.from_numpy(f) for f in frames]
    # One engine and one raw module per batch size, as each pipeline has its own.
    engines = {b: Engine.build(EngineConfig(model=str(model_path), device="cpu")) for b in (1, 4)}
    iw, ih = engines[1].input_width, engines[1].input_height
    batches = {
        1: [t[None] for t in t_frames],
        4: [torch.stack(t_frames[i : i + 4]) for i in range(0, len(t_frames) - 3, 4)],
    }
    tiny = common.build_tiny_model(tmp / "tiny.torchscript")
    return {
        "engines": engines,
        "batches": batches,
        "lb_inputs": {b: [letterbox(x, iw, ih)[0].clone() for x in batches[b]] for b in (1, 4)},
        "raw": {b: load_raw(model_path) for b in (1, 4)},
        "tiny_path": tiny,
        "tiny_engine": Engine.build(EngineConfig(model=str(tiny), device="cpu")),
    }


# -- main ---------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wall0 = time.perf_counter()
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        print(
            f"warning: load average {load_before[0]:.2f} before start: something else is using the CPU, "
            "numbers will be noisy",
            file=sys.stderr,
        )
    import pyinfer
    from pyinfer.zoo import get_model

    pyinfer.register()
    model_path = get_model().path
    tmp = tempfile.TemporaryDirectory(prefix="pyinfer-bench-")

    # Inputs, all prepared before any timing (torch work on a short-lived thread, see in_thread).
    frames = render(args.seed, W, H, args.distinct)
    tiny_frames = render(args.seed + 1, TINY_W, TINY_H, min(args.distinct, 16))
    bufs, tiny_bufs = gst_buffers(frames), gst_buffers(tiny_frames)
    if args.pipelines_only:
        import json

        out = {}
        for b in (1, 4):
            desc = (f"appsrc name=src ! pyinfer model-engine={model_path} device=cpu batch-size={b} "
                    "! fakesink name=sink sync=false")  # fmt: skip
            out[f"pipeline_b{b}"] = in_thread(
                run_pipeline, desc, bufs, W, H, args.warmup_batches * b + args.frames, args.warmup_batches * b
            )["fps"]
        print(json.dumps(out), flush=True)
        return 0
    prep = in_thread(prepare, frames, model_path, Path(tmp.name))
    engines, batches, lb_inputs, raw = prep["engines"], prep["batches"], prep["lb_inputs"], prep["raw"]
    tiny_path = prep["tiny_path"]
    wb = args.warmup_batches

    def pipe(b: int) -> dict:
        return run_pipeline(
            f"appsrc name=src ! pyinfer model-engine={model_path} device=cpu batch-size={b} "
            "! fakesink name=sink sync=false",
            bufs,
            W,
            H,
            n_push=wb * b + args.frames,
            skip=wb * b,
        )

    tiny_skip = 10
    tiny_n = tiny_skip + args.tiny_buffers
    variants = {
        "raw_b1": lambda: time_loop(raw[1], lb_inputs[1], 1, wb, args.frames),
        "engine_b1": lambda: time_loop(engines[1].infer, batches[1], 1, wb, args.frames),
        "pipeline_b1": lambda: pipe(1),
        "raw_b4": lambda: time_loop(raw[4], lb_inputs[4], 4, wb, args.frames),
        "engine_b4": lambda: time_loop(engines[4].infer, batches[4], 4, wb, args.frames),
        "pipeline_b4": lambda: pipe(4),
        "source_only": lambda: run_pipeline(
            "appsrc name=src ! fakesink name=sink sync=false", bufs, W, H, n_push=wb + args.frames * 4, skip=wb
        ),
        "tiny_identity": lambda: run_pipeline(
            "appsrc name=src ! identity ! fakesink name=sink sync=false", tiny_bufs, TINY_W, TINY_H, tiny_n, tiny_skip
        ),
        "tiny_pyinfer": lambda: run_pipeline(
            f"appsrc name=src ! pyinfer model-engine={tiny_path} device=cpu ! fakesink name=sink sync=false",
            tiny_bufs,
            TINY_W,
            TINY_H,
            tiny_n,
            tiny_skip,
        ),
    }
    runs: dict[str, list[dict]] = {k: [] for k in variants}
    prep_s = time.perf_counter() - wall0
    for rep in range(args.reps):
        for name, fn in variants.items():
            # Pipelines too: the element's start-up (model load + warm-up) runs on the thread that sets the
            # state, as in an application, and that thread is gone before the next variant.
            runs[name].append(in_thread(fn))
        print(f"rep {rep + 1}/{args.reps} done ({time.perf_counter() - wall0:.0f} s)", file=sys.stderr, flush=True)

    fps = {k: common.summarize([r["fps"] for r in v]) for k, v in runs.items()}
    med = {k: v["median"] for k, v in fps.items()}
    overhead_us = [(1 / p["fps"] - 1 / i["fps"]) * 1e6 for p, i in zip(runs["tiny_pyinfer"], runs["tiny_identity"])]

    def paired(a: str, b: str) -> float:
        return round(statistics.median(x["fps"] / y["fps"] for x, y in zip(runs[a], runs[b])), 4)

    ratios = {
        "pipeline_over_raw_b1": round(med["pipeline_b1"] / med["raw_b1"], 4),
        "pipeline_over_raw_b4": round(med["pipeline_b4"] / med["raw_b4"], 4),
        "engine_over_raw_b1": round(med["engine_b1"] / med["raw_b1"], 4),
        "engine_over_raw_b4": round(med["engine_b4"] / med["raw_b4"], 4),
        "pipeline_over_engine_b1": round(med["pipeline_b1"] / med["engine_b1"], 4),
        "pipeline_over_engine_b4": round(med["pipeline_b4"] / med["engine_b4"], 4),
        "paired_median": {
            "pipeline_over_raw_b1": paired("pipeline_b1", "raw_b1"),
            "pipeline_over_raw_b4": paired("pipeline_b4", "raw_b4"),
            "engine_over_raw_b1": paired("engine_b1", "raw_b1"),
            "engine_over_raw_b4": paired("engine_b4", "raw_b4"),
        },
    }
    it = args.breakdown_iters
    breakdown = {
        "note": "element batch-1 steps outside GStreamer, median ms; 'alone': the only OpenMP team in the "
        "process; 'second_team': another thread's OpenMP team alive, as in the pipeline",
        "shapes_1280x720": {
            "alone": in_thread(breakdown_b1, engines[1], bufs, W, H, it),
            "second_team": with_idle_team(breakdown_b1, engines[1], bufs, W, H, it),
        },
        "tiny_640x480": {
            "alone": in_thread(breakdown_b1, prep["tiny_engine"], tiny_bufs, TINY_W, TINY_H, it * 5),
            "second_team": with_idle_team(breakdown_b1, prep["tiny_engine"], tiny_bufs, TINY_W, TINY_H, it * 5),
        },
        "pipeline_b1_ms_per_frame": round(1e3 / med["pipeline_b1"], 3),
        "raw_b1_ms_per_frame": round(1e3 / med["raw_b1"], 3),
    }

    result = {
        "benchmark": "cpu_pipeline",
        "command": common.command_line(),
        "date_utc": common.utc_now(),
        "machine": common.machine_info(),
        "settings": {
            "quick": args.quick,
            "reps": args.reps,
            "frames_per_run": args.frames,
            "warmup_batches": args.warmup_batches,
            "distinct_frames": args.distinct,
            "frame_size": [W, H],
            "model": str(model_path),
            "model_input": [engines[1].input_width, engines[1].input_height],
            "tiny_frame_size": [TINY_W, TINY_H],
            "tiny_buffers_per_run": args.tiny_buffers,
            "sink": "fakesink with a buffer pad probe (timestamps + ROI meta count); no appsink",
            "order": "interleaved: " + " ".join(variants),
        },
        "variants": {
            k: {
                **fps[k],
                **(
                    {"iter_median_fps": common.summarize([r["iter_median_fps"] for r in runs[k]])}
                    if "iter_median_fps" in runs[k][0]
                    else {}
                ),
                **(
                    {"detections_per_frame": runs[k][0]["detections_per_frame"]}
                    if "detections_per_frame" in runs[k][0]
                    else {}
                ),
            }
            for k in variants
        },
        "element_overhead_us_per_buffer": common.summarize(overhead_us),
        "ratios": ratios,
        "breakdown_b1": breakdown,
        "load_average": {"before": [round(v, 2) for v in load_before], "after": [round(v, 2) for v in os.getloadavg()]},
        "wall_s": {"prepare": round(prep_s, 1), "total": round(time.perf_counter() - wall0, 1)},
    }
    out = common.write_json(args.out or common.default_out(), result)
    print_table(result)
    print(f"\nwrote {out}")
    tmp.cleanup()
    return 0


def print_table(r: dict) -> None:
    v = r["variants"]
    labels = {
        "raw_b1": "raw forward (pre-letterboxed)",
        "engine_b1": "Engine.infer (letterbox+fwd+decode)",
        "pipeline_b1": "appsrc ! pyinfer ! fakesink",
        "raw_b4": "raw forward (pre-letterboxed)",
        "engine_b4": "Engine.infer (letterbox+fwd+decode)",
        "pipeline_b4": "appsrc ! pyinfer ! fakesink",
        "source_only": "appsrc ! fakesink (harness)",
        "tiny_identity": "640x480 appsrc ! identity ! fakesink",
        "tiny_pyinfer": "640x480 appsrc ! pyinfer(tiny) ! fakesink",
    }
    m = r["machine"]
    print(f"\n{m['cpu_model']}, {m['cpu_count']} cores, torch {m['torch']} ({m['torch_threads']} threads), ", end="")
    print(m["gstreamer"])
    print(f"{r['settings']['reps']} interleaved reps, {r['settings']['frames_per_run']} timed frames per run\n")
    print(f"{'variant':<44}{'B':>3}{'median fps':>12}{'min':>10}{'max':>10}")
    for k, label in labels.items():
        b = "4" if k.endswith("b4") else "1"
        print(f"{label:<44}{b:>3}{v[k]['median']:>12.1f}{v[k]['min']:>10.1f}{v[k]['max']:>10.1f}")
    o = r["element_overhead_us_per_buffer"]
    print(f"\npyinfer per-buffer overhead (tiny model, 640x480): {o['median']:.0f} us (runs {o['runs']})")
    ra = r["ratios"]
    for name, target in (("pipeline_over_raw", " (target >= 0.90)"), ("engine_over_raw", ""),
                         ("pipeline_over_engine", "")):  # fmt: skip
        b1, b4 = ra[f"{name}_b1"], ra[f"{name}_b4"]
        print(f"{name.replace('_over_', '/'):<16} b1 {b1:.3f}{target:<18} b4 {b4:.3f}")
    bd = r["breakdown_b1"]
    print("\nbatch-1 element steps outside GStreamer, median ms (second team: another OpenMP team alive, as in")
    print("the pipeline, where the model was warmed up on the application thread):")
    for model in ("shapes_1280x720", "tiny_640x480"):
        for case, d in bd[model].items():
            steps = "  ".join(f"{k} {t:.2f}" for k, t in d["median_ms"].items())
            print(f"  {model:<16}{case:<12} {steps}  | sum {d['sum_ms']:.2f}")
    print(
        f"  pipeline b1 {bd['pipeline_b1_ms_per_frame']:.2f} ms/frame, raw b1 {bd['raw_b1_ms_per_frame']:.2f} ms/frame"
    )


if __name__ == "__main__":
    sys.exit(main())
