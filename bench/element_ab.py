#!/usr/bin/env python
"""Two pyinfer versions side by side on the CPU: ``appsrc ! pyinfer batch-size=B ! fakesink`` (B = 1, 4).

Each run is a child process (``bench/cpu_pipeline.py --pipelines-only``) with ``PYTHONPATH`` set to one version's
``src``; the versions alternate A B B A ..., so drift in the machine's speed weighs on both. Reports each
version's median frames/s and the median of the per-pair ratios new/old. Issue #12: the pipelined element must
not be slower than the synchronous one at batch 1 and 4.

    git worktree add /tmp/pyinfer-old <commit> && (cd /tmp/pyinfer-old && $OLDPWD/.venv/bin/python setup.py -q \\
        build_ext --inplace)   # before setup.py: make -C /tmp/pyinfer-old src/pyinfer/meta/libroi_native.so ...
    .venv/bin/python bench/element_ab.py --old /tmp/pyinfer-old/src --new src --reps 5
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


def child(src: Path, frames: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(src.resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with tempfile.NamedTemporaryFile(suffix=".bin") as reg:
        env["GST_REGISTRY"] = reg.name
        out = subprocess.run(
            [sys.executable, str(HERE / "cpu_pipeline.py"), "--pipelines-only", "--frames", str(frames)],
            env=env, capture_output=True, text=True, timeout=900, check=True,
        )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", type=Path, required=True, help="the baseline's src folder")
    p.add_argument("--new", type=Path, default=HERE.parent / "src")
    p.add_argument("--old-label", default="old")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for rep in range(args.reps):
        order = ("old", "new") if rep % 2 == 0 else ("new", "old")
        for which in order:
            runs[which].append(child(args.old if which == "old" else args.new, args.frames))
        print(f"rep {rep + 1}/{args.reps}: old {runs['old'][-1]} new {runs['new'][-1]}", file=sys.stderr, flush=True)
    result = {"variants": {}, "ratios_new_over_old": {}}
    for key in ("pipeline_b1", "pipeline_b4"):
        for which in ("old", "new"):
            result["variants"][f"{which}_{key}"] = common.summarize([r[key] for r in runs[which]])
        ratios = [n[key] / o[key] for o, n in zip(runs["old"], runs["new"])]
        result["ratios_new_over_old"][key] = {"median": round(statistics.median(ratios), 3),
                                              "pairs": [round(r, 3) for r in ratios]}  # fmt: skip
    import gi

    gi.require_version("Gst", "1.0")
    from gi.repository import Gst

    Gst.init(None)  # machine_info reads GStreamer's version
    date = time.strftime("%Y-%m-%d", time.gmtime())
    path = args.out or common.RESULTS_DIR / f"element-ab-cpu-{date}.json"
    common.write_json(path, {
        "benchmark": "pyinfer element, two versions side by side (issue #12: pipelined vs synchronous, CPU)",
        "command": common.command_line(), "date": common.utc_now(), "machine": common.machine_info(),
        "old": f"{args.old} ({args.old_label})", "new": str(args.new), "frames": "1280x720 RGB, embedded shapes model",
        "reps": args.reps, "runs": runs, **result,
    })  # fmt: skip
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
