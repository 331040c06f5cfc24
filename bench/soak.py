"""Soak benchmark: stream many frames through the CPU pipeline and sample the process's RSS.

    .venv/bin/python bench/soak.py [--frames 100000] [--out bench/results/soak-cpu-DATE.json]

Pipeline: videotestsrc (320x240 RGB, moving ball) -> pyinfer (a fixed-output TorchScript model that yields 10
detections per frame, so letterbox, decode, NMS and ROI-meta writing all run) -> pyosd (draws them) ->
fakesink, with a pad probe reading every frame's metadata back (pyinfer.meta.read_detections). Every 1000
frames the RSS (VmRSS) is sampled. Growth is measured from the end of warm-up (10% of the frames) to the end;
target: under 2%.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine_info, utc_now, write_json


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def build_model(path: Path, n: int = 10) -> Path:
    import torch

    rng = np.random.default_rng(0)
    table = np.zeros((7, n), np.float32)
    table[0] = rng.uniform(40, 280, n)
    table[1] = rng.uniform(60, 260, n)
    table[2:4] = rng.uniform(10, 30, (2, n))
    table[4 + rng.integers(0, 3, n), np.arange(n)] = rng.uniform(0.5, 0.99, n)

    class Fixed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("table", torch.from_numpy(table))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            zero = x[:, :1, :1, :1].flatten(1).sum(1).view(-1, 1, 1) * 0
            return self.table.unsqueeze(0) + zero

    traced = torch.jit.trace(Fixed().eval(), torch.zeros(1, 3, 320, 320), check_trace=False)
    cfg = {"imgsz": [320, 320], "names": {"0": "a", "1": "b", "2": "c"}}
    torch.jit.save(traced, str(path), _extra_files={"config.txt": json.dumps(cfg)})
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import pyinfer

    pyinfer.register()
    from pyinfer._gi import Gst
    from pyinfer.meta import read_detections

    model = build_model(Path(tempfile.mkdtemp()) / "soak.torchscript")
    pipeline = Gst.parse_launch(
        f"videotestsrc num-buffers={args.frames} pattern=ball ! video/x-raw,format=RGB,width=320,height=240 ! "
        f"pyinfer name=infer model-engine={model} device=cpu ! pyosd ! fakesink sync=false"
    )
    samples: list[tuple[int, int]] = []
    counts = {"frames": 0, "detections": 0}

    def probe(pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        counts["detections"] += len(read_detections(info.get_buffer()))
        counts["frames"] += 1
        if counts["frames"] % 1000 == 0:
            samples.append((counts["frames"], rss_kib()))
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("infer").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, probe)
    t0 = time.perf_counter()
    pipeline.set_state(Gst.State.PLAYING)
    msg = pipeline.get_bus().timed_pop_filtered(Gst.CLOCK_TIME_NONE, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    elapsed = time.perf_counter() - t0
    if msg.type == Gst.MessageType.ERROR:
        print("ERROR:", msg.parse_error()[0].message, file=sys.stderr)
        return 1
    warm = [s for s in samples if s[0] >= args.frames // 10]
    base, final = warm[0][1], samples[-1][1]
    growth = (final - base) / base * 100
    result = {
        "benchmark": "soak-cpu",
        "command": command_line(),
        "date": utc_now(),
        "machine": machine_info(),
        "frames": counts["frames"],
        "detections": counts["detections"],
        "seconds": round(elapsed, 1),
        "frames_per_s": round(counts["frames"] / elapsed, 1),
        "rss_kib_after_warmup": base,
        "rss_kib_final": final,
        "rss_kib_peak": max(s[1] for s in samples),
        "rss_growth_after_warmup_percent": round(growth, 3),
        "target_percent": 2.0,
        "samples": samples,
    }
    out = (
        args.out
        or Path(__file__).resolve().parent / "results" / f"soak-cpu-{dt.datetime.now(dt.timezone.utc):%Y-%m-%d}.json"
    )
    write_json(out, result)
    print(
        f"{counts['frames']} frames in {elapsed:.1f} s ({result['frames_per_s']} frames/s), "
        f"{counts['detections']} detections; RSS {base} KiB after warm-up -> {final} KiB at the end "
        f"({growth:+.2f}%, target < 2%); wrote {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
