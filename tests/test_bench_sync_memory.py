"""bench/bench_sync_memory.py still syncs through the product code (tiny size, SQLite).

Shape only: one row per size, counts that follow from the sizes; never speed or memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_sync_memory.py"


def test_sync_memory_bench_table_shape(tmp_path):
    out = subprocess.run(
        [sys.executable, str(BENCH), "--records", "300,1000", "--per-batch", "100",
         "--dbs", "sqlite", "--heap", "--json"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    figures = json.loads(out.stdout)
    assert figures["per_batch"] == 100
    rows = figures["rows"]
    assert [(r["db"], r["records"], r["batches"]) for r in rows] == [
        ("sqlite", 300, 3), ("sqlite", 1000, 10)]
    for r in rows:
        assert r["rps"] > 0 and r["peak_rss_mib"] >= r["rss_before_mib"] > 0
        assert r["heap_peak_mib"] > 0
