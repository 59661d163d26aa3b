"""``eap-node receipt``: export, present and verify selective-disclosure claim receipts.

Registered on the main group by :func:`register`; the format and the checks are in
:mod:`eap.node.domain.receipts` (``docs/receipts.md``).  Files hold one SD-JWT in its compact
form (``<JWT>~<disclosure>~...~[<KB-JWT>]``) and a newline.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from eap.node.cli import (
    _emit,
    _home_option,
    _issuer_key_options,
    _json_option,
    _open,
    _parse_key_args,
    _verify_keys,
)

#: Exit code of ``receipt verify`` when the presentation does not verify.
RECEIPT_REJECTED_EXIT = 13


@click.group()
def receipt() -> None:
    """Selective-disclosure claim receipts (SD-JWT), shown field by field.

    \b
    eap-node receipt export CLAIM --out FILE             the full receipt, for its holder
    eap-node receipt present CLAIM --show hour,zone,wh --out FILE
    eap-node receipt present --from FILE --show ... --out FILE
    eap-node receipt verify FILE --issuer-key KEYID=BASE64

    `receipt verify` needs no node home: exit 0 when the presentation verifies (the disclosed
    fields are printed), 13 when it does not (one line says why), 2 on bad usage.
    """


def _write(out: Path, token: str) -> None:
    try:
        out.write_text(token + "\n", encoding="ascii")
    except OSError as exc:
        raise click.BadParameter(f"cannot write {out}: {exc}", param_hint="--out") from None


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {what} {path}: {exc}") from None


@receipt.command("export")
@click.argument("claim")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Write the full receipt (all disclosures, i.e. all salts) to FILE.",
)
@_home_option
@_json_option
def receipt_export(claim, out, home, as_json) -> None:
    """Write the full SD receipt of CLAIM (e.g. medellin.example/claim/7) for its holder.

    The file reveals every field to whoever holds it: give it only to the claim's holder,
    who presents from it with `receipt present --from FILE`.
    """
    from eap.node.domain import receipts

    token = receipts.stored_receipt(_open(home), claim)
    _write(out, token)
    _emit(
        {"claim": claim, "out": str(out)}, as_json, text=f"wrote the SD receipt of {claim} to {out}"
    )


def _holder_signer(path: Path | None):
    if path is None:
        return None
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--holder-key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise click.BadParameter(f"{path}: not an Ed25519 private key", param_hint="--holder-key")
    return key.sign


@receipt.command("present")
@click.argument("claim", required=False)
@click.option(
    "--show",
    required=True,
    metavar="FIELD,...",
    help="Fields to disclose, comma-separated (e.g. hour,zone,wh); all others stay "
    "hidden. Fields: claim_id, bundle, hour, zone, cell, source, technology, "
    "renewable_ppm, carbon_mg_per_kwh, wh, beneficiary, purpose, consumption, "
    "consumption_zone, owner, device, claimed_at_ms, inclusion.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Write the presentation to FILE.",
)
@click.option(
    "--from",
    "from_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Present from an exported receipt FILE instead of the node.",
)
@click.option(
    "--holder-key",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="The holder's Ed25519 private key (PEM), for a receipt bound to it.",
)
@click.option("--nonce", default=None, help="The verifier's nonce (key-bound receipts).")
@click.option("--audience", default=None, help="The verifier's id (key-bound receipts).")
@_home_option
@_json_option
def receipt_present(
    claim, show, out, from_file, holder_key, nonce, audience, home, as_json
) -> None:
    """Write a presentation of CLAIM's receipt that discloses only the --show fields."""
    from eap.node.domain import receipts

    if (claim is None) == (from_file is None):
        raise click.UsageError("give either CLAIM (from the node home) or --from FILE")
    if from_file is not None:
        token = _read(from_file, "receipt")
    else:
        token = receipts.stored_receipt(_open(home), claim)
    fields = [f.strip() for f in show.split(",") if f.strip()]
    if not fields:
        raise click.BadParameter("name at least one field to show", param_hint="--show")
    presented = receipts.present(token, fields, _holder_signer(holder_key), nonce, audience)
    _write(out, presented)
    _emit(
        {"out": str(out), "shown": fields},
        as_json,
        text=f"wrote a presentation showing {', '.join(fields)} to {out}",
    )


@receipt.command("verify")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@_issuer_key_options(
    "--issuer-key", ("--issuer-node-descriptor", "--descriptor"), "the receipt's own"
)
@click.option(
    "--batch-descriptor",
    "batch_descriptor",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="Descriptor of the node that issued the "
    "record's batch, when not the receipt's issuer (imported serials).",
)
@click.option(
    "--require",
    default="",
    metavar="FIELD,...",
    help="Fields the presentation must disclose (e.g. hour,zone,wh,inclusion).",
)
@click.option("--nonce", default=None, help="Nonce the holder had to sign (key-bound receipts).")
@click.option("--audience", default=None, help="This verifier's id (key-bound receipts).")
@_json_option
def receipt_verify(
    file,
    key_args,
    descriptor_file,
    identity_file,
    issuer,
    batch_descriptor,
    require,
    nonce,
    audience,
    as_json,
) -> None:
    """Check the presentation in FILE offline with the issuer's public key(s).

    Checks the issuer's Ed25519 signature, that every disclosed field is one the issuer
    committed to (salted SHA-256 digest), the record's Merkle inclusion in its signed batch
    when `inclusion` is disclosed, and the holder's key-binding JWT when the receipt binds a
    key, and that every --require field is disclosed.  Prints the disclosed fields exactly as
    signed; exit 13 with the reason otherwise.
    """
    from eap.node.crypto.sd import SdError
    from eap.node.domain import receipts

    if not (key_args or descriptor_file or identity_file):
        raise click.UsageError(
            "give the issuer's key(s): --issuer-key, --issuer-node-descriptor or --identity"
        )
    keys, named = _verify_keys(descriptor_file, identity_file)
    if batch_descriptor is not None:
        for node_id, found in _verify_keys(batch_descriptor, None)[0].items():
            keys.setdefault(node_id, {}).update(found)
    raw_keys = _parse_key_args(key_args, "--issuer-key")
    issuer = issuer or named

    def reject(reason: str) -> None:
        if as_json:
            click.echo(json.dumps({"ok": False, "reason": reason}, sort_keys=True))
        click.echo(f"receipt rejected: {reason}", err=True)
        sys.exit(RECEIPT_REJECTED_EXIT)

    token = _read(file, "presentation")
    try:
        if raw_keys:  # --issuer-key names keys of the expected issuer, else the receipt's
            keys.setdefault(issuer or str(receipts.payload_of(token).get("iss")), {}).update(
                raw_keys
            )
        checked = receipts.verify_receipt(
            token,
            keys,
            issuer=issuer,
            nonce=nonce,
            audience=audience,
            require=[f.strip() for f in require.split(",") if f.strip()],
        )
    except SdError as exc:
        reject(exc.reason)
        return
    data = checked.to_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))
        return
    _print_checked(data)


def _print_checked(data: dict[str, Any]) -> None:
    """Plain text through click.echo: user data is printed literally, never as markup."""
    lines = [f"receipt OK: issued by {data['issuer']} (key {data['key_id']})"]
    for name, value in data["disclosed"].items():
        if name == "inclusion":
            b = value["batch"]
            lines.append(
                f"  inclusion: verified: leaf {value['index']} of batch "
                f"{b['issuer']}#{b['seq']} ({b['count']} records, root "
                f"{b['merkle_root']}, signed by {b['key_id']})"
            )
        else:
            lines.append(f"  {name}: {json.dumps(value, ensure_ascii=False)}")
    hidden = data["undisclosed"]
    lines.append(f"  not disclosed: {', '.join(hidden) if hidden else '-'}")
    kb = data["key_binding"]
    if kb is not None:
        lines.append(
            f"  holder key binding: verified (aud {json.dumps(kb['aud'])}, nonce "
            f"{json.dumps(kb['nonce'])}, iat {kb['iat']})"
        )
    elif data["holder_key"] is None:
        lines.append("  holder key binding: none (the receipt binds no holder key)")
    click.echo("\n".join(lines))


def register(main: click.Group) -> None:
    """Add the ``receipt`` group to ``eap-node``."""
    main.add_command(receipt)
