"""The matching report in a real headless browser (Debian's Chromium): it renders without
console errors, every plot has drawn data, and a screenshot is kept as a test artifact
(``$EAP_TEST_ARTIFACTS``, default ``test-artifacts/`` in the repository).

Chromium is installed from the distribution's packages when missing and the tests run as root
with apt; otherwise they skip and say why."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from eap.node.domain.matching import ClaimedRecord, PoolStats, compute
from eap.node.records.enums import Source
from eap.node.report_html import render

H = 3600
T0 = 1_750_464_000  # 2025-06-21T00:00Z
ARTIFACTS = Path(os.environ.get("EAP_TEST_ARTIFACTS", Path(__file__).parents[1] / "test-artifacts"))


def _install() -> str | None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "install", "-y", "-q", "chromium"],
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "chromium"],
    ):
        done = subprocess.run(cmd, env=env, capture_output=True, timeout=900, check=False)
        if cmd[1] == "install" and done.returncode == 0:
            break
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or _install()
    if not exe:
        pytest.skip(
            "Chromium is not installed and cannot be installed here (needs root and "
            "apt-get: `apt-get install chromium`)"
        )
    return exe


def _browse(exe: str, page: Path, screenshot: Path | None = None) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and the console errors Chromium logged."""
    base = [
        exe,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=20000",
        "--window-size=1280,2600",
        f"--user-data-dir={page.parent / 'chromium-profile'}",
    ]
    url = page.resolve().as_uri()
    dom = subprocess.run(
        [*base, "--dump-dom", url], capture_output=True, text=True, timeout=180, check=False
    )
    errors = [
        line
        for line in dom.stderr.splitlines()
        if "CONSOLE" in line and re.search(r"Uncaught|Error|ERROR:CONSOLE", line)
    ]
    if screenshot is not None:
        subprocess.run(
            [*base, f"--screenshot={screenshot}", url],
            capture_output=True,
            timeout=180,
            check=False,
        )
    return dom.stdout, errors


def _report():
    claims = []
    load = {}
    for h in range(72):
        at = T0 + h * H
        load[at] = 1200 + 400 * ((h % 24) in range(17, 22))
        sun = max(0, 12 - abs((h % 24) - 13)) * 150
        if sun:
            claims.append(ClaimedRecord(at, sun, int(Source.SOLAR), 0, "ES", "barcelona.example"))
        claims.append(ClaimedRecord(at, 300, int(Source.WIND), 11_000, "ES", "amsterdam.example"))
        if h % 24 > 18:
            claims.append(
                ClaimedRecord(at, 500, int(Source.GAS), 420_000, "ES", "barcelona.example")
            )
    pool = {
        T0 + h * H: PoolStats(90_000, 90_000 * 180_000, 30_000, 30_000 * 350_000) for h in range(72)
    }
    return compute(
        node_id="barcelona.example",
        subject="acct_customer",
        zone="ES",
        start=T0,
        end=T0 + 72 * H,
        load=load,
        claims=claims,
        pool=pool,
    )


def test_report_renders_with_data_in_a_real_browser(chromium, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(render(_report()), encoding="utf-8")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "matching-report.png"
    dom, errors = _browse(chromium, page, shot)
    assert not errors, errors
    assert 'id="summary"' in dom
    for key in ("supply", "score", "emissions", "flows"):
        block = dom.split(f'id="plot-{key}"', 1)[1].split("</section>", 1)[0]
        assert "main-svg" in block, f"plot {key} was not drawn"
        if key == "flows":
            assert block.count('class="sankey-link"') >= 2, "the Sankey has no links"
        else:
            # Drawn traces carry path or bar points with real coordinates.
            assert re.search(r'class="point"|class="js-line"', block), f"plot {key} has no data"
    assert shot.exists() and shot.stat().st_size > 10_000


def test_the_console_check_catches_errors(chromium, tmp_path):
    """The console check is not vacuous: a page that throws is caught."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>throw new Error('boom')</script></body></html>")
    _, errors = _browse(chromium, page)
    assert errors and any("boom" in e for e in errors)
