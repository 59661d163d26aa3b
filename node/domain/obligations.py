"""Priced trades as obligations (DESIGN §2 "Trade / obligation", §3 exact integer money).

Pure rules shared by local trades, cross-node trades and the settlement rounds:

* money is an integer amount of minor units, 1..2**62, of an active ISO 4217 currency
  (:func:`check_price`); floats never appear;
* a party is named federation-wide ``<node id>/acct_...``
  (:func:`~eap.node.records.parties.qualified`): a local trade's obligation stores this
  node's bare account ids, a cross-node trade's stores qualified ids on both sides;
* an obligation's id is the transfer id of a cross-node trade (recorded by both nodes under it)
  or ``<node>/trade/<n>`` for a trade inside one node (:func:`local_id`);
* its period is a UTC day (:func:`period_of`): the trade's for a local one, the expiry of the
  transfer's prepare for a cross-node one, which both nodes know (the prepare carries it), so
  they file the obligation under the same period whatever their clocks and whenever each side
  learns the decision (a commit may reach the destination days later, after a partition).
"""

from __future__ import annotations

import re
import time

from eap.node.domain.currencies import is_currency
from eap.node.domain.rules import Checker

#: Largest amount of one price, in minor units (sums of many stay far from int64 overflow,
#: which the netting kernels detect anyway).
MAX_PRICE_MINOR = 2**62


def period_of(at_ms: int) -> str:
    """Settlement period of an instant (Unix ms): its UTC day, ``YYYY-MM-DD``."""
    return time.strftime("%Y-%m-%d", time.gmtime(at_ms / 1000))


def local_id(node_id: str, n: int) -> str:
    """Obligation id of the ``n``-th trade inside ``node_id``."""
    return f"{node_id}/trade/{n}"


def check_price(check: Checker, price_minor: int, currency: str, *,
                amount_field: str = "price_minor", currency_field: str = "currency") -> None:
    """Add the violations of a price to ``check``: amount 1..2**62, a known ISO 4217 code."""
    if isinstance(price_minor, bool) or not isinstance(price_minor, int):
        check.fail(amount_field, "must be an integer number of minor units")
    elif price_minor <= 0:
        check.fail(amount_field, "a trade needs a positive price (integer minor units)")
    elif price_minor > MAX_PRICE_MINOR:
        check.fail(amount_field, f"must be at most 2^62 = {MAX_PRICE_MINOR} minor units")
    currency_violation = price_currency_violation(currency)
    if currency_violation:
        check.fail(currency_field, currency_violation)


def price_currency_violation(currency: str) -> str | None:
    if not is_currency(currency or ""):
        return f"{(currency or '')[:16]!r} is not an active ISO 4217 code (e.g. EUR, USD, COP)"
    return None


def price_violation(price_minor: int, currency: str) -> str | None:
    """Why a price announced by a peer is not acceptable, or None."""
    if not 0 < price_minor <= MAX_PRICE_MINOR:
        return f"price {price_minor} must be 1..2^62 minor units"
    return price_currency_violation(currency)


_SELLER = re.compile(r"^(?P<node>[a-z0-9.-]{1,128})/acct_[a-z2-7]{26}$")


def seller_violation(seller: str, origin: str) -> str | None:
    """Why ``seller`` is not an account of the sending node ``origin``, or None."""
    m = _SELLER.match(seller or "")
    if m is None:
        return f"malformed seller {seller[:200]!r}: must be <source node>/acct_..."
    if m.group("node") != origin:
        return f"the seller {seller[:200]} is not an account of the sender {origin}"
    return None
