"""Smoke test of bench/triton_remote.py: against a real tritonserver it runs and writes a complete result file (no
timing assertions: the figures depend on the machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "triton_remote.py"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_triton_bench_writes_every_table(tmp_path: Path) -> None:
    out = tmp_path / "triton.json"
    cmd = [
        sys.executable, str(BENCH), "--quick", "--torch-threads", "1", "--batches", "1", "--frames", "4",
        "--latency-batches", "2", "--reps", "1", "--calls", "1", "--variants", "local,shm", "--process-frames", "4",
        "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=230, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["command"][-1] == str(out) and r["date_utc"] and r["machine"]["cpu_count"]
    assert r["machine"]["torch_threads"] == 1  # --torch-threads reached torch
    rows = r["element"]["b1"]
    assert set(rows) == {"local", "shm"}
    for row in rows.values():
        assert row["frames_per_s"] > 0 and row["latency_ms"]["median"] > 0
        assert row["objects_per_frame"] > 0  # the model ran and its detections were written
    assert rows["shm"]["objects_per_frame"] == rows["local"]["objects_per_frame"]
    assert "overhead_ms_per_batch" in rows["shm"] and "overhead_ms" in r["call"]["b1"]["shm"]
    for variant in ("local", "shm"):
        p = r["processes"][variant]
        assert "error" not in p, p
        assert p["alone_frames_per_s"] > 0 and len(p["runs"]["two"][0]) == 2
    assert r["processes"]["shm"]["server_batches"][0]["model_calls"] > 0
