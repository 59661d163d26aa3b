"""bench/bench_settlement.py still runs a whole round through the product code (tiny size)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_settlement.py"


def test_settlement_bench_runs_a_round(tmp_path):
    out = subprocess.run(
        [sys.executable, str(BENCH), "--obligations", "3000", "--accounts", "60",
         "--one-by-one", "20", "--json"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    figures = json.loads(out.stdout)
    assert figures["problems"] == []
    assert figures["held_out"] == 15 and figures["agreed"] == 3000 - 15
    assert set(figures["phases_s"]) == {"gather", "reconcile", "net", "sign", "finalize",
                                        "execute"}
    assert figures["instruction_sides"] > 0
    assert 0 < figures["efficiency"]["EUR"] < 1
