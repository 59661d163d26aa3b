"""Listings that stream: keyset pages on composite indexes (no sort, never OFFSET), constant
memory, serial order, JSON Lines from the CLI and server-streaming RPCs."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc

import grpc
import pytest
from sqlalchemy import text
from support import make_bundle

from eap.node.api.server import build_server
from eap.node.domain.ledger import bundle_id
from eap.node.records.enums import Purpose, Status
from eap.node.records.models import Bundle
from eap.node.store import repos
from eap.v1 import node_api_pb2 as api
from eap.v1 import node_api_pb2_grpc

OPS = Purpose.OPERATIONS


def _fill(node, owners: list[str], n: int, issuer: str = "", start: int = 0) -> None:
    """``n`` bundles straight into the store (round-robin owners, every third retired)."""
    issuer = issuer or node.node_id
    items = [
        make_bundle(
            issuer,
            start + i * 10,
            start + i * 10 + 10,
            owners[i % len(owners)],
            Status.RETIRED if i % 3 == 0 else Status.ACTIVE,
            hour=i,
        )
        for i in range(n)
    ]
    with node.store.transaction() as conn:
        for lo in range(0, n, 5000):
            repos.insert_bundles(conn, items[lo : lo + 5000])


def _accounts(node, k: int) -> list[str]:
    return [node.create_account(request_id=f"acct-{i}").account.id for i in range(k)]


FILTERS = [
    dict(owner="acct_x", status=None, device=None),
    dict(owner="acct_x", status=1, device=None),
    dict(owner=None, status=1, device=None),
    dict(owner=None, status=None, device="dev_x"),
    dict(owner=None, status=None, device=None),
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: "+".join(k for k in f if f[k]) or "all")
def test_the_page_query_is_an_index_range_scan_without_a_sort(node, filters):
    q = repos.bundles_page_query(after="medellin.example/100-110", limit=1000, **filters)
    with node.store.read() as conn:
        sql = str(q.compile(conn, compile_kwargs={"literal_binds": True}))
        assert q._offset_clause is None  # keyset, never OFFSET
        if conn.dialect.name == "sqlite":
            plan = " | ".join(r[-1] for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
            assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan
            assert "TEMP B-TREE" not in plan, plan  # no sort
        else:
            # Forbid the alternatives so the plan shows what the indexes can do: a Sort node
            # would remain (at a prohibitive cost) if no index gave the order.
            conn.execute(text("SET LOCAL enable_seqscan = off"))
            conn.execute(text("SET LOCAL enable_sort = off"))
            conn.execute(text("SET LOCAL enable_incremental_sort = off"))
            plan = " | ".join(r[0] for r in conn.execute(text("EXPLAIN " + sql)))
            assert "Index" in plan, plan
            assert "Sort" not in plan, plan
    assert any(ix in plan for ix in ("ix_bundles_", "uq_bundles_range", "autoindex_bundles")), plan
    # the filter's own index: only it gives the page's order
    want = {
        "owner": "ix_bundles_owner_serial",
        "owner+status": "ix_bundles_owner_status_serial",
        "status": "ix_bundles_status_serial",
        "device": "ix_bundles_device_serial",
    }.get("+".join(k for k in filters if filters[k]))
    assert want is None or want in plan, plan


@pytest.mark.postgres
def test_a_small_owners_page_is_read_on_the_owner_index_in_a_large_table(pg_url, tmp_path):
    """With statistics of a table where one owner holds nearly everything, PostgreSQL must
    still read another owner's page on the owner index, not walk the serial range index
    filtering the large owner's rows out."""
    from support import make_node

    node = make_node(tmp_path / "home", pg_url)
    try:
        big, small = _accounts(node, 2)
        _fill(node, [big] * 199 + [small], 6000)
        with node.store.transaction() as conn:
            conn.execute(text("ANALYZE bundles"))
        for after in ("", f"{node.node_id}/10-20", f"{node.node_id}/30000-30010"):
            q = repos.bundles_page_query(
                owner=small, status=None, device=None, after=after, limit=100
            )
            with node.store.read() as conn:
                sql = str(q.compile(conn, compile_kwargs={"literal_binds": True}))
                plan = " | ".join(r[0] for r in conn.execute(text("EXPLAIN " + sql)))
            assert "ix_bundles_owner_serial" in plan and "Sort" not in plan, plan
        got = list(node.stream_bundles(purpose=OPS, owner=small, page_size=7))
        assert len(got) == 30 and all(b.owner == small for b in got)
    finally:
        node.close()


def test_claims_by_beneficiary_page_on_their_index(node):
    from eap.node.store import schema as t

    c = t.claims.c
    with node.store.read() as conn:
        if conn.dialect.name != "sqlite":
            pytest.skip("SQLite plan; the PostgreSQL index is the same")
        sql = "SELECT seq FROM claims WHERE beneficiary = 'x' AND seq > 5 ORDER BY seq LIMIT 100"
        plan = " | ".join(r[-1] for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
    assert "ix_claims_beneficiary_seq" in plan and "TEMP B-TREE" not in plan, plan
    assert c.beneficiary is not None


def test_streams_walk_every_match_in_serial_order(node):
    owners = _accounts(node, 3)
    _fill(node, owners, 2500)
    _fill(node, owners, 300, issuer="barcelona.example", start=5)
    got = list(node.stream_bundles(purpose=OPS, owner=owners[1], status=int(Status.ACTIVE)))
    want = sorted(
        (b for b in _all(node) if b.owner == owners[1] and b.status == Status.ACTIVE),
        key=lambda b: (b.issuer, b.serial_start),
    )
    assert [b.id for b in got] == [b.id for b in want] and len(got) > 500
    # serial order, not string order of the ids ("…/100-110" after "…/90-100")
    keys = [(b.issuer, b.serial_start) for b in node.stream_bundles(purpose=OPS)]
    assert keys == sorted(keys) and len(keys) == 2800


def _all(node):
    with node.store.read() as conn:
        return list(repos.all_bundles(conn))


def _peak_while_streaming(node, **filters) -> tuple[int, int]:
    tracemalloc.start()
    try:
        n = sum(1 for _ in node.stream_bundles(purpose=OPS, **filters))
        return n, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_streaming_memory_is_flat_in_the_listing_size(node):
    owners = _accounts(node, 1)
    _fill(node, owners, 3000)
    n1, peak1 = _peak_while_streaming(node)
    _fill(node, owners, 9000, start=10**6)
    n4, peak4 = _peak_while_streaming(node)
    assert (n1, n4) == (3000, 12000)
    # Four times the rows, about the same peak: one page is held, never the listing.
    assert peak4 < peak1 * 1.5, (peak1, peak4)


def _cli(home, *args):
    return subprocess.run(
        [sys.executable, "-m", "eap.node", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_json_is_json_lines_with_named_enums(tmp_path):
    from support import make_node

    node = make_node(tmp_path / "home")
    owners = _accounts(node, 2)
    _fill(node, owners, 1500)
    home = node.config.home
    node.close()
    out = _cli(home, "bundles", "--owner", owners[0], "--json")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 750 and {x["owner"] for x in lines} == {owners[0]}
    assert {x["status"] for x in lines} == {"ACTIVE", "RETIRED"}
    assert {x["source"] for x in lines} == {"SOLAR"}
    assert [x["serial_start"] for x in lines] == sorted(x["serial_start"] for x in lines)
    limited = _cli(home, "bundles", "--status", "retired", "--limit", "7", "--json")
    assert [json.loads(x)["status"] for x in limited.stdout.splitlines()] == ["RETIRED"] * 7
    table = _cli(home, "bundles", "--limit", "3")
    assert table.returncode == 0 and table.stdout.splitlines()[0] == "bundles"
    assert len(table.stdout.splitlines()) == 5  # title, header, 3 rows


def test_stream_rpcs_send_every_row(node):
    owners = _accounts(node, 2)
    _fill(node, owners, 2300)
    server, port = build_server(node, "127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = node_api_pb2_grpc.NodeApiStub(ch)
            md = (("authorization", f"Bearer {node.config.api_token()}"),)
            got = list(
                stub.StreamBundles(
                    api.ListBundlesRequest(purpose=api.READ_PURPOSE_OPERATIONS, owner=owners[0]),
                    metadata=md,
                )
            )
            assert len(got) == 1150 and {b.owner for b in got} == {owners[0]}
            assert [b.serial_start for b in got] == sorted(b.serial_start for b in got)
            after = list(
                stub.StreamBundles(
                    api.ListBundlesRequest(
                        purpose=api.READ_PURPOSE_OPERATIONS, owner=owners[0], page_token=got[99].id
                    ),
                    metadata=md,
                )
            )
            assert [b.id for b in after] == [b.id for b in got[100:]]
            assert (
                list(
                    stub.StreamDevices(
                        api.ListDevicesRequest(purpose=api.READ_PURPOSE_OPERATIONS), metadata=md
                    )
                )
                == []
            )
            assert (
                list(
                    stub.StreamClaims(
                        api.ListClaimsRequest(purpose=api.READ_PURPOSE_OPERATIONS), metadata=md
                    )
                )
                == []
            )
            with pytest.raises(grpc.RpcError) as err:
                list(
                    stub.StreamBundles(
                        api.ListBundlesRequest(
                            purpose=api.READ_PURPOSE_OPERATIONS, page_token="not a token"
                        ),
                        metadata=md,
                    )
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as err:
                list(
                    stub.StreamBundles(api.ListBundlesRequest(purpose=api.READ_PURPOSE_OPERATIONS))
                )
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.stop(0).wait()


def test_the_fast_record_path_equals_the_general_one(node):
    from eap.node.cli_output import machine, machine_record

    owners = _accounts(node, 1)
    _fill(node, owners, 3)
    for b in node.stream_bundles(purpose=OPS):
        assert machine_record(b) == machine(b.to_dict())
        assert machine_record(b)["status"] in ("ACTIVE", "RETIRED")
    for a in node.stream_accounts(purpose=OPS):
        assert machine_record(a) == machine(a.to_dict())


def test_json_lines_writes_each_row_before_reading_the_next(monkeypatch):
    """The first line is out (and flushed) before the second row is even produced."""

    from eap.node.cli_output import json_lines

    events: list[str] = []

    class Out:
        def write(self, s):
            events.append(f"write {json.loads(s)['n']}")

        def flush(self):
            events.append("flush")

    def rows():
        for n in range(3):
            events.append(f"read {n}")
            yield Bundle(
                id=f"x/{n}-{n + 1}",
                issuer="x",
                serial_start=n,
                serial_end=n + 1,
                device_id="d",
                interval_start=0,
                interval_end=1,
                source=1,
                technology=1,
                renewable_ppm=0,
                carbon_mg=0,
                zone="Z",
                cell="C",
                owner="o",
                status=1,
                parent_id=None,
                lineage_hash="",
                issued_at_ms=0,
            )

    monkeypatch.setattr(sys, "stdout", Out())
    assert json_lines(rows(), lambda b: {"n": b.serial_start}) == 3
    assert events[:4] == ["read 0", "write 0", "flush", "read 1"]


@pytest.mark.parametrize(
    "where",
    [
        "",
        "direction = 'out' AND ",
        "state = 'committed' AND ",
        "direction = 'in' AND state = 'prepared' AND ",
    ],
)
def test_transfer_pages_use_an_index_without_a_sort(node, where):
    sql = (
        f"SELECT id FROM transfers WHERE {where}(created_at_ms, id) > (5, 'a/x') "
        "ORDER BY created_at_ms, id LIMIT 1000"
    )
    with node.store.read() as conn:
        if conn.dialect.name == "sqlite":
            plan = " | ".join(r[-1] for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
            assert "TEMP B-TREE" not in plan, plan
        else:
            conn.execute(text("SET LOCAL enable_seqscan = off"))
            conn.execute(text("SET LOCAL enable_sort = off"))
            plan = " | ".join(r[0] for r in conn.execute(text("EXPLAIN " + sql)))
            assert "Sort" not in plan, plan
    assert "ix_transfers_" in plan, plan


def _split_family(node, owner: str) -> list[str]:
    """A SPLIT parent and its children, all ``owner``'s: the parent and its first child share
    their first serial (the keyset tie the listings must break)."""
    me = node.node_id
    parent, first = bundle_id(me, 0, 10), bundle_id(me, 0, 4)
    family = [
        make_bundle(me, 0, 10, owner, Status.SPLIT),
        make_bundle(me, 0, 4, owner, Status.SPLIT, parent_id=parent),  # split again
        make_bundle(me, 0, 1, owner, Status.RETIRED, parent_id=first),
        make_bundle(me, 1, 4, owner, Status.ACTIVE, parent_id=first),
        make_bundle(me, 4, 10, owner, Status.ACTIVE, parent_id=parent),
    ]
    with node.store.transaction() as conn:
        repos.insert_bundles(conn, family[::-1])
    return [b.id for b in family]


@pytest.mark.parametrize("page_size", [1, 2, 3, 100])
@pytest.mark.parametrize("by", ["owner", "device", "all"])
def test_pages_never_skip_a_split_child_sharing_its_parents_first_serial(node, page_size, by):
    owner = _accounts(node, 1)[0]
    ids = _split_family(node, owner)
    filters = {"owner": {"owner": owner}, "device": {"device": "dev_x"}, "all": {}}[by]
    got = [b.id for b in node.stream_bundles(purpose=OPS, page_size=page_size, **filters)]
    # serial order: by first serial, then last (a first child before its parent)
    assert got == sorted(ids, key=repos.bundle_page_key)
    lines = node.stream_bundle_lines(purpose=OPS, **filters)
    assert [json.loads(x)["id"] for x in "".join(lines).splitlines()] == got


@pytest.mark.parametrize(
    "token", ["x.example/9223372036854775808-1", "x.example/1-9999999999999999999"]
)
def test_a_page_token_beyond_64_bit_serials_is_refused_cleanly(node, token):
    from eap.node.errors import InvalidArgument

    with pytest.raises(InvalidArgument) as e:
        node.list_bundles(purpose=OPS, page_token=token)
    assert e.value.violations[0].field == "page_token"
