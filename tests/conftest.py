"""Shared fixtures: node homes on SQLite and on the local PostgreSQL server, real shared data."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from support import make_node

ROOT = Path(__file__).resolve().parents[1]
#: The project's own copies of the small shared files (tests/data/README.md).
TEST_DATA = ROOT / "tests" / "data"
METER_CSV = TEST_DATA / "meters" / "hourly_measurements.csv"
PG_ADMIN_URL = os.environ.get("EAP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow",
        action="store_true",
        help="run every long fault/fuzz case, not only the bounded seeded share",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="long run: use --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


#: Lines of each node log shown under a failed test that ran ``eap-node serve`` processes.
LOG_TAIL = 80


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed test's node logs (``serve.log`` of every process it started) go into its
    report: an INTERNAL status only says "see the node's log", and CI keeps no temp dir."""
    outcome = yield
    report = outcome.get_result()
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    if not report.failed or tmp is None:
        return
    for log in sorted(Path(tmp).rglob("serve.log")):
        lines = log.read_text(errors="replace").splitlines()
        errors = [i for i, line in enumerate(lines) if "Traceback" in line or " ERROR " in line]
        start = max(0, min(errors[0] if errors else len(lines), len(lines) - LOG_TAIL) - 5)
        tail = lines[start : start + LOG_TAIL]
        report.sections.append((f"node log {log.relative_to(tmp)}", "\n".join(tail)))


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_server() -> str:
    if not _pg_available():
        if os.environ.get("CI") or os.environ.get("EAP_REQUIRE_PG"):
            pytest.fail(f"PostgreSQL is required but not reachable at {PG_ADMIN_URL}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_server: str):
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"eap_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = pg_server.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'node.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def meter_csv() -> Path:
    if not METER_CSV.exists():
        pytest.skip(f"meter fixture absent: {METER_CSV}")
    return METER_CSV


@pytest.fixture
def node(tmp_path: Path, db_url: str):
    n = make_node(tmp_path / "home", db_url)
    yield n
    n.close()


@pytest.fixture
def solar(node):
    """An owner account and a 250 W solar device metered as ``1`` (the shared CSV's device)."""
    owner = node.create_account(request_id="acct-owner", label="rooftop co-op").account.id
    dev = node.register_device(
        request_id="dev-1",
        local_ref="roof-1",
        capacity_w=250,
        source="solar",
        technology="photovoltaic",
        commissioned_on="2020-05-01",
        latitude=6.2442,
        longitude=-75.5812,
        zone="CO-ANT",
        owner=owner,
        meter_id="1",
        attestation_evidence="grid-connection-agreement 2020/117",
    )
    return owner, dev
