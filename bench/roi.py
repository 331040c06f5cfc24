"""ROI metadata read/write cost per meta: the C fast path of pyinfer.meta.roi against its PyGObject path.

100 rotated detections per buffer (bench/elements.py's scene) plus the frame record. Each rep times every
operation on both paths, interleaved; medians over reps of the per-meta µs.

    .venv/bin/python bench/roi.py [--reps 7] [--frames 30]
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
    p.add_argument("--out", type=Path, default=None, help="JSON result (default bench/results/roi-DATE.json)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pyinfer._gi import Gst

    Gst.init(None)
    from pyinfer.elements._base import writable
    from pyinfer.meta import _roi_c, roi

    if _roi_c.load() is None:
        print("no C fast path on this system", file=sys.stderr)
        return 1
    dets = elements.scene(args.frames, rotated=True)
    n = elements.OBJECTS

    def timed(fn, items) -> float:
        t0 = time.perf_counter()
        for item in items:
            fn(item)
        return (time.perf_counter() - t0) / (len(items) * n) * 1e6

    def run_once() -> dict[str, float]:
        bufs = [Gst.Buffer.new_allocate(None, 16, None) for _ in dets]

        def write(i: int) -> None:
            with writable(bufs[i]):
                roi.write_detections(bufs[i], dets[i], unique_id=1)
                roi.write_frame_info(bufs[i], inferred=True, unique_id=1)

        out = {"write_detections": timed(write, range(len(bufs)))}
        out["read_detections"] = timed(roi.read_detections, bufs)
        out["read_detections_checked"] = timed(roi.read_detections_checked, bufs)
        reads = [roi.read_detections_checked(b, tracking=False) for b in bufs]

        def tag(i: int) -> None:
            with writable(bufs[i]):
                for k, meta in enumerate(reads[i].metas):
                    roi.set_track_id(meta, k + 1, predicted=False)

        def tag_all(i: int) -> None:  # what pytracker's update does: read, then tag every detection
            read = roi.read_detections_checked(bufs[i], tracking=False)
            with writable(bufs[i]):
                roi.set_track_ids(read.metas, range(len(read.metas)), range(1, n + 1), predicted=False)

        out["set_track_id_on_read_metas"] = timed(tag, range(len(bufs)))
        out["read_checked_then_set_track_ids"] = timed(tag_all, range(len(bufs)))
        out["read_frame_info_per_frame"] = timed(roi.read_frame_info, bufs) * n
        return out

    runs: dict[str, list[float]] = {}
    real = roi._fast
    for rep in range(args.reps):
        for path in ("pygobject", "c") if rep % 2 else ("c", "pygobject"):
            roi._fast = real if path == "c" else (lambda: None)
            try:
                for key, value in run_once().items():
                    runs.setdefault(f"{path}.{key}", []).append(value)
            finally:
                roi._fast = real
    summary = {k: common.summarize(v) for k, v in sorted(runs.items())}
    result = {
        "command": common.command_line(),
        "machine": common.machine_info(),
        "date_utc": common.utc_now(),
        "setup": {
            "metas_per_buffer": n,
            "detections": "rotated",
            "buffers_per_timing": args.frames,
            "reps": args.reps,
            "interleaved": True,
        },
        "us_per_meta": summary,
        "note": "read_frame_info_per_frame is µs per frame; read_checked_then_set_track_ids is one read and one "
        "tag per meta (pytracker's update without the tracker)",
    }
    out = args.out or common.RESULTS_DIR / f"roi-{common.utc_now()[:10]}.json"
    common.write_json(out, result)
    for key, value in summary.items():
        print(f"{key:45s} {value['median']:8.2f} µs  (min {value['min']:.2f}, max {value['max']:.2f})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
