"""One settlement round over 1,000,000 obligations among 10,000 accounts on three nodes.

Usage: ``python bench/bench_settlement.py [--quick] [--obligations N] [--accounts N]``

Each phase of a round is one function over plain data, timed on its own:

* **gather**: every node builds its ``SettlementView`` (its local obligations and its side of
  every cross-node one, sorted by id), serialises it and signs the bytes (Ed25519);
* **reconcile**: the coordinator verifies the three signatures, parses the views and matches
  both sides of every cross-node obligation by id; one-sided or differing ones are held out
  (the bench plants some);
* **net**: ``kernels.net_positions`` + ``settlement_instructions`` + ``efficiency`` over the
  agreed obligations, compared with the raw ``eap._core`` kernels on the same arrays;
* **sign**: the ``SettlementStatement`` (positions, instructions, digest of the agreed ids)
  serialised, signed by each participant, every signature verified by every participant;
* **execute**: every node posts its side of each instruction into its own co-op ledger
  (SQLite) through ``settlement_backends.execute_many``; the per-instruction
  ``execute`` path is timed on a sample and its projection printed beside it.

Absolute times and the ratios that matter (net phase / kernel, gather per obligation message
/ columnar copy) are printed side by side from the same run.  See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert

from eap.node import kernels
from eap.node.domain import settlement_backends
from eap.node.store import open_store
from eap.node.store import schema as t
from eap.plugins.manager import get_plugin_manager
from eap.v1 import types_pb2

NODES = ("medellin.example", "barcelona.example", "amsterdam.example")
CURRENCIES = ("COP", "EUR")
PERIOD = "2026-06-21"
ROUND = f"{NODES[0]}/{PERIOD}/bench"
VIEW_TAG = b"EAP-SETTLE-VIEW-v1\x00"
STATEMENT_TAG = b"EAP-SETTLE-STATEMENT-v1\x00"
B32 = "abcdefghijklmnopqrstuvwxyz234567"


@dataclass
class Obligations:
    """The federation's obligations as columns; party ``i`` lives on node ``i % 3``."""

    ids: list[str]
    payer: np.ndarray
    payee: np.ndarray
    amount: np.ndarray
    currency: np.ndarray
    parties: list[str]

    def node_of(self, party: np.ndarray) -> np.ndarray:
        return party % len(NODES)


def account_id(i: int) -> str:
    digits = []
    for _ in range(26):
        i, r = divmod(i, 32)
        digits.append(B32[r])
    return "acct_" + "".join(reversed(digits))


def generate(n: int, n_accounts: int, seed: int = 7) -> Obligations:
    """``n`` obligations between distinct random accounts, about 2/3 of them cross-node."""
    rng = np.random.default_rng(seed)
    payer = rng.integers(0, n_accounts, n, dtype=np.int32)
    payee = rng.integers(0, n_accounts - 1, n, dtype=np.int32)
    payee = (payee + (payee >= payer)).astype(np.int32)  # never the payer
    amount = rng.integers(1, 100_000, n, dtype=np.int64)
    currency = (rng.random(n) < 0.8).astype(np.int32)  # 80 % EUR, 20 % COP
    parties = [f"{NODES[i % 3]}/{account_id(i)}" for i in range(n_accounts)]
    src = payer % 3
    ids = [
        f"{NODES[s]}/trade/{k}" if s == d else f"{NODES[s]}/{k:032x}"
        for k, (s, d) in enumerate(zip(src.tolist(), (payee % 3).tolist(), strict=True))
    ]
    return Obligations(ids, payer, payee, amount, currency, parties)


# -- phases ---------------------------------------------------------------------------------------


def gather(ob: Obligations, keys: list[Ed25519PrivateKey], planted: dict) -> dict:
    """Each node's signed view: ``{node: (payload bytes, signature)}``; also times its parts."""
    parts = {"select+sort": 0.0, "messages": 0.0, "serialise": 0.0, "sign": 0.0}
    views = {}
    payer_node, payee_node = ob.node_of(ob.payer), ob.node_of(ob.payee)
    for k, node in enumerate(NODES):
        t0 = time.perf_counter()
        mine = np.flatnonzero((payer_node == k) | (payee_node == k))
        mine = mine[np.argsort(np.array([ob.ids[i] for i in mine.tolist()]), kind="stable")]
        t1 = time.perf_counter()
        view = types_pb2.SettlementView(round_id=ROUND, node_id=node, period=PERIOD, at_ms=1)
        add = view.obligations.add
        ids, parties = ob.ids, ob.parties
        pay, rec = ob.payer.tolist(), ob.payee.tolist()
        amt, cur = ob.amount.tolist(), ob.currency.tolist()
        for i in mine.tolist():
            if planted.get((k, i)) == "drop":
                continue
            amount = amt[i] + 1 if planted.get((k, i)) == "alter" else amt[i]
            add(
                id=ids[i],
                payer=parties[pay[i]],
                payee=parties[rec[i]],
                amount_minor=amount,
                currency=CURRENCIES[cur[i]],
                period=PERIOD,
            )
        t2 = time.perf_counter()
        payload = view.SerializeToString()
        t3 = time.perf_counter()
        views[node] = (payload, keys[k].sign(VIEW_TAG + payload))
        t4 = time.perf_counter()
        for name, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            parts[name] += dt
    return {"views": views, "parts": parts}


def reconcile(views: dict, public: dict, parties: list[str]) -> dict:
    """Verify, parse and match both sides by id; returns agreed columns and held-out ids."""
    index = {p: i for i, p in enumerate(parties)}
    seen: dict[str, tuple] = {}
    agreed: list[tuple] = []
    held: list[str] = []
    for node, (payload, signature) in views.items():
        public[node].verify(signature, VIEW_TAG + payload)  # raises InvalidSignature
        view = types_pb2.SettlementView.FromString(payload)
        for o in view.obligations:
            terms = (o.id, o.payer, o.payee, o.amount_minor, o.currency)
            payer_node, payee_node = o.payer.partition("/")[0], o.payee.partition("/")[0]
            if payer_node == payee_node:
                agreed.append(terms)
                continue
            other = seen.pop(o.id, None)
            if other is None:
                seen[o.id] = terms
            elif other == terms:
                agreed.append(terms)
            else:
                held.append(o.id)
    held += list(seen)  # one side only
    n = len(agreed)
    payer = np.fromiter((index[a[1]] for a in agreed), np.int32, n)
    payee = np.fromiter((index[a[2]] for a in agreed), np.int32, n)
    amount = np.fromiter((a[3] for a in agreed), np.int64, n)
    currency = np.fromiter((CURRENCIES.index(a[4]) for a in agreed), np.int32, n)
    ids = [a[0] for a in agreed]
    return {
        "ids": ids,
        "payer": payer,
        "payee": payee,
        "amount": amount,
        "currency": currency,
        "held_out": sorted(held),
    }


def net(agreed: dict, n_parties: int) -> dict:
    """Positions, instructions and efficiency through the node's kernel facade."""
    a = agreed
    positions = kernels.net_positions(
        a["payer"], a["payee"], a["amount"], a["currency"], n_parties, len(CURRENCIES)
    )
    plan = kernels.settlement_instructions(positions)
    efficiency = kernels.efficiency(a["amount"], a["currency"], positions)
    return {"positions": positions, "plan": plan, "efficiency": efficiency}


def net_raw(agreed: dict, n_parties: int) -> tuple[float, float]:
    """Seconds of the raw ``eap._core`` kernels on the same arrays: (net_positions alone,
    net_positions + settlement_instructions + efficiency)."""
    core = kernels._netting
    a = agreed
    args = (a["payer"], a["payee"], a["amount"], a["currency"], n_parties, len(CURRENCIES))
    best_pos = best_all = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        positions = core.net_positions(*args)
        t1 = time.perf_counter()
        core.settlement_instructions(positions)
        core.efficiency(a["amount"], a["currency"], positions)
        t2 = time.perf_counter()
        best_pos, best_all = min(best_pos, t1 - t0), min(best_all, t2 - t0)
    return best_pos, best_all


def sign(netted: dict, agreed: dict, parties: list[str], keys: list) -> dict:
    """Build the statement bytes, sign them at every participant, verify every signature."""
    digest = hashlib.sha256("".join(i + "\n" for i in sorted(agreed["ids"])).encode()).digest()
    st = types_pb2.SettlementStatement(
        round_id=ROUND,
        period=PERIOD,
        coordinator=NODES[0],
        participants=sorted(NODES),
        obligations_digest=digest,
        obligations=len(agreed["ids"]),
        held_out=[types_pb2.Obligation(id=i) for i in agreed["held_out"]],
    )
    pos = netted["positions"]
    for c, code in sorted(enumerate(CURRENCIES), key=lambda x: x[1]):
        for p in np.flatnonzero(pos[:, c]).tolist():
            st.positions.add(party=parties[p], currency=code, net_minor=int(pos[p, c]))
    plan = netted["plan"]
    for n, (a, b, c, m) in enumerate(
        zip(
            plan.payer.tolist(),
            plan.payee.tolist(),
            plan.currency.tolist(),
            plan.amount.tolist(),
            strict=True,
        )
    ):
        st.instructions.add(
            id=f"{ROUND}/{n}",
            payer=parties[a],
            payee=parties[b],
            amount_minor=m,
            currency=CURRENCIES[c],
        )
    payload = st.SerializeToString()
    signatures = [k.sign(STATEMENT_TAG + payload) for k in keys]
    for _participant in keys:  # every participant checks every signature
        for s, signer in zip(signatures, keys, strict=True):
            signer.public_key().verify(s, STATEMENT_TAG + payload)
    return {"statement": st, "bytes": len(payload), "digest": hashlib.sha256(payload).hexdigest()}


def node_sides(statement: Any) -> dict[str, list[dict]]:
    """Each node's side(s) of every instruction, as ``execute`` items."""
    items: dict[str, list[dict]] = {n: [] for n in NODES}
    for ins in statement.instructions:
        base = {
            "instruction_id": ins.id,
            "round_id": ROUND,
            "payer": ins.payer,
            "payee": ins.payee,
            "amount_minor": ins.amount_minor,
            "currency": ins.currency,
        }
        items[ins.payer.partition("/")[0]].append({**base, "side": "debit"})
        items[ins.payee.partition("/")[0]].append({**base, "side": "credit"})
    return items


def ledger_nodes(folder: Path, parties: list[str]) -> dict[str, Any]:
    """Three nodes' co-op ledgers (SQLite, tables from the declared schema), every member
    with a credit line, and the facade's view of each node.  Set-up, not timed."""
    pm = get_plugin_manager(load_entry_points=False)
    out = {}
    for k, node in enumerate(NODES):
        store = open_store(f"sqlite:///{folder / f'{node}.db'}", migrate=False)
        t.metadata.create_all(store.engine)
        members = [p.partition("/")[2] for p in parties[k::3]]
        with store.transaction() as conn:
            conn.execute(
                insert(t.accounts),
                [{"id": a, "label": "", "disclosed": False, "created_at_ms": 0} for a in members],
            )
            conn.execute(
                insert(t.ledger_accounts),
                [
                    {
                        "id": a,
                        "currency": c,
                        "kind": "member",
                        "credit_line_minor": 10**15,
                        "balance_minor": 0,
                        "updated_at_ms": 0,
                    }
                    for a in members
                    for c in CURRENCIES
                ],
            )
        config = SimpleNamespace(node_id=node, home=folder, extra={})
        out[node] = SimpleNamespace(config=config, plugins=pm, store=store, node_id=node)
    return out


def execute(nodes: dict, items: dict[str, list[dict]]) -> dict:
    """Every node posts its sides in one ``execute_many`` call; returns counts."""
    ok = failed = 0
    for node, its in items.items():
        for r in settlement_backends.execute_many(nodes[node], its):
            ok += isinstance(r, dict)
            failed += not isinstance(r, dict)
    return {"ok": ok, "failed": failed}


def execute_one_by_one(nodes: dict, items: dict[str, list[dict]], sample: int) -> float:
    """Seconds per item of the per-instruction ``execute`` path, on fresh instruction ids."""
    node = NODES[0]
    its = [{**it, "instruction_id": it["instruction_id"] + "/again"} for it in items[node]]
    its = its[:sample]
    t0 = time.perf_counter()
    for it in its:
        settlement_backends.execute(nodes[node], it)
    return (time.perf_counter() - t0) / max(1, len(its))


# -- the run --------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100k obligations, 1,000 accounts")
    ap.add_argument("--obligations", type=int, default=1_000_000)
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument(
        "--sample",
        type=int,
        default=300,
        help="instructions timed through the one-by-one execute path",
    )
    args = ap.parse_args()
    n, n_acc = (100_000, 1_000) if args.quick else (args.obligations, args.accounts)

    t0 = time.perf_counter()
    ob = generate(n, n_acc)
    keys = [Ed25519PrivateKey.generate() for _ in NODES]
    public = {node: k.public_key() for node, k in zip(NODES, keys, strict=True)}
    cross = np.flatnonzero(ob.node_of(ob.payer) != ob.node_of(ob.payee))
    # plant disagreements: 10 cross-node obligations missing at the payee, 5 altered there
    planted = {(int(ob.payee[i] % 3), int(i)): "drop" for i in cross[:10].tolist()}
    planted |= {(int(ob.payee[i] % 3), int(i)): "alter" for i in cross[10:15].tolist()}
    print(
        f"settlement round: {n:,} obligations ({len(cross):,} cross-node) among {n_acc:,} "
        f"accounts on {len(NODES)} nodes; kernels: {kernels.backend}; "
        f"set-up {time.perf_counter() - t0:.1f} s"
    )

    timings: dict[str, float] = {}

    def timed(name, fn, *a):
        t = time.perf_counter()
        out = fn(*a)
        timings[name] = time.perf_counter() - t
        return out

    gathered = timed("gather", gather, ob, keys, planted)
    messages = (
        sum(
            len(types_pb2.SettlementView.FromString(p).obligations)
            for p, _ in gathered["views"].values()
        )
        if args.quick
        else None
    )
    agreed = timed("reconcile", reconcile, gathered["views"], public, ob.parties)
    netted = timed("net", net, agreed, n_acc)
    for _ in range(2):  # the kernels are timed best of 3: time the phase the same way
        t = time.perf_counter()
        net(agreed, n_acc)
        timings["net"] = min(timings["net"], time.perf_counter() - t)
    raw_pos, raw_all = net_raw(agreed, n_acc)
    signed = timed("sign", sign, netted, agreed, ob.parties, keys)
    with tempfile.TemporaryDirectory() as folder:
        nodes = ledger_nodes(Path(folder), ob.parties)
        items = node_sides(signed["statement"])
        done = timed("execute", execute, nodes, items)
        per_item = execute_one_by_one(nodes, items, args.sample)
        for node in nodes.values():
            node.store.dispose()

    # columnar baseline for the gather phase: the same obligations as packed arrays
    t = time.perf_counter()
    for k in range(len(NODES)):
        mine = np.flatnonzero((ob.node_of(ob.payer) == k) | (ob.node_of(ob.payee) == k))
        b"".join(col[mine].tobytes() for col in (ob.payer, ob.payee, ob.amount, ob.currency))
    columnar = time.perf_counter() - t

    total = sum(timings.values())
    sides = sum(len(v) for v in items.values())
    view_bytes = sum(len(p) for p, _ in gathered["views"].values())
    print(f"\n  {'phase':<10} {'seconds':>8} {'share':>7}   what")
    notes = {
        "gather": f"3 signed views, {view_bytes / 1e6:.0f} MB; parts: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in gathered["parts"].items()),
        "reconcile": f"verify + parse + match; {len(agreed['ids']):,} agreed, "
        f"{len(agreed['held_out'])} held out (15 planted)",
        "net": f"{len(agreed['ids']) / timings['net'] / 1e6:.1f} M obligations/s; "
        f"{len(netted['plan'].amount):,} instructions",
        "sign": f"statement {signed['bytes'] / 1e6:.1f} MB, 3 signatures, 9 verifications",
        "execute": f"{sides:,} instruction sides posted ({done['ok']:,} ok, "
        f"{done['failed']} failed) in 3 SQLite ledgers, one transaction per node",
    }
    for name, secs in timings.items():
        print(f"  {name:<10} {secs:>8.2f} {secs / total:>6.0%}   {notes[name]}")
    print(f"  {'round':<10} {total:>8.2f} {'':>7}   {'under' if total < 30 else 'OVER'} 30 s")

    print("\n  ratios (same run)")
    print(
        f"  net phase / raw net_positions kernel       {timings['net'] / raw_pos:>6.2f}x "
        f"({timings['net'] * 1e3:.0f} ms vs {raw_pos * 1e3:.0f} ms)"
    )
    print(
        f"  net phase / raw kernels (pos+plan+eff)     {timings['net'] / raw_all:>6.2f}x "
        f"({raw_all * 1e3:.0f} ms) -- target within 2x"
    )
    print(
        f"  gather (protobuf messages) / columnar copy {timings['gather'] / columnar:>6.0f}x "
        f"({columnar * 1e3:.0f} ms for packed payer/payee/amount/currency)"
    )
    proj = per_item * sides
    print(
        f"  execute one by one / execute_many          {proj / timings['execute']:>6.1f}x "
        f"({per_item * 1e3:.2f} ms per side over {args.sample} sides: {proj:.0f} s "
        "projected for the round)"
    )
    for c, code in enumerate(CURRENCIES):
        gross = int(agreed["amount"][agreed["currency"] == c].sum())
        moved = int(netted["plan"].amount[netted["plan"].currency == c].sum())
        print(
            f"  efficiency {code}: {netted['efficiency'][c]:.4f} "
            f"(gross {gross:,}, still moving {moved:,} minor units)"
        )
    if messages is not None:
        print(f"  ({messages:,} obligation messages across the three views)")
    print(f"  statement digest {signed['digest'][:16]}...")
    return 0 if total < 30 and done["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
