#!/usr/bin/env python
"""Render the throughput benchmark's JSON (bench/gpu/throughput.py) as a PNG bar chart.

    python bench/gpu/chart.py bench/results/gpu-2026-11-25.json [--out chart.png]

One panel per model: frames/s per batch size (log scale when the rates span more than 20x), one labelled bar
per variant, in the order of the issue's list (raw model, pyinfer core, pyinfer in GStreamer, naive element,
ultralytics).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: Variant families in display order, with their colours.
FAMILIES = [
    ("raw-eager", "#cccccc"),
    ("raw-cudagraph", "#aaaaaa"),
    ("raw-compile-default-cl-cudagraph", "#777777"),
    ("raw-compile-reduce-overhead-cl", "#444444"),
    ("pyinfer-core-plain", "#c6dbef"),
    ("pyinfer-core-graphs", "#6baed6"),
    ("pyinfer-core-graphs-pipelined", "#4292c6"),
    ("pyinfer-core-compiled", "#2171b5"),
    ("pyinfer-core-compiled-pipelined", "#08306b"),
    ("pyinfer-gst-graphs", "#74c476"),
    ("pyinfer-gst-compiled", "#238b45"),
    ("pyinfer-core-100obj", "#fd8d3c"),
    ("naive-100obj", "#d94801"),
    ("ultralytics-predict", "#cb181d"),
    ("ultralytics-predict-rect", "#fb6a4a"),
]


def render(data: dict, out: Path) -> Path:
    """Write the chart for one result dict to ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in data.get("results", []) if r.get("frames_per_s")]
    models = sorted({r["model"] for r in rows})
    if not models:
        raise ValueError("no results with frames_per_s to chart")
    fig, axes = plt.subplots(len(models), 1, figsize=(12, 4.2 * len(models)), squeeze=False)
    for ax, model in zip(axes[:, 0], models):
        mine = [r for r in rows if r["model"] == model]
        batches = sorted({r["batch"] for r in mine})
        present = [(name, colour) for name, colour in FAMILIES if any(r["variant"] == name for r in mine)]
        width = 0.8 / max(1, len(present))
        for k, (name, colour) in enumerate(present):
            xs, ys = [], []
            for i, b in enumerate(batches):
                hit = [r for r in mine if r["variant"] == name and r["batch"] == b]
                if hit:
                    xs.append(i - 0.4 + width * (k + 0.5))
                    ys.append(hit[0]["frames_per_s"])
            bars = ax.bar(xs, ys, width=width, color=colour, label=name)
            ax.bar_label(bars, labels=[f"{y:.0f}" if y >= 10 else f"{y:.1f}" for y in ys], fontsize=6, rotation=90,
                         padding=2)  # fmt: skip
        rates = [r["frames_per_s"] for r in mine]
        ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
        log = max(rates) / max(min(rates), 1e-9) > 20
        if log:
            ax.set_yscale("log")
        ax.set_ylim(top=max(rates) * (4 if log else 1.25))
        ax.set_ylabel("frames/s" + (" (log)" if log else ""))
        where = data.get("gpu", {}).get("name") or data.get("machine", {}).get("cpu_model", "")
        ax.set_title(f"{model}: 1080p frames, {data.get('precision', '')}, {where}")
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="PNG path (default: the JSON's, with .png)")
    args = ap.parse_args(argv)
    out = render(json.loads(args.json.read_text()), args.out or args.json.with_suffix(".png"))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
