"""bench/bench_bundle_layouts.py still builds each layout and stores every row (tiny, SQLite).

Shape only: which layouts, and that each run stored all its rows; never speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_bundle_layouts.py"


def test_every_layout_stores_every_row(tmp_path):
    out = subprocess.run(
        [sys.executable, str(BENCH), "--devices", "3", "--hours", "40", "--db", "sqlite"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("| sqlite |")]
    assert [ln.split("|")[2].strip() for ln in lines] == [
        "current",
        "no owner index",
        "clustered",
        "clustered, no owner index",
        "no listing indexes",
    ]
    assert out.stdout.startswith("120 rows")
