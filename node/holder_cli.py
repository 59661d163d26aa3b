"""Holder-key commands of ``eap-node``: ``keys holder-new`` and the ``--sign-with`` option.

``--sign-with KEYFILE`` (on ``transfer``, ``trade`` and ``retire``) makes the command act as
the holder's wallet: it builds the canonical message of
:mod:`eap.node.domain.holder_auth` for exactly the request it is about to send, signs it
locally with the holder's private key and sends the signature along.  The private key is
only read, never stored by the node.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import click

from eap.node.domain import holder_auth
from eap.node.domain.holder_auth import HolderAuth, Intent
from eap.node.records.enums import Purpose

#: How long a signature made by the CLI stays valid: it is sent right away.
SIGNATURE_TTL_S = 300


def sign_option(f):
    """``--sign-with KEYFILE``: sign the request as the bundle's holder."""
    return click.option(
        "--sign-with",
        "sign_with",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Holder private key file (from `eap-node keys holder-new`): sign this request "
        "as the holder; required for bundles of holder-signed accounts.",
    )(f)


def holder_key_option(f):
    """``--holder-key FILE_OR_BASE64`` of ``account create``."""
    return click.option(
        "--holder-key",
        "holder_key",
        default=None,
        help="The holder's Ed25519 public key (a holder.pub file, base64 or hex): the "
        "account's bundles then move only with the holder's signature.",
    )(f)


def parse_holder_key(value: str | None) -> bytes | None:
    return holder_auth.parse_public_key(value) if value else None


def authorize(
    node: Any,
    key_file: Path | None,
    operation: str,
    bundle_ref: str,
    *,
    request_id: str,
    wh: int = 0,
    **fields: Any,
) -> HolderAuth | None:
    """The holder's signature over this request (None without ``key_file``).

    The account signed for is the bundle's current owner on ``node``.
    """
    if key_file is None:
        return None
    key = holder_auth.load_private_key(key_file)
    bundle = node.get_bundle(bundle_ref, purpose=Purpose.OPERATIONS)
    expires = holder_auth.now_ms() + SIGNATURE_TTL_S * 1000
    intent = Intent(
        node_id=node.node_id,
        account=bundle.owner,
        operation=operation,
        moves=((bundle.id, wh),),
        request_id=request_id,
        expires_at_ms=expires,
        **fields,
    )
    return holder_auth.sign(key, intent)


def register(main: click.Group) -> None:
    """Add ``keys holder-new`` to the ``keys`` group of ``main``."""
    keys = main.commands["keys"]

    @keys.command("holder-new")
    @click.option(
        "--out",
        type=click.Path(path_type=Path, file_okay=False),
        required=True,
        help="Folder for holder.key (private, mode 0600) and holder.pub (base64).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
    def holder_new(out: Path, as_json: bool) -> None:
        """Generate a holder key pair, for `account create --holder-key` and `--sign-with`.

        The private key stays with the holder: keep it off the node's machine when the point
        is that the operator cannot move the holder's bundles.
        """
        import json

        private, raw = holder_auth.new_key_pair(out)
        public = base64.b64encode(raw).decode("ascii")
        data = {"private_key_file": str(private), "public_key": public}
        if as_json:
            click.echo(json.dumps(data, indent=2, sort_keys=True))
        else:
            click.echo(f"holder key {private} (mode 0600)\npublic key {public}")
