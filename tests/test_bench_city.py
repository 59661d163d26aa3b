"""bench/bench_city.py still runs every step through the product code (tiny size, SQLite).

Shape only: which steps, which columns, counts that follow from the size; never speed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_city.py"
STEPS = [
    "register devices",
    "meter import",
    "  raw bulk insert (baseline)",
    "re-import unchanged",
    "issue all",
    "  raw bundle insert (baseline)",
    "bundles --owner X --json",
    "  raw SELECT to JSON Lines (baseline)",
    "status",
    "page of 100 (first)",
    "page of 100 (last)",
]


def test_city_bench_table_shape(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--devices",
            "6",
            "--hours",
            "30",
            "--db",
            "sqlite",
            "--batch-size",
            "50",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    figures = json.loads(out.stdout)
    assert figures["readings"] == 180
    rows = figures["rows"]
    assert [r["step"] for r in rows] == STEPS
    assert all(r["db"] == "sqlite" and r["peak_rss_mb"] > 0 for r in rows)
    by = {r["step"]: r for r in rows}
    assert by["meter import"]["items"] == 180 and by["meter import"]["ratio"] is not None
    assert by["re-import unchanged"]["ratio"] is not None
    assert 0 < by["issue all"]["items"] <= 180
    assert by["bundles --owner X --json"]["first_line_s"] is not None
    assert by["bundles --owner X --json"]["stream_rate_per_s"] is not None
    assert (
        by["bundles --owner X --json"]["items"]
        == by["  raw SELECT to JSON Lines (baseline)"]["items"]
    )
    assert by["page of 100 (first)"]["items"] == 100

    spec = importlib.util.spec_from_file_location("bench_city", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    table = mod.markdown(rows, 6, 30).splitlines()
    assert table[2].count("|") == table[3].count("|") == 11
    assert len(table) == 4 + len(STEPS)
