#!/usr/bin/env python
"""Tracking quality on synthetic scenes: ``appsrc ! pyinfer (embedded model) ! pytracker ! appsink``.

For each ``--interval`` value, renders ``Scene(seed, width, height)`` frames 0..N-1, runs them through the
pipeline and scores the track ids against the generator's object identities (MOTA, IDF1, ID switches, ...;
:mod:`pyinfer.track.metrics`). Writes ``bench/results/tracking-<UTC date>.json`` with the command, machine
and date.

Usage: python bench/tracking.py [--frames 150] [--seed 11] [--width 640] [--height 384] [--interval 0 2] [--out P]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--seed", type=int, default=11, help="scene seed (held out from training)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=384)
    p.add_argument("--interval", type=int, nargs="+", default=[0, 2], help="pyinfer interval values to run")
    p.add_argument("--tracker", default="", help="extra pytracker properties, e.g. 'class-aware=true'")
    p.add_argument("--out", type=Path, default=None, help="JSON result (default bench/results/tracking-DATE.json)")
    return p.parse_args(argv)


def track(frames: list[np.ndarray], interval: int, tracker_props: str) -> tuple[list, float]:
    """Run the frames through pyinfer ! pytracker; returns the read-back detections per frame and seconds."""
    from pyinfer._gi import Gst
    from pyinfer.meta import read_detections
    from pyinfer.zoo import get_model

    h, w, _ = frames[0].shape
    pipeline = Gst.parse_launch(
        f"appsrc name=src format=time ! pyinfer model-engine={get_model().path} interval={interval} ! "
        f"pytracker {tracker_props} ! appsink name=sink sync=false emit-signals=true"
    )
    src = pipeline.get_by_name("src")
    src.set_property("caps", Gst.Caps.from_string(f"video/x-raw,format=RGB,width={w},height={h},framerate=30/1"))
    out: list = []

    def on_sample(sink):
        out.append(read_detections(sink.emit("pull-sample").get_buffer()))
        return Gst.FlowReturn.OK

    pipeline.get_by_name("sink").connect("new-sample", on_sample)
    stride = (w * 3 + 3) // 4 * 4  # GstVideoInfo's RGB rows: padded to 4 bytes
    t0 = time.perf_counter()
    pipeline.set_state(Gst.State.PLAYING)
    for i, frame in enumerate(frames):
        data = np.zeros((h, stride), np.uint8)
        data[:, : w * 3] = frame.reshape(h, w * 3)
        buf = Gst.Buffer.new_wrapped(data.tobytes())
        buf.pts, buf.duration = i * Gst.SECOND // 30, Gst.SECOND // 30
        src.emit("push-buffer", buf)
    src.emit("end-of-stream")
    msg = pipeline.get_bus().timed_pop_filtered(600 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    seconds = time.perf_counter() - t0
    pipeline.set_state(Gst.State.NULL)
    if msg is None or msg.type != Gst.MessageType.EOS:
        raise RuntimeError(msg.parse_error()[0].message if msg is not None else "timeout")
    return out, seconds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import pyinfer
    from pyinfer.scene import Scene
    from pyinfer.track.metrics import evaluate_tracking, truth_detections

    pyinfer.register()
    scene = Scene(args.seed, args.width, args.height)
    frames, truth = [], []
    for i in range(args.frames):
        image, objects = scene.frame(i)
        frames.append(image)
        truth.append(truth_detections(objects))
    runs = {}
    for interval in args.interval:
        hyp, seconds = track(frames, interval, args.tracker)
        metrics = evaluate_tracking(hyp, truth)
        runs[f"interval_{interval}"] = {**metrics.as_dict(), "seconds": round(seconds, 2)}
        print(f"interval={interval}: {metrics}  ({seconds:.1f} s)")
    result = {
        "command": common.command_line(),
        "machine": common.machine_info(),
        "date_utc": common.utc_now(),
        "scene": {"seed": args.seed, "width": args.width, "height": args.height, "frames": args.frames},
        "model": "shapes (embedded)",
        "tracker": args.tracker or "defaults",
        "runs": runs,
    }
    out = args.out or common.RESULTS_DIR / f"tracking-{common.utc_now()[:10]}.json"
    common.write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
