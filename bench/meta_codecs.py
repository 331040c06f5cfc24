"""Metadata cost per detection on each plain-GStreamer codec: GstAnalytics against ROI meta.

100 rotated detections per buffer (bench/elements.py's scene) plus the frame record, written by each codec of
:mod:`pyinfer.meta.codecs` and read back by :func:`pyinfer.meta.read_detections` /
``read_detections_checked``; pytracker's update step (checked read, then one track id per detection) too.
Codecs interleaved in every rep; medians over reps of µs per detection. Needs GStreamer >= 1.24 for the
analytics rows (``.ci/debian13.sh --run .venv/bin/python bench/meta_codecs.py`` runs it on 1.26).

    .venv/bin/python bench/meta_codecs.py [--reps 7] [--frames 30] [--out PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

import elements


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--frames", type=int, default=30, help="buffers per timing")
    p.add_argument("--out", type=Path, default=None, help="JSON result (default bench/results/meta-codecs-DATE.json)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pyinfer._gi import Gst

    Gst.init(None)
    from pyinfer.elements._base import writable
    from pyinfer.meta import analytics, read_detections, read_detections_checked, roi
    from pyinfer.meta.codecs import codec

    names = ["roi", "analytics"] if analytics.available() else ["roi"]
    dets = elements.scene(args.frames, rotated=True)
    n = elements.OBJECTS

    def timed(fn, items) -> float:
        t0 = time.perf_counter()
        for item in items:
            fn(item)
        return (time.perf_counter() - t0) / (len(items) * n) * 1e6

    def run_once(name: str) -> dict[str, float]:
        c = codec(name)
        bufs = [Gst.Buffer.new_allocate(None, 16, None) for _ in dets]

        def write(i: int) -> None:
            with writable(bufs[i]):
                c.write_detections(bufs[i], dets[i], unique_id=1, model_id=0)
                c.write_frame_info(bufs[i], inferred=True, unique_id=1, model_id=0)

        out = {"write_detections": timed(write, range(len(bufs)))}
        out["read_detections"] = timed(read_detections, bufs)
        out["read_detections_checked"] = timed(read_detections_checked, bufs)

        def track(i: int) -> None:  # pytracker's update without the tracker
            read = read_detections_checked(bufs[i], tracking=False)
            with writable(bufs[i]):
                if isinstance(read, analytics.CheckedDetections):
                    analytics.set_track_ids(bufs[i], read.metas, range(1, n + 1), pts=0)
                else:
                    roi.set_track_ids(read.metas, range(len(read.metas)), range(1, n + 1), predicted=False)

        out["read_checked_then_set_track_ids"] = timed(track, range(len(bufs)))
        return out

    runs: dict[str, list[float]] = {}
    for rep in range(args.reps):
        for name in names if rep % 2 else reversed(names):
            for key, value in run_once(name).items():
                runs.setdefault(f"{name}.{key}", []).append(value)
    summary = {k: common.summarize(v) for k, v in sorted(runs.items())}
    result = {
        "command": common.command_line(),
        "machine": common.machine_info(),
        "gstreamer": Gst.version_string(),
        "date_utc": common.utc_now(),
        "setup": {
            "detections_per_buffer": n,
            "detections": "rotated",
            "buffers_per_timing": args.frames,
            "reps": args.reps,
            "interleaved": True,
        },
        "us_per_detection": summary,
    }
    out = args.out or common.RESULTS_DIR / f"meta-codecs-{common.utc_now()[:10]}.json"
    common.write_json(out, result)
    for key, value in summary.items():
        print(f"{key:45s} {value['median']:8.2f} µs  (min {value['min']:.2f}, max {value['max']:.2f})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
