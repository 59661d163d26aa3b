"""How the federation names a party: ``<node id>/acct_...``.

A local trade stores this node's bare account ids; a cross-node trade stores qualified ids on
both sides.  The domain (obligations, settlement) and the store (its obligation and settlement
reads) name parties the same way, so the rule lives here, below both.
"""

from __future__ import annotations


def qualified(node_id: str, account: str) -> str:
    """A party as the federation names it: ``<node id>/acct_...`` (bare ids are this node's)."""
    return account if "/" in account else f"{node_id}/{account}"
