"""Smoke test of bench/msg.py: it runs and writes a complete result file (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "msg.py"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_msg_bench_quick_run_writes_every_variant(tmp_path: Path) -> None:
    out = tmp_path / "msg.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--out", str(out)], capture_output=True, text=True, timeout=110
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["command"][-1] == str(out)
    assert r["machine"]["cpu_count"] and r["date_utc"]
    assert r["settings"]["objects_per_frame"] == 100
    assert r["settings"]["brokers_started"] == ["mqtt", "redis"]  # make test installs both
    expected = {"build_frame", "build_object", "read_detections", "pipe_identity", "pipe_msgconv",
                "pipe_msgconv_object", "pipe_file", "pipe_mqtt", "pipe_redis", "publisher_file", "publisher_mqtt",
                "publisher_redis"}  # fmt: skip
    assert set(r["variants"]) == expected
    for name, v in r["variants"].items():
        assert v["median"] > 0 and all(x > 0 for x in v["runs"]), name
    for name in ("pipe_file", "pipe_mqtt", "pipe_redis"):
        assert r["variants"][name]["messages_per_s"]["median"] > 0, name
        assert r["variants"][name]["dropped"] == 0, name
    assert r["message_bytes"]["frame"] > r["message_bytes"]["object"] > 0
