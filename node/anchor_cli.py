"""``eap-node anchor verify``: check issuance-batch roots against the chain they are anchored on.

Added to the ``anchor`` group of :mod:`eap.node.plugins_cli` by :func:`register`; the work is done
by :func:`eap.plugins.evm.verify_batch`.
"""

from __future__ import annotations

import sys

import click

from eap.node.cli import _emit, _home_option, _json_option, _open

#: Exit code of ``anchor verify`` when the chain holds no root, or another root, for the batch.
ANCHOR_MISMATCH_EXIT = 14


@click.command("verify")
@click.argument("batch", type=click.IntRange(min=1))
@_home_option
@_json_option
def anchor_verify(batch, home, as_json) -> None:
    """Check the Merkle root of this node's batch BATCH (its seq) against the chain.

    Exit 0 when the chain holds the same root, 14 when it holds none or another one.
    """
    from eap.plugins import evm

    result = evm.verify_batch(_open(home), batch)
    _emit(result, as_json, text=result["message"])
    if not result["ok"]:
        sys.exit(ANCHOR_MISMATCH_EXIT)


def register(anchor: click.Group) -> None:
    """Add ``verify`` to the ``eap-node anchor`` group."""
    anchor.add_command(anchor_verify)
