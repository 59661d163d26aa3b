"""The built-in co-op ledger: balanced entries, credit lines, idempotency, clearing accounts.

The ledger's tables are created from the declared schema (``metadata.create_all``), so these
tests exercise the ledger module alone; ``test_store_migrations`` checks migration 0008 builds
the same tables.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert

from eap.node.errors import BackendError, FailedPrecondition, InvalidArgument, NotFound
from eap.node.store import open_store
from eap.node.store import schema as t
from eap.plugins import coop_ledger as ledger

ME = "medellin.example"
PEERS = ("barcelona.example", "amsterdam.example")


def acct(i: int) -> str:
    return "acct_" + "abcdefgh"[i] * 26


LOCAL = [acct(i) for i in range(4)]


def make_store(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    store = open_store(f"sqlite:///{folder / 'ledger.db'}", migrate=False)
    t.metadata.create_all(store.engine)
    with store.transaction() as conn:
        conn.execute(
            insert(t.accounts),
            [{"id": a, "label": "", "disclosed": False, "created_at_ms": 0} for a in LOCAL],
        )
    return store


@pytest.fixture
def store(tmp_path):
    s = make_store(tmp_path)
    yield s
    s.dispose()


def item(n, payer, payee, amount, side, currency="EUR", round_id="r1"):
    return {
        "instruction_id": f"{round_id}/{n}",
        "round_id": round_id,
        "side": side,
        "payer": payer,
        "payee": payee,
        "amount_minor": amount,
        "currency": currency,
    }


def post(store, it):
    return ledger.post(store, ME, it, f"{it['instruction_id']}:{it['side']}")


def balance_map(store):
    return {(b["account"], b["currency"]): b["balance_minor"] for b in ledger.balances(store)}


def test_debit_to_a_remote_payee_credits_its_node_clearing_account(store):
    ledger.set_credit_line(store, ME, LOCAL[0], "EUR", 1000)
    receipt = post(store, item(0, f"{ME}/{LOCAL[0]}", f"{PEERS[0]}/{acct(5)}", 700, "debit"))
    assert receipt["reference"].startswith("le_")
    assert balance_map(store) == {
        (LOCAL[0], "EUR"): -700,
        (f"clearing:{PEERS[0]}", "EUR"): 700,
    }
    [entry] = ledger.entries(store, "r1")
    assert sorted(p["amount_minor"] for p in entry["postings"]) == [-700, 700]
    assert ledger.check(store) == []


def test_credit_from_a_remote_payer_debits_its_node_clearing_account(store):
    post(store, item(0, f"{PEERS[1]}/{acct(6)}", f"{ME}/{LOCAL[1]}", 250, "credit"))
    assert balance_map(store) == {
        (LOCAL[1], "EUR"): 250,
        (f"clearing:{PEERS[1]}", "EUR"): -250,
    }


def test_credit_line_is_enforced_and_a_refusal_writes_nothing(store):
    it = item(0, f"{ME}/{LOCAL[0]}", f"{ME}/{LOCAL[1]}", 10, "debit")
    with pytest.raises(BackendError, match="credit line 0") as err:
        post(store, it)
    assert not err.value.transient and err.value.backend == "coop-ledger"
    assert ledger.balances(store) == [] and ledger.entries(store) == []
    ledger.set_credit_line(store, ME, f"{ME}/{LOCAL[0]}", "EUR", 10)
    post(store, it)
    with pytest.raises(BackendError, match="balance -10, credit line 10"):
        post(store, item(1, f"{ME}/{LOCAL[0]}", f"{ME}/{LOCAL[1]}", 1, "debit"))
    with pytest.raises(FailedPrecondition, match="owes 10"):
        ledger.set_credit_line(store, ME, LOCAL[0], "EUR", 5)
    assert ledger.check(store) == []


def test_replay_returns_the_first_receipt_and_other_terms_are_refused(store):
    ledger.set_credit_line(store, ME, LOCAL[0], "EUR", 100)
    it = item(0, f"{ME}/{LOCAL[0]}", f"{PEERS[0]}/{acct(5)}", 40, "debit")
    first = post(store, it)
    assert post(store, dict(it)) == first
    with pytest.raises(BackendError, match="other terms") as err:
        post(store, {**it, "amount_minor": 41})
    assert not err.value.transient
    assert len(ledger.entries(store)) == 1 and balance_map(store)[(LOCAL[0], "EUR")] == -40


def test_an_instruction_inside_the_node_posts_once_whichever_side_runs(store):
    ledger.set_credit_line(store, ME, LOCAL[2], "EUR", 100)
    debit = item(0, f"{ME}/{LOCAL[2]}", f"{ME}/{LOCAL[3]}", 60, "debit")
    first = post(store, debit)
    assert post(store, {**debit, "side": "credit"}) == first
    assert balance_map(store) == {(LOCAL[2], "EUR"): -60, (LOCAL[3], "EUR"): 60}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"side": "credit"}, "payee is not an account of"),
        ({"payer": f"{PEERS[1]}/{acct(6)}"}, "payer is not an account of"),
        ({"payer": "medellin.example/bob"}, "is not '<node id>/acct_...'"),
        ({"currency": "eur"}, "ISO 4217"),
        ({"amount_minor": 0}, "positive int64"),
        ({"amount_minor": 2**63}, "positive int64"),
        ({"payee": f"{ME}/{LOCAL[0]}"}, "same account"),
        ({"payee": f"{ME}/{acct(7)}"}, "does not exist on this node"),
    ],
)
def test_malformed_or_foreign_instructions_are_refused(store, change, match):
    ledger.set_credit_line(store, ME, LOCAL[0], "EUR", 100)
    it = {**item(0, f"{ME}/{LOCAL[0]}", f"{PEERS[0]}/{acct(5)}", 5, "debit"), **change}
    with pytest.raises(BackendError, match=match) as err:
        post(store, it)
    assert not err.value.transient
    assert ledger.entries(store) == []


def test_credit_line_command_checks_its_arguments(store):
    with pytest.raises(NotFound):
        ledger.set_credit_line(store, ME, acct(7), "EUR", 1)
    with pytest.raises(InvalidArgument):
        ledger.set_credit_line(store, ME, f"{PEERS[0]}/{LOCAL[0]}", "EUR", 1)
    with pytest.raises(InvalidArgument):
        ledger.set_credit_line(store, ME, LOCAL[0], "EURO", 1)
    with pytest.raises(InvalidArgument):
        ledger.set_credit_line(store, ME, LOCAL[0], "EUR", -1)


def test_check_reports_a_tampered_ledger(store):
    ledger.set_credit_line(store, ME, LOCAL[0], "EUR", 100)
    post(store, item(0, f"{ME}/{LOCAL[0]}", f"{PEERS[0]}/{acct(5)}", 30, "debit"))
    with store.transaction() as conn:
        conn.execute(
            t.ledger_postings.update()
            .where(t.ledger_postings.c.amount_minor == 30)
            .values(amount_minor=31)
        )
    problems = ledger.check(store)
    assert any("does not balance in EUR: 1" in p for p in problems)
    assert any("balance 30 != postings 31" in p for p in problems)


# -- property: any sequence of instructions keeps the ledger's invariants -------------------------

PARTIES = [f"{ME}/{a}" for a in LOCAL] + [f"{p}/{acct(5 + i)}" for i, p in enumerate(PEERS)]
step = st.tuples(
    st.sampled_from(PARTIES),
    st.sampled_from(PARTIES),
    st.integers(1, 10_000),
    st.sampled_from(["debit", "credit"]),
    st.sampled_from(["EUR", "COP"]),
    st.booleans(),  # replay an earlier instruction instead
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(st.integers(0, 20_000), min_size=4, max_size=4),
    steps=st.lists(step, min_size=1, max_size=25),
)
def test_random_instruction_sequences_keep_the_ledger_balanced(lines, steps):
    with tempfile.TemporaryDirectory() as folder:
        store = make_store(Path(folder))
        try:
            for a, line in zip(LOCAL, lines, strict=True):
                for cur in ("EUR", "COP"):
                    ledger.set_credit_line(store, ME, a, cur, line)
            model: dict[tuple[str, str], int] = {}
            receipts: list[tuple[dict, dict]] = []
            tried: list[dict] = []  # every item posted, in order, and whether it was accepted
            accepted: list[bool] = []
            for n, (payer, payee, amount, side, cur, replay) in enumerate(steps):
                if replay and receipts:
                    it, receipt = receipts[n % len(receipts)]
                    assert post(store, it) == receipt
                    tried.append(it)
                    accepted.append(True)
                    continue
                it = item(n, payer, payee, amount, side, cur)
                ours = (payer if side == "debit" else payee).startswith(ME + "/")
                tried.append(it)
                accepted.append(False)
                if payer == payee or not ours:
                    with pytest.raises(BackendError):
                        post(store, it)
                    continue
                postings = ledger.plan(ME, it)
                over = [
                    p
                    for p in postings
                    if p.kind == "member"
                    and p.amount_minor < 0
                    and model.get((p.account, cur), 0) + p.amount_minor
                    < -lines[LOCAL.index(p.account)]
                ]
                if over:
                    with pytest.raises(BackendError, match="credit line"):
                        post(store, it)
                    continue
                receipts.append((it, post(store, it)))
                accepted[-1] = True
                for p in postings:
                    model[(p.account, cur)] = model.get((p.account, cur), 0) + p.amount_minor
            assert ledger.check(store) == []
            # the batch path, on a fresh ledger, gives the same outcome item by item
            batch_store = make_store(Path(folder) / "batch")
            try:
                for a, line in zip(LOCAL, lines, strict=True):
                    for cur in ("EUR", "COP"):
                        ledger.set_credit_line(batch_store, ME, a, cur, line)
                batch = [(it, f"{it['instruction_id']}:{it['side']}") for it in tried]
                results = ledger.post_many(batch_store, ME, batch)
                assert [isinstance(r, dict) for r in results] == accepted
                assert balance_map(batch_store) == balance_map(store)
                assert ledger.check(batch_store) == []
                # a replay returns every first receipt (a refused item is tried afresh)
                replay = ledger.post_many(batch_store, ME, batch)
                assert all(
                    b == a for a, b in zip(results, replay, strict=True) if isinstance(a, dict)
                )
            finally:
                batch_store.dispose()
            got = {k: v for k, v in balance_map(store).items() if v}
            assert got == {k: v for k, v in model.items() if v}
            for cur in ("EUR", "COP"):
                assert sum(v for (_, c), v in got.items() if c == cur) == 0
            for entry in ledger.entries(store):
                assert sum(p["amount_minor"] for p in entry["postings"]) == 0
        finally:
            store.dispose()
