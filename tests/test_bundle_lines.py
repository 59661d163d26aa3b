"""``eap-node bundles --json`` lines rendered by the database equal the per-record path
(``json.dumps(machine_record(bundle), sort_keys=True)``) byte for byte, for random bundles
(any text, any integers, unknown enum numbers) on SQLite and PostgreSQL; same purpose checks
and fields as ``list_bundles``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete
from support import make_bundle

from eap.node.cli_output import machine_record
from eap.node.domain import listings
from eap.node.domain.ledger import bundle_id
from eap.node.domain.policy import redact_bundle, redacts_bundles
from eap.node.errors import EapError
from eap.node.records.enums import Purpose, Source, Status, Technology
from eap.node.records.models import Bundle, Principal
from eap.node.store import repos, run_repos
from eap.node.store import schema as t

OPS = Purpose.OPERATIONS
I64 = st.integers(-(2**63), 2**63 - 1)
I32 = st.integers(-(2**31), 2**31 - 1)


def _text(dialect: str, min_size: int = 0):
    """Any text the database can hold (PostgreSQL text has no NUL), often plain ids."""
    chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
    if dialect == "sqlite":
        chars = st.characters(blacklist_categories=("Cs",))
    odd = st.text(chars, min_size=min_size, max_size=12)
    plain = st.from_regex(r"[a-z0-9_.-]{1,12}", fullmatch=True)
    return st.one_of(plain, odd, st.sampled_from(['a"b', "a\\b", "x\x7fy", "zoné", "\t\n\x1f"]))


def _enum(kind):
    return st.one_of(st.sampled_from([int(m) for m in kind]), I32)


def _device(draw, text, owners: list[str]) -> dict:
    """What a record carries from its device and owner: any text, any 32-bit integers."""
    return dict(
        device_id=draw(text),
        source=draw(_enum(Source)),
        technology=draw(_enum(Technology)),
        renewable_ppm=draw(I32),
        carbon_mg=draw(I32),
        zone=draw(text),
        cell=draw(text),
        owner=draw(st.sampled_from(owners)),
    )


@st.composite
def bundles(draw, dialect: str, owners: list[str]) -> list[Bundle]:
    n = draw(st.integers(0, 12))
    issuers = draw(st.lists(_text(dialect, 1), min_size=1, max_size=3, unique=True))
    text = _text(dialect)
    out = []
    for _ in range(n):
        issuer = draw(st.sampled_from(issuers))
        start = draw(st.integers(0, 2**62))
        end = start + draw(st.integers(0, 2**40))  # (the totals triggers sum Wh)
        out.append(
            Bundle(
                id=bundle_id(issuer, start, end),  # the page key is read from the id
                issuer=issuer,
                serial_start=start,
                serial_end=end,
                interval_start=draw(I64),
                interval_end=draw(I64),
                **_device(draw, text, owners),
                status=draw(_enum(Status)),
                parent_id=draw(st.none() | text),
                lineage_hash=draw(text),
                issued_at_ms=draw(I64),
                held_by=draw(st.none() | text),
            )
        )
    # Serial ranges never overlap: (issuer, serial_start), the keyset, is unique.
    return list({(b.issuer, b.serial_start): b for b in out}.values())


def _store(node, items: list[Bundle]) -> None:
    with node.store.transaction() as conn:
        conn.execute(delete(t.bundles))
        conn.execute(delete(t.bundle_runs))
        repos.insert_bundles(conn, items)


@st.composite
def issued_runs(draw, dialect: str, owners: list[str]) -> list[dict]:
    """Issuance runs (``run_repos.insert_runs`` arguments) with any text and integers, in
    disjoint serial ranges; each record is drawn as kept, changed or split later."""
    text = _text(dialect)
    issuers = draw(st.lists(_text(dialect, 1), min_size=1, max_size=2, unique=True))
    out, at = [], draw(st.integers(0, 2**50))
    for _ in range(draw(st.integers(0, 4))):
        sizes = draw(st.lists(st.integers(1, 2**20), min_size=1, max_size=6))
        ends = [at + sum(sizes[: i + 1]) for i in range(len(sizes))]
        starts = [at, *ends[:-1]]
        n = len(sizes)
        out.append(
            dict(
                issuer=draw(st.sampled_from(issuers)),
                batch_seq=draw(st.integers(1, 2**40)),
                issued_at_ms=draw(I64),
                records={
                    "serial_start": np.array(starts, np.int64),
                    "serial_end": np.array(ends, np.int64),
                    "interval_start": np.array(draw(st.lists(I64, min_size=n, max_size=n))),
                    "interval_end": np.array(draw(st.lists(I64, min_size=n, max_size=n))),
                    "device": np.zeros(n, np.int64),
                },
                devices=[_device(draw, text, owners)],
                lineage=draw(st.binary(min_size=32 * n, max_size=32 * n)),
                fate=draw(st.lists(st.sampled_from(["kept", "retired", "moved", "split"]),
                                   min_size=n, max_size=n)),
            )
        )
        at = ends[-1] + draw(st.integers(0, 10))
    return out


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_run_records_list_as_rows_would(node, data):
    """Records kept as issuance runs list, render and count like rows; the first change of
    one writes its row, which replaces the run's copy in every listing."""
    owners = ["acct_a", "acct_b"]
    runs = data.draw(issued_runs(node.store.dialect, owners))
    want: dict[str, tuple[int, str]] = {}  # bundle id -> (status, owner)
    with node.store.transaction() as conn:
        conn.execute(delete(t.bundles))
        conn.execute(delete(t.bundle_runs))
        for r in runs:
            args = {k: v for k, v in r.items() if k != "fate"}
            run_repos.insert_runs(conn, **args)
    with node.store.transaction() as conn:
        for r in runs:
            recs = r["records"]
            for s, e, fate in zip(recs["serial_start"].tolist(), recs["serial_end"].tolist(),
                                  r["fate"], strict=True):
                bid = bundle_id(r["issuer"], s, e)
                owner = r["devices"][0]["owner"]
                b, version = repos.get_bundle(conn, bid, lock=fate != "kept")
                assert (b.owner, b.status, version) == (owner, int(Status.ACTIVE), 0)
                status = Status.ACTIVE
                if fate == "retired":
                    status = Status.RETIRED
                elif fate == "split":
                    status = Status.SPLIT
                if fate == "moved":
                    owner = "acct_c"
                if fate != "kept":
                    assert repos.set_bundle_state(conn, bid, 0, expect_status=Status.ACTIVE,
                                                  status=int(status), owner=owner)
                    # the row won: the run's copy is gone from every read, a stale version fails
                    assert repos.get_bundle(conn, bid)[1] == 1
                    assert not repos.set_bundle_state(conn, bid, 0, expect_status=status)
                want[bid] = (int(status), owner)
                if fate == "split" and e - s > 1:  # the children get rows of their own
                    kids = [make_bundle(r["issuer"], s, s + 1, owner, Status.ACTIVE),
                            make_bundle(r["issuer"], s + 1, e, owner, Status.ACTIVE)]
                    for k in kids:
                        k.parent_id = bid
                        want[k.id] = (int(Status.ACTIVE), owner)
                    repos.insert_bundles(conn, kids)
    listed = {b.id: (b.status, b.owner) for b in node.stream_bundles(purpose=OPS)}
    assert listed == want
    for filters in ({}, {"owner": "acct_a"}, {"owner": "acct_c"}, {"status": int(Status.ACTIVE)},
                    {"owner": "acct_b", "status": int(Status.RETIRED)}):
        lines = "".join(node.stream_bundle_lines(purpose=OPS, **filters))
        assert lines == _per_record(node, purpose=OPS, **filters)
        assert lines.count("\n") == sum(
            1 for st_, ow in want.values()
            if ow == filters.get("owner", ow) and st_ == filters.get("status", st_)
        )
    got = "".join(listings.walk_bundle_lines(
        node.store, owner=None, status=None, device=None, first_page=2, page_size=3))
    assert got == _per_record(node, purpose=OPS)
    with node.store.read() as conn:
        # (the maintained totals are not comparable here: the test deletes runs behind them)
        assert repos.full_totals(conn)["bundles_active"] == sum(
            1 for st_, _ in want.values() if st_ == int(Status.ACTIVE))


def _per_record(node, **filters) -> str:
    """The per-record path: records through list_bundles, machine output per row."""
    return "".join(
        json.dumps(machine_record(b), sort_keys=True) + "\n" for b in node.stream_bundles(**filters)
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_database_lines_equal_the_per_record_lines(node, data):
    owners = ["acct_a", "acct_b"]
    items = data.draw(bundles(node.store.dialect, owners))
    _store(node, items)
    for filters in (
        {},
        {"owner": "acct_a"},
        {"status": int(Status.ACTIVE)},
        {"owner": "acct_b", "status": int(Status.RETIRED)},
    ):
        want = _per_record(node, purpose=OPS, **filters)
        assert "".join(node.stream_bundle_lines(purpose=OPS, **filters)) == want
        assert want.count("\n") == sum(
            1
            for b in items
            if b.owner == filters.get("owner", b.owner)
            and b.status == filters.get("status", b.status)
        )
    # small pages and a limit: same lines, same order, cut at the limit
    want = _per_record(node, purpose=OPS).splitlines(keepends=True)
    limit = data.draw(st.integers(0, len(want) + 1))
    got = "".join(
        listings.walk_bundle_lines(
            node.store,
            owner=None,
            status=None,
            device=None,
            limit=limit,
            first_page=2,
            page_size=3,
        )
    )
    assert got == "".join(want[:limit] if limit else want)


def test_lines_of_every_purpose_follow_list_bundles(node):
    acct = node.create_account(request_id="a").account.id
    other = node.create_account(request_id="b").account.id
    items = [
        make_bundle(
            "medellin.example",
            i * 10,
            i * 10 + 10,
            (acct, other)[i % 2],
            Status.ACTIVE,
            hour=i,
            source=int(Source.WIND),
            technology=int(Technology.ONSHORE_WIND),
            cell="8a66e3a6d8affff",
            lineage_hash="ab" * 32,
            issued_at_ms=1,
        )
        for i in range(30)
    ]
    _store(node, items)
    holder = Principal("account", acct)
    cases = [
        dict(purpose=OPS),
        dict(purpose=Purpose.TRANSPARENCY),
        dict(purpose=Purpose.TRANSPARENCY, principal=holder, owner=other),
        dict(purpose=Purpose.HOLDINGS, principal=holder),
        dict(purpose=Purpose.HOLDINGS, principal=holder, owner=other),  # its own, still
    ]
    for kw in cases:
        got = "".join(node.stream_bundle_lines(**kw))
        assert got == _per_record(node, **kw) and got
    assert {json.loads(x)["owner"] for x in got.splitlines()} == {acct}
    for kw in (
        dict(purpose=OPS, principal=holder),  # OPERATIONS is the operator's
        dict(purpose=Purpose.REGULATION),  # aggregates only
        dict(purpose=Purpose.HOLDINGS),  # the operator holds no account
        dict(purpose=Purpose.UNSPECIFIED),
    ):
        with pytest.raises(EapError) as lines_err:
            "".join(node.stream_bundle_lines(**kw))
        with pytest.raises(EapError) as records_err:
            _per_record(node, **kw)
        assert type(lines_err.value) is type(records_err.value)


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_purposes_said_not_to_redact_bundles_do_not(data):
    """The database-rendered listing relies on ``redacts_bundles``."""
    b = data.draw(bundles("sqlite", ["acct_a"]))
    for purpose in Purpose:
        if not redacts_bundles(purpose):
            assert all(redact_bundle(x, purpose) == x for x in b)


def test_cli_prints_the_per_record_lines(tmp_path):
    from support import make_node

    node = make_node(tmp_path / "home")
    owner = node.create_account(request_id="a").account.id
    items = [
        Bundle(
            id=f"medellin.example/{i}-{i + 1}",
            issuer="medellin.example",
            serial_start=i,
            serial_end=i + 1,
            device_id="dev_x",
            interval_start=0,
            interval_end=3600,
            source=int(Source.SOLAR),
            technology=int(Technology.PHOTOVOLTAIC),
            renewable_ppm=1_000_000,
            carbon_mg=0,
            zone="CO-ANT",
            cell="zoné\x7f" if i == 1500 else "8a66e3a6d8affff",  # one row rendered in Python
            owner=owner,
            status=int(Status.ACTIVE if i % 3 else Status.RETIRED),
            parent_id=None if i % 2 else "medellin.example/0-1",
            lineage_hash="ab" * 32,
            issued_at_ms=i,
        )
        for i in range(2500)
    ]
    _store(node, items)
    want = _per_record(node, purpose=OPS, owner=owner)
    home = node.config.home
    node.close()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "eap.node",
            "bundles",
            "--owner",
            owner,
            "--json",
            "--home",
            str(home),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.decode() == want and len(want.splitlines()) == 2500
    assert '"cell": "zon\\u00e9\\u007f"' in want


def test_a_redacting_purpose_gets_its_lines_from_the_records(node, monkeypatch):
    """Were a purpose to redact bundle fields, its lines would come through redact_bundle."""
    from eap.node.domain import node as node_module

    items = [
        Bundle(
            id=f"medellin.example/{i}-{i + 1}",
            issuer="medellin.example",
            serial_start=i,
            serial_end=i + 1,
            device_id="dev_x",
            interval_start=0,
            interval_end=3600,
            source=int(Source.SOLAR),
            technology=99,
            renewable_ppm=0,
            carbon_mg=0,
            zone="CO-ANT",
            cell="zoné" if i == 3 else "c",
            owner="acct_a",
            status=int(Status.ACTIVE),
            parent_id=None,
            lineage_hash="",
            issued_at_ms=i,
        )
        for i in range(1500)
    ]
    _store(node, items)
    want = _per_record(node, purpose=OPS)
    redacted = []

    def redact(bundle, purpose):
        redacted.append(bundle.id)
        return bundle

    monkeypatch.setattr(node_module, "redacts_bundles", lambda purpose: True)
    monkeypatch.setattr(node_module, "redact_bundle", redact)
    assert "".join(node.stream_bundle_lines(purpose=OPS)) == want
    assert len(redacted) == want.count("\n")
    assert "".join(node.stream_bundle_lines(purpose=OPS, limit=1)) == "".join(
        want.splitlines(keepends=True)[:1]
    )
