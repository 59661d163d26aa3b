"""The ``coopdb`` plugin against the real MariaDB server: a co-op's member system as account
directory and settlement backend.

Each test creates its own co-op database (unique name) with a ``members`` table holding
personal data, and drops it afterwards.  The server is ``EAP_TEST_MARIADB`` (default
``mysql+pymysql://root@127.0.0.1:3306/test``); without it the tests skip, except under CI.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url

from eap.node.domain import settlement_backends as sb
from eap.node.domain.settlement_backends import BackendContext
from eap.node.errors import BackendError
from eap.plugins import coopdb

pymysql = pytest.importorskip("pymysql", reason="PyMySQL (the coopdb extra) is not installed")

ADMIN_URL = os.environ.get("EAP_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")
ME = "medellin.example"
PEER = "barcelona.example"


def acct(i: int) -> str:
    return "acct_" + "abcdefghijklmnopqrstuvwxyz"[i] * 26


#: member_ref -> (display name, e-mail, node account): the co-op's own records.
MEMBERS = {
    f"M-{i:03d}": (f"Socia Número {i} Restrepo", f"socia{i}@coop.example", acct(i))
    for i in range(6)
}
MEMBERS["M-900"] = ("Sin Cuenta Gómez", "sincuenta@coop.example", None)  # no node account
STRANGER = acct(20)  # an account of this node that no member holds


def _admin(database: str | None = None):
    u = make_url(ADMIN_URL)
    return pymysql.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 3306,
        user=u.username or "root",
        password=u.password or "",
        database=database,
        connect_timeout=3,
        autocommit=True,
    )


@pytest.fixture(scope="session")
def mariadb() -> str:
    try:
        _admin().close()
    except Exception as exc:
        if os.environ.get("CI") or os.environ.get("EAP_REQUIRE_MARIADB"):
            pytest.fail(f"MariaDB is required but not reachable at {ADMIN_URL}: {exc}")
        pytest.skip(f"MariaDB not reachable at {ADMIN_URL}: {exc}")
    return ADMIN_URL


@pytest.fixture
def coop(mariadb):
    """A fresh co-op database with its member table; yields ``(settings, database name)``."""
    name = f"eap_coop_{uuid.uuid4().hex[:12]}"
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        cur.execute(
            f"CREATE TABLE `{name}`.members (member_ref VARCHAR(32) PRIMARY KEY, "
            "display_name VARCHAR(200) NOT NULL, email VARCHAR(200), "
            "node_account VARCHAR(64) NULL UNIQUE) ENGINE=InnoDB"
        )
        cur.executemany(
            f"INSERT INTO `{name}`.members VALUES (%s, %s, %s, %s)",
            [(ref, n, e, a) for ref, (n, e, a) in MEMBERS.items()],
        )
    url = make_url(mariadb).set(database=name).render_as_string(hide_password=False)
    yield {"url": url}, name
    coopdb.close_all()
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


def q(name: str, sql: str, args=()) -> list[tuple]:
    conn = _admin(name)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


def item(n, payer, payee, amount, side, currency="EUR", round_id="r1"):
    return {
        "instruction_id": f"{ME}/{round_id}/{n}",
        "round_id": round_id,
        "side": side,
        "payer": payer,
        "payee": payee,
        "amount_minor": amount,
        "currency": currency,
    }


def mine(i: int) -> str:
    return f"{ME}/{acct(i)}"


def ctx_of(settings: dict, **extra) -> BackendContext:
    return BackendContext(node_id=ME, home=Path("."), settings={**settings, **extra})


@pytest.fixture
def node(coop, eap_node_factory):
    settings, _ = coop
    return eap_node_factory(node_id=ME, settlement={"backend": "coopdb", "coopdb": settings})


def balances(name: str) -> dict[tuple[str, str, str], int]:
    rows = q(name, "SELECT kind, holder, currency, balance_minor FROM eap_balances")
    return {(k, h, c): int(b) for k, h, c, b in rows}


def test_loaded_by_default_but_inactive_without_config(eap_node_factory):
    node = eap_node_factory(node_id=ME)  # no [settlement.coopdb]: no database is touched
    rows = {r["name"]: r for r in sb.health(node)}
    assert not rows["coopdb"]["selected"] and not rows["coopdb"]["ok"]
    assert rows["coopdb"]["detail"].startswith("not configured")
    assert rows["coop-ledger"]["ok"] and rows["coop-ledger"]["selected"]
    [directory] = [d for ds in node.plugins.hook.eap_account_directories() for d in ds]
    assert directory.name == "coopdb"
    assert directory.health(ctx_of({}))["detail"].startswith("not configured")
    with pytest.raises(BackendError, match="not configured") as err:
        directory.lookup(ctx_of({}), "M-000")
    assert not err.value.transient


def test_debit_to_a_remote_payee_posts_one_balanced_entry_and_replays(coop, node):
    _, name = coop
    it = item(0, mine(0), f"{PEER}/{acct(9)}", 700, "debit")
    receipt = sb.execute(node, it)
    assert receipt["backend"] == "coopdb" and receipt["reference"].startswith("cd_")
    assert sb.execute(node, it) == receipt  # a replay returns the first receipt
    [entry] = q(
        name,
        "SELECT entry_id, idempotency_key, member_ref, amount_minor, currency, side "
        "FROM eap_ledger_entries",
    )
    assert entry == (receipt["reference"], f"{ME}/r1/0:debit", "M-000", 700, "EUR", "debit")
    assert balances(name) == {("member", "M-000", "EUR"): -700, ("clearing", PEER, "EUR"): 700}
    assert coopdb.check(coopdb.database(ctx_of(coop[0]))) == []
    assert next(r for r in sb.health(node) if r["name"] == "coopdb")["ok"]


def test_same_key_with_other_terms_is_refused_and_writes_nothing(coop, node):
    _, name = coop
    sb.execute(node, item(0, mine(0), f"{PEER}/{acct(9)}", 700, "debit"))
    with pytest.raises(BackendError, match="other terms") as err:
        sb.execute(node, item(0, mine(0), f"{PEER}/{acct(9)}", 701, "debit"))
    assert not err.value.transient
    assert q(name, "SELECT COUNT(*) FROM eap_ledger_entries") == [(1,)]


def test_transfer_between_two_members_is_one_entry_for_both_sides(coop, node):
    _, name = coop
    debit = sb.execute(node, item(1, mine(1), mine(2), 250, "debit"))
    credit = sb.execute(node, item(1, mine(1), mine(2), 250, "credit"))
    assert credit["reference"] == debit["reference"]
    assert balances(name) == {("member", "M-001", "EUR"): -250, ("member", "M-002", "EUR"): 250}
    rows = q(name, "SELECT kind, holder, amount_minor FROM eap_ledger_postings ORDER BY holder")
    assert rows == [("member", "M-001", -250), ("member", "M-002", 250)]


def test_an_account_no_member_holds_is_refused_not_retried(coop, node):
    _, name = coop
    with pytest.raises(BackendError, match=f"no member of the co-op holds account {STRANGER}") as e:
        sb.execute(node, item(0, f"{ME}/{STRANGER}", f"{PEER}/{acct(9)}", 5, "debit"))
    assert not e.value.transient
    with pytest.raises(BackendError, match="not an account of"):  # not this node's side
        sb.execute(node, item(1, f"{PEER}/{acct(9)}", mine(0), 5, "debit"))
    assert q(name, "SELECT COUNT(*) FROM eap_ledger_entries") == [(0,)]
    assert balances(name) == {}


def test_balances_are_the_sum_of_postings_over_many_instructions(coop, node):
    settings, name = coop
    rng = random.Random(9)
    parties = [mine(i) for i in range(6)] + [f"{PEER}/{acct(9)}", f"amsterdam.example/{acct(8)}"]
    items, expected = [], {}
    for n in range(80):
        payer, payee = rng.sample(parties, 2)
        if not payer.startswith(ME) and not payee.startswith(ME):
            continue
        amount, currency = rng.randint(1, 10_000), rng.choice(["EUR", "COP"])
        sides = [s for s, p in (("debit", payer), ("credit", payee)) if p.startswith(ME)]
        for side in sides:
            items.append(item(n, payer, payee, amount, side, currency))
        for who, sign in ((payer, -1), (payee, 1)):
            node_id, _, a = who.partition("/")
            key = ("member", next(r for r, m in MEMBERS.items() if m[2] == a), currency) if (
                node_id == ME) else ("clearing", node_id, currency)
            expected[key] = expected.get(key, 0) + sign * amount
    rng.shuffle(items)
    results = sb.execute_many(node, items)
    assert all(isinstance(r, dict) for r in results), results
    assert sb.execute_many(node, items) == results  # replaying the batch posts nothing
    db = coopdb.database(ctx_of(settings))
    assert coopdb.check(db) == []
    got = {k: v for k, v in balances(name).items() if v}
    assert got == {k: v for k, v in expected.items() if v}
    n_entries = q(name, "SELECT COUNT(*) FROM eap_ledger_entries")[0][0]
    assert n_entries == len({r["reference"] for r in results})


def test_directory_maps_members_without_copying_personal_data_into_the_node(coop, node):
    settings, _ = coop
    [directory] = [d for ds in node.plugins.hook.eap_account_directories() for d in ds]
    ctx = ctx_of(settings)
    assert directory.lookup(ctx, "M-003") == acct(3)
    assert directory.lookup(ctx, "M-900") is None  # a member without a node account
    assert directory.lookup(ctx, "M-404") is None
    assert directory.member_for(ctx, acct(4)) == "M-004"
    assert directory.member_for(ctx, f"{ME}/{acct(4)}") == "M-004"
    assert directory.member_for(ctx, f"{PEER}/{acct(4)}") is None  # another node's account
    assert directory.member_for(ctx, STRANGER) is None
    assert directory.health(ctx)["ok"]
    # settle through the co-op's books too, then look for any member data in the node's DB
    sb.execute(node, item(0, mine(0), mine(5), 10, "debit"))
    node.close()
    path = Path(make_url(node.config.database).database)
    assert path.exists()
    dump = "\n".join(sqlite3.connect(path).iterdump())
    assert "M-000" not in dump  # not even the co-op's member references
    for _ref, (display, email, _a) in MEMBERS.items():
        assert display not in dump and email not in dump
        assert "Restrepo" not in dump and "coop.example" not in dump


def _kill_at(engine, statement_prefix: str, nth: set[int]):
    """Kill the plugin's connection from a second connection just before its n-th statement
    starting with ``statement_prefix`` (counted from 1): the server goes away mid-transaction."""
    seen = {"n": 0, "killed": 0}

    @event.listens_for(engine, "before_cursor_execute")
    def kill(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith(statement_prefix):
            seen["n"] += 1
            if seen["n"] in nth:
                thread_id = cursor.connection.thread_id()
                admin = _admin()
                with admin.cursor() as cur:
                    cur.execute(f"KILL CONNECTION {int(thread_id)}")
                admin.close()
                seen["killed"] += 1

    return seen


def test_server_going_away_mid_batch_is_transient_retried_and_posts_nothing_twice(coop, node):
    settings, name = coop
    items = [item(n, mine(n % 6), f"{PEER}/{acct(9)}", 100 + n, "debit") for n in range(12)]
    db = coopdb.database(ctx_of(settings))
    db.ready()
    # killed before the 3rd and 8th postings insert: entry and balances are written, uncommitted
    seen = _kill_at(db.engine, f"INSERT INTO {db.cfg.postings_table}".upper(), {3, 8})
    first = sb.execute_many(node, items)
    assert seen["killed"] == 2
    failed = [i for i, r in enumerate(first) if isinstance(r, BackendError)]
    assert failed == [2, 7]
    assert all(first[i].transient and first[i].backend == "coopdb" for i in failed)
    assert q(name, "SELECT COUNT(*) FROM eap_ledger_entries") == [(10,)]  # no partial entry
    assert coopdb.check(db) == []
    # the executor retries the same items with the same keys: nothing is posted twice
    retried = sb.execute_many(node, items)
    assert all(isinstance(r, dict) for r in retried)
    assert [r["reference"] for i, r in enumerate(retried) if i not in failed] == [
        r["reference"] for i, r in enumerate(first) if i not in failed
    ]
    assert q(name, "SELECT COUNT(*) FROM eap_ledger_entries") == [(12,)]
    assert coopdb.check(db) == []
    assert balances(name)[("clearing", PEER, "EUR")] == sum(100 + n for n in range(12))


def test_a_kill_at_commit_is_transient_and_the_retry_posts_once(coop, node):
    settings, name = coop
    db = coopdb.database(ctx_of(settings))
    db.ready()
    it = item(0, mine(0), f"{PEER}/{acct(9)}", 42, "debit")
    conn_ids: list[int] = []

    @event.listens_for(db.engine, "commit")
    def kill_before_commit(conn):
        if not conn_ids:
            conn_ids.append(conn.connection.dbapi_connection.thread_id())
            admin = _admin()
            with admin.cursor() as cur:
                cur.execute(f"KILL CONNECTION {conn_ids[0]}")
            admin.close()

    with pytest.raises(BackendError) as err:
        sb.execute(node, it)
    assert err.value.transient
    receipt = sb.execute(node, it)
    assert sb.execute(node, it) == receipt
    assert q(name, "SELECT COUNT(*) FROM eap_ledger_entries") == [(1,)]
    assert coopdb.check(db) == []


def test_idle_connections_dropped_by_the_server_are_replaced(coop, node):
    settings, name = coop
    sb.execute(node, item(0, mine(0), f"{PEER}/{acct(9)}", 1, "debit"))
    db = coopdb.database(ctx_of(settings))
    for (thread_id,) in q(name, "SELECT id FROM information_schema.processlist WHERE db = %s "
                                "AND id <> CONNECTION_ID()", (name,)):
        q(name, f"KILL CONNECTION {int(thread_id)}")
    # the pooled connection is dead; the next call checks it out, finds it gone, reconnects
    sb.execute(node, item(1, mine(1), f"{PEER}/{acct(9)}", 1, "debit"))
    assert q(name, "SELECT COUNT(*) FROM eap_ledger_entries") == [(2,)]
    assert coopdb.check(db) == []


def test_lock_wait_timeout_is_transient(coop, node, eap_node_factory):
    settings, name = coop
    sb.execute(node, item(0, mine(0), f"{PEER}/{acct(9)}", 5, "debit"))
    impatient = eap_node_factory(
        node_id=ME,
        settlement={"backend": "coopdb", "coopdb": {**settings, "lock_wait_timeout_s": 1}},
    )
    holder = _admin(name)
    holder.autocommit(False)
    with holder.cursor() as cur:  # a co-op clerk's open transaction holds the member's row
        cur.execute("SELECT * FROM eap_balances WHERE holder = 'M-000' FOR UPDATE")
        with pytest.raises(BackendError, match="Lock wait timeout") as err:
            sb.execute(impatient, item(1, mine(0), f"{PEER}/{acct(9)}", 5, "debit"))
        assert err.value.transient
    holder.rollback()
    holder.close()
    sb.execute(impatient, item(1, mine(0), f"{PEER}/{acct(9)}", 5, "debit"))
    assert balances(name)[("member", "M-000", "EUR")] == -10


def test_concurrent_calls_with_one_key_post_once(coop, node):
    _, name = coop
    it = item(0, mine(0), mine(1), 77, "debit")
    other = dict(it, side="credit")
    out: list = []
    threads = [
        threading.Thread(target=lambda x=x: out.append(sb.execute(node, x)))
        for x in (it, other, it, other)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 4 and len({r["reference"] for r in out}) == 1
    assert q(name, "SELECT COUNT(*) FROM eap_ledger_entries") == [(1,)]
    assert balances(name) == {("member", "M-000", "EUR"): -77, ("member", "M-001", "EUR"): 77}


def test_a_wrong_member_table_is_unhealthy_and_refused_not_retried(coop, eap_node_factory):
    settings, name = coop
    wrong = {**settings, "members_table": "socios"}
    node = eap_node_factory(node_id=ME, settlement={"backend": "coopdb", "coopdb": wrong})
    row = next(r for r in sb.health(node) if r["name"] == "coopdb")
    assert not row["ok"] and "socios" in row["detail"]
    with pytest.raises(BackendError, match="socios") as err:
        sb.execute(node, item(0, mine(0), f"{PEER}/{acct(9)}", 5, "debit"))
    assert not err.value.transient
    assert q(name, "SELECT COUNT(*) FROM eap_ledger_entries") == [(0,)]  # rolled back
    node = eap_node_factory(  # a bad key in the table: refused, not retried
        node_id=ME, settlement={"backend": "coopdb", "coopdb": {**settings, "colour": 1}}
    )
    with pytest.raises(BackendError, match="unknown keys: colour") as err:
        sb.execute(node, item(0, mine(0), f"{PEER}/{acct(9)}", 5, "debit"))
    assert not err.value.transient


def test_health_before_the_first_posting_creates_nothing(coop, node):
    _, name = coop
    row = next(r for r in sb.health(node) if r["name"] == "coopdb")
    assert row["ok"] and "7 members, ledger tables not created yet" in row["detail"]
    assert q(name, "SHOW TABLES") == [("members",)]


def test_unreachable_server_is_transient_and_unhealthy(eap_node_factory):
    settings = {"url": "mysql+pymysql://root@127.0.0.1:1/coop", "connect_timeout_s": 2}
    node = eap_node_factory(node_id=ME, settlement={"backend": "coopdb", "coopdb": settings})
    try:
        with pytest.raises(BackendError) as err:
            sb.execute(node, item(0, mine(0), f"{PEER}/{acct(9)}", 5, "debit"))
        assert err.value.transient and "coopdb" in str(err.value)
        row = next(r for r in sb.health(node) if r["name"] == "coopdb")
        assert not row["ok"] and "Can't connect" in row["detail"]
    finally:
        coopdb.close_all()


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"url": "sqlite:///x.db"}, "MySQL/MariaDB"),
        ({"url": "mysql+pymysql://h/db", "members_table": "members; DROP"}, "SQL identifier"),
        ({"url": "mysql+pymysql://h/db", "colour": "red"}, "unknown keys: colour"),
        ({"url": "mysql+pymysql://h/db", "connect_timeout_s": 0}, "1..3600"),
    ],
)
def test_bad_settings_are_config_errors(settings, match):
    from eap.node.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        coopdb.CoopDbSettings.from_settings(settings)
    assert not coopdb.health(settings)["ok"]
