"""Netting of payment obligations (DESIGN §2 "Trade / obligation", §3 exact integer money).

Priced trades record obligations (payer owes payee an integer amount of minor units). For a
period, :func:`net` turns them into net positions per (party, currency), bilateral nets and
settlement instructions that settle every currency in at most (parties - 1) payments, all
through the ``_core`` netting kernels: exact int64, overflow reported as ``OUT_OF_RANGE``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from eap.node import kernels
from eap.node.records.models import Serialisable
from eap.node.store import Store, repos


@dataclass
class Payment(Serialisable):
    payer: str
    payee: str
    currency: str
    amount_minor: int


@dataclass
class Position(Serialisable):
    party: str
    currency: str
    #: Receivable minus payable, in minor units.
    net_minor: int


@dataclass
class NettingResult(Serialisable):
    period: str
    obligations: int
    gross_minor: dict[str, int] = field(default_factory=dict)
    positions: list[Position] = field(default_factory=list)
    bilateral: list[Payment] = field(default_factory=list)
    instructions: list[Payment] = field(default_factory=list)
    #: Per currency: 1 - (what still moves after netting) / gross.
    efficiency: dict[str, float] = field(default_factory=dict)


def net(store: Store, period: str = "", currency: str = "") -> NettingResult:
    """Net the obligations of ``period`` (all periods when empty), optionally one currency."""
    with store.read() as conn:
        rows = repos.obligations(conn, period or None, currency or None)
        me = repos.get_meta(conn).get("node_id", "")
    result = NettingResult(period=period or "all", obligations=len(rows))
    if not rows:
        return result
    parties: dict[str, int] = {}
    currencies: dict[str, int] = {}
    n = len(rows)
    # A local trade stores bare account ids, a cross-node one qualified ids: this node's
    # accounts are shown bare (one party each), other nodes' qualified.
    mine = f"{me}/"

    def party(name: str) -> int:
        return parties.setdefault(name.removeprefix(mine), len(parties))

    payer = np.fromiter((party(r.payer) for r in rows), np.int32, n)
    payee = np.fromiter((party(r.payee) for r in rows), np.int32, n)
    cur = np.fromiter(
        (currencies.setdefault(r.currency, len(currencies)) for r in rows), np.int32, n
    )
    amount = np.fromiter((r.amount_minor for r in rows), np.int64, n)
    names, codes = list(parties), list(currencies)
    positions = kernels.net_positions(payer, payee, amount, cur, len(names), len(codes))
    pairs = kernels.bilateral(payer, payee, amount, cur, len(names), len(codes))
    plan = kernels.settlement_instructions(positions)
    eff = kernels.efficiency(amount, cur, positions)
    for c, code in enumerate(codes):
        result.gross_minor[code] = int(amount[cur == c].sum(dtype=object))
        result.efficiency[code] = round(float(eff[c]), 6)
    result.positions = [
        Position(names[p], codes[c], int(positions[p, c]))
        for p, c in zip(*np.nonzero(positions), strict=True)
    ]
    result.bilateral = _payments(pairs, names, codes)
    result.instructions = _payments(plan, names, codes)
    return result


def _payments(payments: kernels.Payments, names: list[str], codes: list[str]) -> list[Payment]:
    return [
        Payment(names[a], names[b], codes[c], int(m))
        for a, b, c, m in zip(
            payments.payer.tolist(),
            payments.payee.tolist(),
            payments.currency.tolist(),
            payments.amount.tolist(),
            strict=True,
        )
    ]
