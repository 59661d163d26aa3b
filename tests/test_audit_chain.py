"""The audit log of personal-data reads is hash-chained and append-only (privacy, part 2).

Every read that discloses personal fields (account labels, device location / meter id, claim
beneficiaries) appends a row naming who, why, what and whose; ``audit-log verify`` detects any
edit, deletion, reordering or truncated tail; PostgreSQL refuses UPDATE/DELETE outright; a holder
lists who read its data through the CLI and over gRPC with its own token.
"""

from __future__ import annotations

import json
import threading

import grpc
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from eap.node.api.server import build_server
from eap.node.cli import main
from eap.node.domain import audit_trail
from eap.node.errors import InvalidArgument, PermissionDenied
from eap.node.privacy_cli import AUDIT_BROKEN_EXIT
from eap.node.records.enums import Purpose
from eap.node.records.models import Principal
from eap.v1 import node_api_pb2 as api
from eap.v1 import node_api_pb2_grpc


def _device(node, owner: str, ref: str) -> None:
    node.register_device(
        request_id=f"dev-{ref}",
        local_ref=ref,
        capacity_w=400,
        source="solar",
        technology="photovoltaic",
        commissioned_on="2021-01-01",
        latitude=6.25,
        longitude=-75.56,
        zone="CO-ANT",
        owner=owner,
        meter_id=f"meter-{ref}",
        attestation_evidence="grid agreement",
    )


@pytest.fixture
def people(node):
    """Two households with a device each; the operator has read nothing yet."""
    alice = node.create_account(request_id="alice", label="Alice Gómez")
    bob = node.create_account(request_id="bob", label="Bob")
    _device(node, alice.account.id, "roof-a")
    _device(node, bob.account.id, "roof-b")
    return alice, bob


def _raw(node, sql: str, **params):
    with node.store.engine.begin() as conn:
        return conn.execute(text(sql), params)


def _unlock(node) -> None:
    """What an attacker with the table owner's rights does first on PostgreSQL."""
    if node.store.dialect == "postgresql":
        _raw(node, "ALTER TABLE audit_log DISABLE TRIGGER USER")
        _raw(node, "ALTER TABLE audit_subjects DISABLE TRIGGER USER")


def _reads(node) -> None:
    node.list_accounts(purpose=Purpose.OPERATIONS)
    node.list_devices(purpose=Purpose.OPERATIONS)
    node.list_devices(purpose=Purpose.TRANSPARENCY)  # discloses nothing personal: no row
    node.list_accounts(purpose=Purpose.TRANSPARENCY)  # labels hidden: no row


def test_reads_of_personal_fields_are_chained_with_who_why_what_whose(node, people):
    alice, bob = people
    _reads(node)
    holder = node.principal_for_token(alice.token)
    node.list_accounts(purpose=Purpose.HOLDINGS, principal=holder)  # her own label
    ops = node.audit_entries(account=alice.account.id).items
    assert [(e.principal, e.purpose, e.what, e.count) for e in ops] == [
        ("operator", "OPERATIONS", "accounts", 2),
        ("operator", "OPERATIONS", "devices", 2),
        (f"account:{alice.account.id}", "HOLDINGS", "accounts", 1),
    ]
    assert set(ops[0].accounts) == {alice.account.id, bob.account.id}
    assert ops[0].fields == ("label", "identity")
    assert "meter_id" in ops[1].fields and "latitude" in ops[1].fields
    assert ops[0].prev_hash == "0" * 64 and ops[1].prev_hash == ops[0].row_hash
    # the operator's look at Alice's trail is itself logged, naming her
    look = node.audit_entries(account=alice.account.id).items[-1]
    assert (look.what, look.accounts) == ("audit_log", (alice.account.id,))
    result = node.verify_audit_log()
    assert result.ok, result.problems
    assert result.count == result.head_count == 5 and result.head_signed_by


def test_claim_beneficiaries_are_personal(node, solar, meter_csv):
    owner, _ = solar
    node.import_readings(meter_csv, request_id="imp")
    node.issue(request_id="iss")
    b = node.list_bundles(purpose=Purpose.OPERATIONS, owner=owner, page_size=1).items[0]
    node.retire(b.id, wh=10, beneficiary="Escuela La Esperanza", purpose="p", request_id="r")
    claims = node.list_claims(purpose=Purpose.TRANSPARENCY).items
    assert claims[0].beneficiary == "Escuela La Esperanza"
    row = node.audit_entries(account=owner).items[0]
    assert (row.what, row.fields, row.purpose) == ("claims", ("beneficiary",), "TRANSPARENCY")


def _corrupt(node, how: str) -> None:
    _unlock(node)
    if how == "edit":
        _raw(node, "UPDATE audit_log SET principal = 'nobody' WHERE seq = 2")
    elif how == "edit-and-rehash":  # rewrite a row consistently; the next row's link breaks
        _raw(node, "UPDATE audit_log SET count = 99 WHERE seq = 1")
        row = _raw(node, "SELECT * FROM audit_log WHERE seq = 1").mappings().one()
        fixed = audit_trail.ar.row_digest(
            seq=1,
            at_ms=row["at_ms"],
            principal=row["principal"],
            via=row["via"],
            purpose=row["purpose"],
            what=row["what"],
            count=99,
            accounts=json.loads(row["accounts"]),
            fields=row["fields"].split(","),
            prev_hash=row["prev_hash"],
        )
        _raw(node, "UPDATE audit_log SET row_hash = :h WHERE seq = 1", h=fixed)
    elif how == "delete":
        _raw(node, "DELETE FROM audit_subjects WHERE seq = 2")
        _raw(node, "DELETE FROM audit_log WHERE seq = 2")
    elif how == "reorder":
        _raw(node, "UPDATE audit_log SET seq = -1 WHERE seq = 1")
        _raw(node, "UPDATE audit_log SET seq = 1 WHERE seq = 2")
        _raw(node, "UPDATE audit_log SET seq = 2 WHERE seq = -1")
    elif how == "truncate-tail":
        _raw(node, "DELETE FROM audit_subjects WHERE seq = 3")
        _raw(node, "DELETE FROM audit_log WHERE seq = 3")
    elif how == "hide-subject":
        _raw(node, "DELETE FROM audit_subjects WHERE seq = 1")
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how", ["edit", "edit-and-rehash", "delete", "reorder", "truncate-tail", "hide-subject"]
)
def test_verify_detects_tampering(node, people, how):
    _reads(node)
    node.list_claims(purpose=Purpose.OPERATIONS)  # no claims: nothing disclosed, no row
    node.list_accounts(purpose=Purpose.OPERATIONS)
    assert node.verify_audit_log().count == 3
    _corrupt(node, how)
    result = node.verify_audit_log()
    assert not result.ok and result.problems
    runner = CliRunner()
    out = runner.invoke(main, ["audit-log", "verify", "--home", str(node.config.home)])
    assert out.exit_code == AUDIT_BROKEN_EXIT, out.output
    assert "BROKEN" in out.output and "problem:" in out.output


def test_truncation_with_a_rolled_back_head_needs_the_kept_head(node, people):
    """An attacker who saved an earlier (log, head) pair can restore both; the head kept
    outside the node (``--expect``) still catches it."""
    node.list_accounts(purpose=Purpose.OPERATIONS)
    old = _raw(node, "SELECT * FROM audit_head").mappings().one()
    node.list_devices(purpose=Purpose.OPERATIONS)
    kept = node.verify_audit_log()
    expect = f"{kept.count}:{kept.last_hash}"
    _unlock(node)
    _raw(node, "DELETE FROM audit_subjects WHERE seq = 2")
    _raw(node, "DELETE FROM audit_log WHERE seq = 2")
    _raw(
        node,
        "UPDATE audit_head SET count = :c, last_hash = :h, signature = :s, key_id = :k",
        c=old["count"],
        h=old["last_hash"],
        s=old["signature"],
        k=old["key_id"],
    )
    assert node.verify_audit_log().ok  # indistinguishable without the kept head
    bad = node.verify_audit_log(audit_trail.parse_expected_head(expect))
    assert not bad.ok and "fewer than the expected head" in bad.problems[0]
    out = CliRunner().invoke(
        main, ["audit-log", "verify", "--expect", expect, "--home", str(node.config.home)]
    )
    assert out.exit_code == AUDIT_BROKEN_EXIT
    with pytest.raises(InvalidArgument):
        audit_trail.parse_expected_head("3:xyz")


def test_forged_head_signature_is_detected(node, people):
    node.list_accounts(purpose=Purpose.OPERATIONS)
    _raw(node, "UPDATE audit_head SET signature = :s", s="00" * 64)
    result = node.verify_audit_log()
    assert not result.ok and "signature" in result.problems[0]


@pytest.mark.postgres
def test_postgres_refuses_update_delete_truncate(pg_url, tmp_path):
    from support import make_node

    node = make_node(tmp_path / "pg", pg_url)
    try:
        node.create_account(request_id="a", label="x")
        node.list_accounts(purpose=Purpose.OPERATIONS)
        for sql in (
            "UPDATE audit_log SET principal = 'x'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
            "DELETE FROM audit_subjects",
        ):
            with pytest.raises(Exception, match="append-only"):
                _raw(node, sql)
        assert node.verify_audit_log().ok
    finally:
        node.close()


def test_concurrent_readers_never_fork_the_chain(node, people):
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(5):
                node.list_accounts(purpose=Purpose.OPERATIONS)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    result = node.verify_audit_log()
    assert result.ok and result.count == 20


def test_cli_list_prints_literally_and_json(node, people):
    alice, _ = people
    _reads(node)
    runner = CliRunner()
    home = str(node.config.home)
    out = runner.invoke(
        main, ["audit-log", "list", "--account", alice.account.id, "--json", "--home", home]
    )
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert [r["what"] for r in rows] == ["accounts", "devices"]
    text_out = runner.invoke(
        main, ["audit-log", "list", "--account", alice.account.id, "--home", home]
    )
    assert "operator via local\tOPERATIONS\taccounts x2" in text_out.output
    bad = runner.invoke(main, ["audit-log", "list", "--account", "nobody", "--home", home])
    assert bad.exit_code != 0 and "acct_" in bad.output
    ok = runner.invoke(main, ["audit-log", "verify", "--json", "--home", home])
    assert ok.exit_code == 0 and json.loads(ok.output)["ok"]
    for cmd in (
        ["audit-log", "--help"],
        ["audit-log", "verify", "--help"],
        ["audit-log", "list", "--help"],
    ):
        assert runner.invoke(main, cmd).exit_code == 0


def test_holders_list_only_their_own_rows_over_grpc(node, people):
    alice, bob = people
    server, port = build_server(node, "127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = node_api_pb2_grpc.NodeApiStub(channel)
        op = (("authorization", f"Bearer {node.config.api_token()}"),)
        stub.ListDevices(api.ListDevicesRequest(purpose=api.READ_PURPOSE_OPERATIONS), metadata=op)
        mine = (("authorization", f"Bearer {alice.token}"),)
        got = stub.ListAuditEntries(api.ListAuditEntriesRequest(), metadata=mine).entries
        assert [(e.principal, e.via, e.what) for e in got] == [("operator", "grpc", "devices")]
        assert list(got[0].accounts) == sorted([alice.account.id, bob.account.id])
        with pytest.raises(grpc.RpcError) as err:
            stub.ListAuditEntries(
                api.ListAuditEntriesRequest(account=bob.account.id), metadata=mine
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        regulator = (("authorization", f"Bearer {node.config.create_regulator_token()}"),)
        with pytest.raises(grpc.RpcError) as err:
            stub.ListAuditEntries(
                api.ListAuditEntriesRequest(account=bob.account.id), metadata=regulator
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        page = stub.ListAuditEntries(
            api.ListAuditEntriesRequest(account=bob.account.id, page_size=1), metadata=op
        )
        assert len(page.entries) == 1 and page.next_page_token == "1"
    finally:
        channel.close()
        server.stop(0).wait()
    with pytest.raises(PermissionDenied):
        node.audit_entries(account=bob.account.id, principal=Principal("account", "acct_x"))
    assert node.verify_audit_log().ok


def test_matching_reports_of_an_account_are_audited(node, solar, meter_csv):
    """A consumer's hourly claims are its consumption profile: reading them is logged."""
    from eap.node.domain.matching import build

    owner, _ = solar
    node.import_readings(meter_csv, request_id="imp")
    node.issue(request_id="iss")
    b = node.list_bundles(purpose=Purpose.OPERATIONS, owner=owner, page_size=1).items[0]
    node.retire(b.id, wh=10, beneficiary=owner, purpose="p", request_id="r")
    build(node, account=owner, start=b.interval_start, end=b.interval_end)
    build(
        node,
        account=owner,
        start=b.interval_start,
        end=b.interval_end,
        principal=Principal("account", owner),
    )
    rows = [e for e in node.audit_entries(account=owner).items if e.what == "matching"]
    assert [(e.principal, e.purpose, e.fields) for e in rows] == [
        ("operator", "OPERATIONS", ("claims", "consumption")),
        (f"account:{owner}", "HOLDINGS", ("claims", "consumption")),
    ]
    assert node.verify_audit_log().ok


_COLUMNS = [
    "at_ms",
    "principal",
    "via",
    "purpose",
    "what",
    "count",
    "accounts",
    "fields",
    "prev_hash",
    "row_hash",
    "seq",
]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_single_column_edit_is_detected(tmp_path_factory, data):
    """Hypothesis: on a chain of 6 rows, changing any one column of any row is caught."""
    from support import make_node

    node = _CHAINS.get("node")
    if node is None:
        node = make_node(tmp_path_factory.mktemp("chain") / "home")
        alice = node.create_account(request_id="a", label="A").account.id
        _device(node, alice, "roof")
        for _ in range(3):
            _reads(node)
        _CHAINS["node"] = node
    seq = data.draw(st.integers(1, 6))
    column = data.draw(st.sampled_from(_COLUMNS))
    row = _raw(node, "SELECT * FROM audit_log WHERE seq = :s", s=seq).mappings().one()
    old = row[column]
    new = data.draw(
        st.integers(-5, 10**13).filter(lambda v: v != old)
        if isinstance(old, int)
        else st.text('abcdef0123456789[]",:_', min_size=0, max_size=70).filter(lambda v: v != old)
    )
    if column == "seq" and new in range(1, 7):
        new = 1000 + new  # keep the unique constraint: a moved row, not a collision
    _raw(node, f"UPDATE audit_log SET {column} = :v WHERE seq = :s", v=new, s=seq)
    try:
        assert not node.verify_audit_log().ok
    finally:
        where = "seq = :k" if column == "seq" else "seq = :s"
        _raw(node, f"UPDATE audit_log SET {column} = :v WHERE {where}", v=old, s=seq, k=new)
    assert node.verify_audit_log().ok


_CHAINS: dict = {}
