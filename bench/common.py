"""Shared bench helpers: machine description, run statistics, result files, a trivial TorchScript model."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """Platform, CPU, cores and the versions of the pieces being measured."""
    import torch

    try:
        from pyinfer._gi import Gst

        gst = Gst.version_string() if Gst.is_initialized() else "not used"
    except (ImportError, ValueError):
        gst = "absent"
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "gstreamer": gst,
        "python_loop_ms": python_loop_ms(),
    }


def python_loop_ms(reps: int = 5) -> float:
    """Milliseconds one thread takes for a fixed pure-Python loop (calls, attributes, a dict, a list), best of
    ``reps``: how fast this host runs the interpreter. The device machines of one kind differ by up to ~2x in
    host-bound benchmarks; this says which kind of host a result came from."""
    import time

    class Box:
        __slots__ = ("n",)

        def __init__(self) -> None:
            self.n = 0

    def step(box: Box, table: dict, i: int) -> None:
        box.n += i & 7
        table[i & 255] = box.n

    best = float("inf")
    for _ in range(reps):
        box, table, items = Box(), {}, []
        t0 = time.perf_counter()
        for i in range(100_000):
            step(box, table, i)
            if i & 1023 == 0:
                items.append(i)
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 2)


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def default_out() -> Path:
    return RESULTS_DIR / f"cpu-{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d}.json"


def summarize(runs: list[float]) -> dict:
    """Median, min, max of repeated runs (kept alongside the raw runs)."""
    return {
        "runs": [round(r, 4) for r in runs],
        "median": round(statistics.median(runs), 4),
        "min": round(min(runs), 4),
        "max": round(max(runs), 4),
    }


def write_json(path: Path, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def command_line() -> list[str]:
    return [sys.executable, *sys.argv]


def build_tiny_model(path: Path, size: int = 64, anchors_side: int = 4) -> Path:
    """A trivial detector: 1x1 conv + average pooling -> [B, 7, anchors_side**2], 3 classes, never detecting.

    The class scores come out at 0 (at or below any confidence threshold), so the element's cost measured with it is
    buffer handling + letterbox + a near-free forward + an empty decode, with no metadata written.
    """
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 7, 1)
            self.pool = torch.nn.AdaptiveAvgPool2d(anchors_side)
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.bias.copy_(torch.tensor([8.0, 8.0, 4.0, 4.0, 0.0, 0.0, 0.0]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pool(self.conv(x)).flatten(2)

    traced = torch.jit.trace(Tiny().eval(), torch.zeros(1, 3, size, size), check_trace=False)
    cfg = {"imgsz": [size, size], "names": {"0": "a", "1": "b", "2": "c"}}
    torch.jit.save(traced, str(path), _extra_files={"config.txt": json.dumps(cfg)})
    return path
