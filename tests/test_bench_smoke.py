"""Smoke test of bench/cpu_pipeline.py: it runs and writes a complete result file (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "cpu_pipeline.py"
VARIANTS = (
    "raw_b1", "engine_b1", "pipeline_b1", "raw_b4", "engine_b4", "pipeline_b4",
    "source_only", "tiny_identity", "tiny_pyinfer",
)  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cpu_pipeline_quick(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["command"][-1] == str(out)
    for key in ("platform", "cpu_model", "cpu_count", "torch", "gstreamer"):
        assert r["machine"][key], key
    assert r["date_utc"]
    assert set(r["variants"]) == set(VARIANTS)
    for name in VARIANTS:
        v = r["variants"][name]
        assert len(v["runs"]) >= 3, name
        assert all(x > 0 for x in v["runs"]), name
        assert v["median"] > 0, name
    for name in ("pipeline_b1", "pipeline_b4"):
        assert r["variants"][name]["detections_per_frame"] > 0, name  # the model really ran in the pipeline
    for key in ("pipeline_over_raw_b1", "pipeline_over_raw_b4", "engine_over_raw_b1", "engine_over_raw_b4"):
        assert r["ratios"][key] > 0, key
    assert r["element_overhead_us_per_buffer"]["runs"]
    for model in ("shapes_1280x720", "tiny_640x480"):
        for case in ("alone", "second_team"):
            assert r["breakdown_b1"][model][case]["sum_ms"] > 0


@pytest.mark.timeout(120)
def test_elements_bench_quick(tmp_path: Path) -> None:
    """bench/elements.py (the pytracker / pyosd figures the README quotes) runs and writes every variant."""
    out = tmp_path / "elements.json"
    script = BENCH.with_name("elements.py")
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(out)], capture_output=True, text=True, timeout=110
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["machine"]["cpu_count"] and r["date_utc"]
    want = {f"library.tracker_{s}{b}" for s in ("update_axis", "update_rotated", "predict") for b in ("", "_numpy")}
    want |= {f"pipeline.{p}" for p in ("identity", "pytracker", "pyosd", "identity_axis", "python_noop_axis",
                                        "pytracker_axis", "pytracker_numpy", "pytracker_axis_numpy")}  # fmt: skip
    assert want <= set(r["ms_per_frame"])
    assert all(v["median"] > 0 and len(v["runs"]) == 3 for v in r["ms_per_frame"].values())
    assert set(r["element_ms_per_frame_over_identity"]) == {
        "pytracker", "pyosd", "pytracker_numpy", "pytracker_axis", "pytracker_axis_numpy", "python_noop_axis",
    }  # fmt: skip


@pytest.mark.timeout(180)
def test_vlm_async_bench_quick(tmp_path: Path) -> None:
    """bench/vlm_async.py (pyvlm async vs sync, the README's figures) runs, and its figures say what they should:
    with a slow model the async video is not held (no paced frame late), the sync video is (every one)."""
    out = tmp_path / "vlm.json"
    script = BENCH.with_name("vlm_async.py")
    proc = subprocess.run(
        [sys.executable, str(script), "--frames", "24", "--delays", "0.1", "--out", str(out)],
        capture_output=True, text=True, timeout=170,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["command"][-1] == str(out) and r["machine"]["cpu_count"] and r["date"]
    rows = {(x["mode"], x["paced_fps"] is not None): x for x in r["results"]}
    assert set(rows) == {("async", False), ("sync", False), ("async", True), ("sync", True)}
    assert all(x["frames"] == 24 for x in rows.values())
    assert rows["sync", False]["answers"] == 24  # every frame answered on itself
    assert rows["sync", True]["frames_later_than_one_interval"] == 24  # 0.1 s a call: each frame held past 33 ms
    assert rows["async", True]["frames_later_than_one_interval"] <= 6  # not held (a few: a loaded machine's hiccups)
    assert rows["async", False]["video_frames_per_s"] > 2 * rows["sync", False]["video_frames_per_s"]
