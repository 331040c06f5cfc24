#!/usr/bin/env python
"""The element's own cost per frame on the CPU, the model taken out: two versions side by side.

``appsrc ! pyinfer batch-size=B ! fakesink`` with a probe on the sink that reads every frame's detections (as
bench/gpu/element.py does), and ``Engine.submit``/``Engine.collect`` replaced by a stub that returns empty
detections at once: what is left is GStreamer, the streaming thread (map, batch, staging copies) and the worker
(submit/collect calls, metadata, pushes), the work that runs beside the GPU on the H200 and shares one GIL.

    git worktree add /tmp/pyinfer-old <commit>   # + the C helpers (cp src/pyinfer/*/*.so) as element_ab.py says
    .venv/bin/python bench/element_overhead.py --old /tmp/pyinfer-old/src --reps 5

Variants (frames/s, and microseconds per frame over ``appsrc ! identity ! fakesink`` on the same frames):
``small_b1`` and ``small_b16`` (320x240 RGB: per-frame handling), ``hd_b16`` (1920x1080 RGB: the host-frame
path's staging copies on the copy threads), ``group8_b8`` (issue #13: eight 320x240 streams, one ``pyinfer`` each in
one ``batch-group`` of batch 8, against eight ``identity`` branches: the group's per-frame cost beside the GPU).
Each run is a child process with PYTHONPATH on one version's src,
the versions alternating (A B B A ...); reported: medians and the median of the per-pair ratios new/old.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

#: name -> (width, height, batch, frames pushed)
VARIANTS = {
    "small_b1": (320, 240, 1, 3000),
    "small_b16": (320, 240, 16, 3200),
    "hd_b16": (1920, 1080, 16, 800),
    "group8_b8": (320, 240, 8, 800),  # frames per stream; 8 streams
}
GROUP_STREAMS = 8


def _stub_engine() -> None:
    """Engine.submit/collect return empty detections at once (the model and its decode taken out)."""
    from pyinfer.detections import Detections
    from pyinfer.engine import Engine
    from pyinfer.ops.colour import YuvFrames

    def submit(self, frames, *, channels="RGB", params=None):
        return len(frames) if isinstance(frames, YuvFrames) else int(frames.shape[0])

    def collect(self, ticket):
        return [Detections.empty() for _ in range(ticket)]

    Engine.submit, Engine.collect = submit, collect  # type: ignore[method-assign]


def _run(middle: str, bufs: list, w: int, h: int, n: int, skip: int) -> float:
    return _run_group(middle, bufs, w, h, n, skip, 1)


def _run_group(middle: str, bufs: list, w: int, h: int, n: int, skip: int, streams: int) -> float:
    """``streams`` branches ``appsrc ! {middle} ! fakesink``, ``{i}`` in middle replaced by the branch's number."""
    from pyinfer._gi import Gst, copy_buffer
    from pyinfer.meta import read_detections

    pipe = Gst.parse_launch(" ".join(f"appsrc name=src{i} ! {middle.format(i=i)} ! fakesink name=sink{i} sync=false"
                                     for i in range(streams)))  # fmt: skip
    stamps: list[float] = []
    caps = Gst.Caps.from_string(f"video/x-raw,format=RGB,width={w},height={h},framerate=30/1")

    def probe(pad, info):
        stamps.append(time.perf_counter())
        read_detections(info.get_buffer())
        return Gst.PadProbeReturn.OK

    dur = Gst.SECOND // 30
    for k in range(streams):
        src = pipe.get_by_name(f"src{k}")
        src.set_property("caps", caps)
        src.set_property("format", Gst.Format.TIME)
        for prop in ("max-bytes", "max-buffers", "max-time"):
            src.set_property(prop, 0)
        pipe.get_by_name(f"sink{k}").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    try:
        pipe.set_state(Gst.State.PAUSED)
        for k in range(streams):
            src = pipe.get_by_name(f"src{k}")
            for i in range(n):
                b = copy_buffer(bufs[(i + k) % len(bufs)])
                b.pts, b.duration = i * dur, dur
                src.emit("push-buffer", b)
            src.emit("end-of-stream")
        pipe.set_state(Gst.State.PLAYING)
        msg = pipe.get_bus().timed_pop_filtered(300 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    finally:
        pipe.set_state(Gst.State.NULL)
    total = n * streams
    if msg is None or msg.type != Gst.MessageType.EOS or len(stamps) != total:
        raise RuntimeError(f"{middle}: {len(stamps)} of {total} buffers, {msg.parse_error() if msg else 'timeout'}")
    skip *= streams
    return (total - 1 - skip) / (stamps[-1] - stamps[skip])


def child(only: list[str]) -> dict:
    import numpy as np

    import pyinfer
    from pyinfer._gi import Gst
    from pyinfer.engine import on_fresh_thread

    pyinfer.register()
    _stub_engine()
    tiny = on_fresh_thread(common.build_tiny_model, Path(tempfile.mkdtemp()) / "tiny.torchscript")
    rng = np.random.default_rng(0)
    out = {}
    for name, (w, h, batch, n) in VARIANTS.items():
        if name not in only:
            continue
        bufs = [Gst.Buffer.new_wrapped(rng.integers(0, 255, (h, w, 3), dtype=np.uint8).tobytes()) for _ in range(16)]
        skip = 8 * batch
        if name.startswith("group"):
            skip = 4 * batch
            ident = _run_group("identity", bufs, w, h, n, skip, GROUP_STREAMS)
            fps = _run_group(f"pyinfer model-engine={tiny} device=cpu batch-size={batch} batch-group=g name=p{{i}}",
                             bufs, w, h, n, skip, GROUP_STREAMS)  # fmt: skip
        else:
            ident = _run("identity", bufs, w, h, n, skip)
            fps = _run(f"pyinfer model-engine={tiny} device=cpu batch-size={batch}", bufs, w, h, n, skip)
        out[name] = {"fps": round(fps, 1), "identity_fps": round(ident, 1),
                     "us_over_identity": round(1e6 / fps - 1e6 / ident, 1)}  # fmt: skip
    return out


def _child_run(src: Path, only: list[str]) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(src.resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with tempfile.NamedTemporaryFile(suffix=".bin") as reg:
        env["GST_REGISTRY"] = reg.name
        cmd = [sys.executable, __file__, "--child", "--only", ",".join(only)]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True,
                             timeout=1200, check=True)  # fmt: skip
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", type=Path, required=False, help="the baseline's src folder (omit: new only)")
    p.add_argument("--new", type=Path, default=HERE.parent / "src")
    p.add_argument("--old-label", default="old")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--only", default=",".join(VARIANTS), help="variants to run, comma-separated (default: all)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    only = [v for v in args.only.split(",") if v]
    unknown = sorted(set(only) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    if args.child:
        print(json.dumps(child(only)))
        return 0
    versions = ("old", "new") if args.old else ("new",)
    runs: dict[str, list[dict]] = {v: [] for v in versions}
    for rep in range(args.reps):
        for which in versions if rep % 2 == 0 else versions[::-1]:
            runs[which].append(_child_run(args.old if which == "old" else args.new, only))
        print(f"rep {rep + 1}/{args.reps}: " + " | ".join(f"{v} {runs[v][-1]}" for v in versions), file=sys.stderr)
    result: dict = {"medians": {}, "ratios_new_over_old": {}}
    for name in only:
        for v in versions:
            rs = [r[name] for r in runs[v]]
            result["medians"][f"{v}_{name}"] = {k: round(statistics.median(r[k] for r in rs), 1) for k in rs[0]}
        if args.old:
            fps = [n[name]["fps"] / o[name]["fps"] for o, n in zip(runs["old"], runs["new"])]
            over = [n[name]["us_over_identity"] / o[name]["us_over_identity"] for o, n in zip(runs["old"], runs["new"])]
            result["ratios_new_over_old"][name] = {"fps": round(statistics.median(fps), 3),
                                                   "us_over_identity": round(statistics.median(over), 3)}  # fmt: skip
    from pyinfer._gi import Gst

    Gst.init(None)
    date = time.strftime("%Y-%m-%d", time.gmtime())
    path = args.out or common.RESULTS_DIR / f"element-overhead-cpu-{date}.json"
    common.write_json(path, {
        "benchmark": "pyinfer's own cost per frame, model stubbed out (issue #12: the work beside the GPU), CPU",
        "command": common.command_line(), "date": common.utc_now(), "machine": common.machine_info(),
        "old": f"{args.old} ({args.old_label})" if args.old else None, "new": str(args.new),
        "variants": {k: dict(zip(("width", "height", "batch", "frames"), v)) for k, v in VARIANTS.items() if k in only},
        "reps": args.reps, "runs": runs, **result,
    })  # fmt: skip
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
