#!/usr/bin/env python
"""Per-frame cost of ``pytracker`` and ``pyosd`` at 100 objects per frame (medians over interleaved repeats).

Measured, each ``--reps`` times, interleaved:

- ``library``: GStreamer-free steps on pre-built inputs, per frame: ``ByteTracker.update`` (axis-aligned and
  rotated detections) and ``ByteTracker.predict``, on the native core and on the NumPy reference
  (``*_numpy``), ``draw_detections`` into a 1280x720 RGB frame;
- ``element_steps``: what the elements add around the library on a real buffer carrying 100 ROI metas:
  ``read_detections_checked`` (the metadata read both elements do) and writing 100 ``tracking`` params;
- ``pipeline``: ``appsrc ! pytracker ! fakesink`` (native core; ``pytracker_numpy``: ``core=numpy``),
  ``appsrc ! pyosd ! fakesink`` and ``appsrc ! benchnoop ! fakesink`` (a Python element doing nothing) against
  ``appsrc ! identity ! fakesink`` on the same 1280x720 RGB buffers (each carrying 100 ROI metas, queued
  before PLAYING, timed by a probe on fakesink from the second to the last buffer): the element's cost per
  frame is the difference of the per-frame times.

The 100 objects move on straight lines (2..6 px per frame) in a 1280x720 frame, 16..60 px in size, with
scores in 0.3..1 and 3 classes; rotated variants turn at 0.02 rad per frame.

Usage: python bench/elements.py [--quick] [--out PATH] [--reps N] [--frames N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import numpy as np

W, H = 1280, 720
OBJECTS = 100
FPS = 30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: few frames, 3 reps (numbers are not meaningful)")
    p.add_argument("--out", type=Path, default=None, help="JSON result (default bench/results/elements-DATE.json)")
    p.add_argument("--reps", type=int, default=None, help="repeats per variant (default 5, quick 3)")
    p.add_argument("--frames", type=int, default=None, help="frames per run (default 60, quick 10)")
    args = p.parse_args(argv)
    args.reps = args.reps or (3 if args.quick else 5)
    args.frames = args.frames or (10 if args.quick else 60)
    return args


def scene(frames: int, *, rotated: bool, seed: int = 0) -> list:
    """``frames`` Detections of OBJECTS objects moving on straight lines (see the module docs)."""
    from pyinfer.detections import Detections
    from pyinfer.ops.rotated import enclosing_xyxy

    rng = np.random.default_rng(seed)
    size = rng.uniform(16, 60, (OBJECTS, 2))
    start = rng.uniform(size, [W, H] - size, (OBJECTS, 2))
    speed = rng.uniform(2, 6, OBJECTS)[:, None] * np.stack([np.cos(a := rng.uniform(0, 6.3, OBJECTS)), np.sin(a)], 1)
    angle0 = rng.uniform(-1.5, 1.5, OBJECTS)
    cls = rng.integers(0, 3, OBJECTS).astype(np.int32)
    out = []
    for k in range(frames):
        centre = start + speed * k
        angle = angle0 + 0.02 * k if rotated else np.zeros(OBJECTS)
        cxcywhr = np.column_stack([centre, size, angle])
        xyxy = np.clip(enclosing_xyxy(cxcywhr), 0, [W, H, W, H]).astype(np.float32)
        out.append(
            Detections(
                xyxy, rng.uniform(0.3, 1.0, OBJECTS).astype(np.float32), cls,
                cxcywhr=cxcywhr.astype(np.float32) if rotated else None, labels=("circle", "square", "triangle"),
            )
        )  # fmt: skip
    return out


def per_frame_ms(fn, inputs: list) -> float:
    t0 = time.perf_counter()
    for x in inputs:
        fn(x)
    return (time.perf_counter() - t0) / len(inputs) * 1e3


def bench_library(axis: list, rotated: list, frame: np.ndarray) -> dict[str, float]:
    from pyinfer.detections import Detections
    from pyinfer.draw import draw_detections
    from pyinfer.track import ByteTracker

    out = {}
    for backend, suffix in (("native", ""), ("numpy", "_numpy")):
        for name, dets in (("tracker_update_axis", axis), ("tracker_update_rotated", rotated)):
            tracker = ByteTracker(backend=backend)
            for d in dets[:5]:  # tracks exist and are confirmed before timing
                tracker.update(d)
            out[name + suffix] = per_frame_ms(tracker.update, dets[5:])
        # Frames without inference; fewer than max-age (30), so every track is still predicted at the last one.
        out["tracker_predict" + suffix] = per_frame_ms(lambda _, t=tracker: t.predict(), range(20))
    canvas = frame.copy()
    ids = np.arange(1, OBJECTS + 1, dtype=np.uint64)
    tracked = [Detections(d.xyxy, d.confidence, d.class_id, d.cxcywhr, d.labels, tracker_id=ids) for d in rotated]
    draw_detections(canvas, tracked[0])  # glyph cache warm, as after the first frames of a stream
    out["draw_100_rotated_tracked"] = per_frame_ms(lambda d: draw_detections(canvas, d), tracked)
    return out


def buffers(dets: list, *, frame_bytes: bytes) -> list:
    from pyinfer._gi import Gst
    from pyinfer.elements._base import writable
    from pyinfer.meta.roi import write_detections, write_frame_info

    out = []
    for d in dets:
        buf = Gst.Buffer.new_wrapped(frame_bytes)  # own memory per buffer: pyosd draws without a copy
        with writable(buf):
            write_detections(buf, d, unique_id=1)
            write_frame_info(buf, inferred=True, unique_id=1)
        out.append(buf)
    return out


def bench_element_steps(dets: list) -> dict[str, float]:
    from pyinfer.elements._base import writable
    from pyinfer.meta.roi import read_detections_checked, set_track_ids

    bufs = buffers(dets, frame_bytes=bytes(16))
    read = per_frame_ms(read_detections_checked, bufs)
    reads = [read_detections_checked(b) for b in bufs]

    def tag(i: int) -> None:  # as pytracker writes them: one call for the frame
        n = len(reads[i].metas)
        with writable(bufs[i]):
            set_track_ids(reads[i].metas, list(range(n)), list(range(1, n + 1)), predicted=False)

    return {"read_100_metas": read, "write_100_track_ids": per_frame_ms(tag, range(len(bufs)))}


def register_noop() -> None:
    """``benchnoop``: a Python ``BaseTransform`` whose ``do_transform_ip`` returns at once: what any Python
    element pays per buffer before doing anything (PyGObject's dispatch into Python)."""
    from pyinfer._gi import GObject, Gst, GstBase

    if Gst.ElementFactory.find("benchnoop") is not None:
        return
    caps = Gst.Caps.from_string("video/x-raw")

    class BenchNoop(GstBase.BaseTransform):
        __gtype_name__ = "PyinferBenchNoop"
        __gstmetadata__ = ("bench no-op", "Filter", "Returns every buffer untouched, from Python", "pyinfer bench")
        __gsttemplates__ = (
            Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, caps),
            Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, caps),
        )

        def __init__(self) -> None:
            super().__init__()
            self.set_in_place(True)
            self.set_passthrough(False)

        def do_transform_ip(self, buf: Gst.Buffer) -> Gst.FlowReturn:
            return Gst.FlowReturn.OK

    GObject.type_register(BenchNoop)
    Gst.Element.register(None, "benchnoop", Gst.Rank.NONE, BenchNoop)


def run_pipeline(element: str, dets: list) -> float:
    """Per-frame ms through ``appsrc ! ELEMENT ! fakesink``, fresh buffers queued before PLAYING."""
    from pyinfer._gi import Gst

    pipeline = Gst.parse_launch(f"appsrc name=src ! {element} ! fakesink name=sink sync=false")
    src = pipeline.get_by_name("src")
    src.set_property("caps", Gst.Caps.from_string(f"video/x-raw,format=RGB,width={W},height={H},framerate={FPS}/1"))
    src.set_property("format", Gst.Format.TIME)
    for prop in ("max-bytes", "max-buffers", "max-time"):
        if src.find_property(prop) is not None:
            src.set_property(prop, 0)  # unlimited: the whole run is queued before PLAYING
    stamps: list[float] = []
    pipeline.get_by_name("sink").get_static_pad("sink").add_probe(
        Gst.PadProbeType.BUFFER, lambda pad, info: stamps.append(time.perf_counter()) or Gst.PadProbeReturn.OK
    )
    bufs = buffers(dets, frame_bytes=bytes(W * H * 3))
    bus = pipeline.get_bus()
    try:
        pipeline.set_state(Gst.State.PAUSED)
        for i, b in enumerate(bufs):
            b.pts, b.duration = i * Gst.SECOND // FPS, Gst.SECOND // FPS
            src.emit("push-buffer", b)
        del bufs, b  # the pipeline holds the only references: elements get writable buffers without copies
        src.emit("end-of-stream")
        pipeline.set_state(Gst.State.PLAYING)
        msg = bus.timed_pop_filtered(120 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    finally:
        pipeline.set_state(Gst.State.NULL)
    if msg is None or msg.type != Gst.MessageType.EOS:
        raise RuntimeError(f"{element}: {msg.parse_error()[0].message if msg is not None else 'timeout'}")
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1) * 1e3


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import pyinfer

    pyinfer.register()
    register_noop()
    axis, rotated = scene(args.frames + 5, rotated=False), scene(args.frames + 5, rotated=True)
    frame = np.full((H, W, 3), 90, np.uint8)
    runs: dict[str, list[float]] = {}
    for rep in range(args.reps):
        for name, value in bench_library(axis, rotated, frame).items():
            runs.setdefault(f"library.{name}", []).append(value)
        for name, value in bench_element_steps(axis[: args.frames]).items():
            runs.setdefault(f"element_steps.{name}", []).append(value)
        for name, element in (("identity", "identity"), ("pytracker", "pytracker"), ("pyosd", "pyosd")):
            runs.setdefault(f"pipeline.{name}", []).append(run_pipeline(element, rotated[: args.frames]))
        # The same tracker on axis-aligned detections (axis-aligned IoU), against its own identity run.
        runs.setdefault("pipeline.identity_axis", []).append(run_pipeline("identity", axis[: args.frames]))
        runs.setdefault("pipeline.python_noop_axis", []).append(run_pipeline("benchnoop", axis[: args.frames]))
        runs.setdefault("pipeline.pytracker_axis", []).append(run_pipeline("pytracker", axis[: args.frames]))
        # The NumPy reference in the same element, for the ratio (same identity baselines).
        runs.setdefault("pipeline.pytracker_numpy", []).append(
            run_pipeline("pytracker core=numpy", rotated[: args.frames])
        )
        runs.setdefault("pipeline.pytracker_axis_numpy", []).append(
            run_pipeline("pytracker core=numpy", axis[: args.frames])
        )
        print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
    summary = {k: common.summarize(v) for k, v in runs.items()}
    base = summary["pipeline.identity"]["median"]
    overhead = {name: round(summary[f"pipeline.{name}"]["median"] - base, 4) for name in ("pytracker", "pyosd")}
    overhead["pytracker_numpy"] = round(summary["pipeline.pytracker_numpy"]["median"] - base, 4)
    for name in ("pytracker_axis", "pytracker_axis_numpy", "python_noop_axis"):
        overhead[name] = round(summary[f"pipeline.{name}"]["median"] - summary["pipeline.identity_axis"]["median"], 4)
    result = {
        "command": common.command_line(),
        "machine": common.machine_info(),
        "date_utc": common.utc_now(),
        "setup": {
            "objects_per_frame": OBJECTS,
            "frame": f"{W}x{H} RGB",
            "frames_per_run": args.frames,
            "reps": args.reps,
            "pipeline_detections": "rotated (the tracker uses rotated IoU); *_axis: axis-aligned detections",
            "tracker_backends": "pytracker*: native C core (core=auto); *_numpy: the NumPy reference",
        },
        "ms_per_frame": summary,
        "element_ms_per_frame_over_identity": overhead,
    }
    out = args.out or common.RESULTS_DIR / f"elements-{common.utc_now()[:10]}.json"
    common.write_json(out, result)
    for key, value in summary.items():
        print(f"{key:40s} {value['median']:8.3f} ms/frame  (min {value['min']:.3f}, max {value['max']:.3f})")
    for key, value in overhead.items():
        print(f"{key} over identity: {value:.3f} ms/frame")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
