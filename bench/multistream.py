#!/usr/bin/env python
"""Many streams, one model: ``batch-group`` against one pyinfer per stream, same frames, side by side.

N branches ``appsrc ! pyinfer ! fakesink`` in one pipeline, each fed the same pre-rendered frames (queued before
PLAYING, shallow copies sharing memory), with the detections read at each sink (a pad probe reads them, as a
tracker would):

- ``separate``: one pyinfer per stream, ``batch-size=1``: N model copies, N model calls per frame time;
- ``group``: every pyinfer in ``batch-group=bench`` with ``batch-size=N``: one model, one call for N frames.

Total frames/s = all streams' frames / wall time from the first to the last buffer at the sinks. The two
variants alternate over ``--reps`` runs; medians and their ratio are reported. Also the process's resident
memory after each variant's first run (model copies). Runs on the CPU here, and on a GPU (``--device cuda``).

    .venv/bin/python bench/multistream.py [--streams 4] [--frames 60] [--reps 5] [--size 640x384]
        [--device cpu] [--out PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--frames", type=int, default=60, help="frames per stream per run")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--size", default="640x384", help="frame WIDTHxHEIGHT")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None, help="JSON result (default bench/results/multistream-DATE.json)")
    return p.parse_args(argv)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_once(model: str, n: int, bufs: list, w: int, h: int, frames: int, variant: str, device: str) -> float:
    from pyinfer._gi import Gst, copy_buffer
    from pyinfer.meta import read_detections

    props = "batch-size=1" if variant == "separate" else f"batch-group=bench batch-size={n}"
    desc = " ".join(
        f"appsrc name=src{i} format=time ! pyinfer model-engine={model} device={device} {props} ! "
        f"fakesink name=sink{i} sync=false"
        for i in range(n)
    )
    pipeline = Gst.parse_launch(desc)
    stamps: list[float] = []
    counts = [0]

    def probe(pad, info):
        stamps.append(time.perf_counter())
        counts[0] += len(read_detections(info.get_buffer()))
        return Gst.PadProbeReturn.OK

    caps = Gst.Caps.from_string(f"video/x-raw,format=RGB,width={w},height={h},framerate=30/1")
    for i in range(n):
        src = pipeline.get_by_name(f"src{i}")
        src.set_property("caps", caps)
        for prop in ("max-bytes", "max-buffers", "max-time"):
            if src.find_property(prop) is not None:
                src.set_property(prop, 0)
        pipeline.get_by_name(f"sink{i}").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    pipeline.set_state(Gst.State.PAUSED)
    dur = Gst.SECOND // 30
    for i in range(n):
        src = pipeline.get_by_name(f"src{i}")
        for k in range(frames):
            b = copy_buffer(bufs[k % len(bufs)])
            b.pts, b.duration = k * dur, dur
            src.emit("push-buffer", b)
        src.emit("end-of-stream")
    pipeline.set_state(Gst.State.PLAYING)
    msg = pipeline.get_bus().timed_pop_filtered(600 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    if msg is None or msg.type != Gst.MessageType.EOS:
        raise RuntimeError(f"{variant}: {msg.parse_error()[0].message if msg else 'timeout'}")
    if len(stamps) != n * frames or counts[0] == 0:
        raise RuntimeError(f"{variant}: {len(stamps)} buffers, {counts[0]} detections")
    skip = n  # the first frame of every stream: model warm-up
    return (len(stamps) - skip) / (stamps[-1] - stamps[skip - 1])


def raw_once(model: str, batch: int, frames: int, device: str) -> float:
    """The model alone (no GStreamer, no letterbox or decode): ``frames`` frames in batches of ``batch`` on a 384x384
    input; frames/s. Batch 1 against batch N is what batching can gain on this device at most."""
    import torch

    from pyinfer.backends import load_model

    loaded = load_model(model, device)
    x = torch.rand(batch, 3, 384, 384, device=device)
    with torch.inference_mode():
        for _ in range(3):  # warm-up: TorchScript's profiling executor optimises after its first runs
            loaded.forward(x)
        calls = max(1, frames // batch)
        t0 = time.perf_counter()
        for _ in range(calls):
            loaded.forward(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return calls * batch / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import pyinfer
    from pyinfer._gi import Gst
    from pyinfer.scene import Scene
    from pyinfer.zoo import get_model

    pyinfer.register()
    w, h = (int(v) for v in args.size.split("x"))
    scene = Scene(2024, w, h)
    bufs = [Gst.Buffer.new_wrapped(scene.frame(i)[0].tobytes()) for i in range(16)]
    model = str(get_model().path)
    runs: dict[str, list[float]] = {"separate": [], "group": [], "raw_b1": [], f"raw_b{args.streams}": []}
    rss: dict[str, float] = {}
    for rep in range(args.reps):
        for variant in ("separate", "group") if rep % 2 == 0 else ("group", "separate"):
            fps = run_once(model, args.streams, bufs, w, h, args.frames, variant, args.device)
            runs[variant].append(fps)
            rss.setdefault(variant, _rss_mb())
            print(f"rep {rep} {variant:9s} {fps:8.1f} frames/s", flush=True)
        for b in (1, args.streams):
            fps = raw_once(model, b, args.frames * args.streams, args.device)
            runs[f"raw_b{b}"].append(fps)
            print(f"rep {rep} raw b{b:<4d} {fps:8.1f} frames/s", flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    result = {
        "command": common.command_line(),
        "machine": common.machine_info(),
        "date_utc": common.utc_now(),
        "setup": {"streams": args.streams, "frames_per_stream": args.frames, "size": args.size,
                  "device": args.device, "reps": args.reps, "interleaved": True, "model": "shapes (embedded)"},
        "frames_per_s": {k: common.summarize(v) for k, v in runs.items()},
        "group_over_separate": round(med["group"] / med["separate"], 3),
        # the most batching can give here: the model alone at batch N against batch 1
        "raw_bN_over_raw_b1": round(med[f"raw_b{args.streams}"] / med["raw_b1"], 3),
        "rss_mb_after_first_run": {k: round(v, 1) for k, v in rss.items()},
        "note": "separate: one pyinfer (batch-size=1) per stream; group: batch-group, batch-size=streams; raw_bK: "
        "the model alone at batch K (no GStreamer, letterbox or decode)",
    }  # fmt: skip
    out = args.out or common.RESULTS_DIR / f"multistream-{args.device}-{common.utc_now()[:10]}.json"
    common.write_json(out, result)
    print(f"median frames/s: separate {med['separate']:.1f}, group {med['group']:.1f}, "
          f"ratio {result['group_over_separate']}; the model alone b{args.streams}/b1 "
          f"{result['raw_bN_over_raw_b1']}; wrote {out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
