"""``eap-node``: the operator's command line.

Commands share the domain layer with the gRPC API (:class:`eap.node.domain.node.Node`), so both
give the same results and errors.  Listings print tables for people and ``--json`` for machines.
Errors print one line on stderr and exit non-zero (see ``eap.node.errors`` for the codes).
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import click

from eap.node import holder_cli as hcli
from eap.node.cli_output import (
    Table,
    console,
    err_console,
    error,
    json_lines,
    stream_table,
    write_blocks,
)
from eap.node.cli_output import emit as _emit
from eap.node.config import create_home, default_home
from eap.node.errors import EapError, FailedPrecondition, FieldViolation, InvalidArgument
from eap.node.records.enums import Purpose, Source, Status, Technology

__all__ = ["_emit", "console", "err_console", "main"]


def _home_option(f):
    return click.option(
        "--home",
        type=click.Path(path_type=Path),
        default=None,
        envvar="EAP_NODE_HOME",
        help="Node home folder (default: $EAP_NODE_HOME or ~/.eap-node).",
    )(f)


def _json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")(f)


def _purpose_option(f):
    return click.option(
        "--purpose",
        default="operations",
        show_default=True,
        type=click.Choice(["operations", "transparency"]),
        help="Read purpose: operations (all fields, audit-logged) or transparency (public ones).",
    )(f)


def _request_option(f):
    return click.option(
        "--request-id",
        default=None,
        help="Idempotency key; a replay returns the first result (default: a fresh UUID).",
    )(f)


def _rid(value: str | None) -> str:
    return value or str(uuid.uuid4())


_NODES: dict[Any, Any] = {}


def _open(home: Path | None):
    """The node of ``home``, opened once per process."""
    from eap.node.domain.node import Node

    if home not in _NODES:
        _NODES[home] = Node.open(home or default_home())
    return _NODES[home]


def _time(value: int) -> str:
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _parse_time(value: str | None, field: str) -> int:
    if not value:
        return 0
    if value.isdigit():
        return int(value)
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither unix seconds nor ISO 8601", param_hint=field
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp())


class _Group(click.Group):
    """Turns domain errors into one line on stderr and the error's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EapError as exc:
            error(exc)
            sys.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="eap-node")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              envvar="EAP_LOG_FORMAT",
              help="Log lines as text or one JSON object per line (default: [telemetry] "
                   "log_format for serve, else text).")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
                                               case_sensitive=False),
              default=None, envvar="EAP_LOG_LEVEL",
              help="Lowest level logged (default: INFO for serve, else WARNING).")
@click.pass_context
def main(ctx: click.Context, log_format: str | None, log_level: str | None) -> None:
    """Run and operate an Energy Attribute Protocol node."""
    ctx.ensure_object(dict)
    ctx.obj.update(log_format=log_format, log_level=log_level.upper() if log_level else None)
    if log_format or log_level:
        from eap.node.telemetry import logs

        logs.configure(log_format or "text", ctx.obj["log_level"] or "WARNING")


@main.command()
@click.option("--node-id", required=True, help="DNS-like node id, e.g. medellin.example.")
@click.option("--zone", required=True, help="Grid zone of the node, e.g. CO-ANT.")
@click.option(
    "--db",
    "database",
    default=None,
    help="SQLAlchemy URL (default: SQLite in the home; postgresql://... supported).",
)
@click.option("--api-listen", default=None, help="host:port of the local gRPC API.")
@click.option("--federation-listen", default=None, help="host:port of the federation API.")
@click.option(
    "--operator-signed",
    is_flag=True,
    help="Accept the demo attestation scheme operator-signed (demos and tests only).",
)
@_home_option
@_json_option
def init(
    node_id, zone, database, api_listen, federation_listen, operator_signed, home, as_json
) -> None:
    """Create a node home: config, Ed25519 signing key and database."""
    from eap.node.domain.node import Node

    home = home or default_home()
    cfg = create_home(
        home,
        node_id,
        zone,
        database,
        api_listen,
        federation_listen,
        operator_signed=operator_signed,
    )
    node = Node.initialise(cfg)
    out = {
        "home": str(home),
        "node_id": node_id,
        "zone": zone,
        "database": node.store.url,
        "key_id": node.keys.active_key_id,
    }
    _emit(
        out,
        as_json,
        text=f"initialised node {node_id} in {home}\n"
        f"  key {out['key_id']}\n  database {out['database']}",
    )


@main.command()
@_home_option
@_json_option
def status(home, as_json) -> None:
    """Node identity and totals (devices, readings, issued/active/retired Wh)."""
    st = _open(home).status()
    table = Table(title=f"node {st.node_id}", show_header=False)
    for k, v in st.to_dict().items():
        table.add_row(k, f"{v:,}" if isinstance(v, int) else str(v))
    _emit(st.to_dict(), as_json, table)


# -- accounts ----------------------------------------------------------------------------------


@main.group()
def account() -> None:
    """Manage accounts (pseudonymous holders of bundles)."""


@account.command("create")
@click.option("--label", default="", help="Private label for the operator.")
@click.option("--identity", default="", help="Real identity (only with --disclose).")
@click.option("--disclose", is_flag=True, help="The holder opts in to disclose its identity.")
@hcli.holder_key_option
@_request_option
@_home_option
@_json_option
def account_create(label, identity, disclose, holder_key, request_id, home, as_json) -> None:
    """Create an account; prints its id and its one-time bearer token."""
    res = _open(home).create_account(
        request_id=_rid(request_id),
        label=label,
        identity=identity,
        disclose=disclose,
        holder_public_key=hcli.parse_holder_key(holder_key),
    )
    _emit(res.to_dict(), as_json, text=f"{res.account.id}\ntoken: {res.token or '(replay)'}")


@main.command()
@_purpose_option
@_home_option
@_json_option
def accounts(purpose, home, as_json) -> None:
    """List accounts with their live balance, in id order (--json: JSON Lines, streamed)."""
    items = _open(home).stream_accounts(purpose=Purpose[purpose.upper()])
    if as_json:
        json_lines(items)
        return
    stream_table(
        "accounts",
        ["id", "label", "identity", "balance Wh", "holder-signed"],
        (
            [a.id, a.label, a.identity or "", f"{a.balance_wh:,}", _signed(a)]
            for a in items
        ),
    )


def _signed(account) -> str:
    return "yes" if account.holder_public_key else ""


# -- devices -----------------------------------------------------------------------------------


@main.group()
def device() -> None:
    """Manage production and storage devices."""


@device.command("register")
@click.option("--ref", "local_ref", required=True, help="Operator's own device reference.")
@click.option("--capacity-w", type=int, required=True, help="Nameplate capacity in W.")
@click.option(
    "--source",
    required=True,
    help="Energy source: " + ", ".join(m.name.lower() for m in Source if m.value),
)
@click.option(
    "--technology",
    required=True,
    help="Technology: " + ", ".join(m.name.lower() for m in Technology if m.value),
)
@click.option("--commissioned", "commissioned_on", required=True, help="ISO date YYYY-MM-DD.")
@click.option("--lat", "latitude", type=float, required=True, help="Exact latitude (private).")
@click.option("--lon", "longitude", type=float, required=True, help="Exact longitude (private).")
@click.option("--zone", required=True, help="Public grid zone, e.g. CO-ANT.")
@click.option("--owner", required=True, help="Account that receives the device's records.")
@click.option("--meter-id", required=True, help="Meter id as it appears in meter data (private).")
@click.option(
    "--renewable-ppm",
    type=int,
    default=None,
    help="Renewable share in ppm (default: 1e6 for renewable sources, else 0).",
)
@click.option("--carbon", "carbon_mg", type=int, default=0, help="Carbon intensity, mg CO2e/kWh.")
@click.option("--attestation-scheme", default="operator-signed", show_default=True)
@click.option(
    "--attestation",
    "attestation_evidence",
    required=True,
    help="Attestation evidence (document reference, signature...).",
)
@_request_option
@_home_option
@_json_option
def device_register(request_id, home, as_json, **fields) -> None:
    """Register a device after its attestation is accepted."""
    from eap.node.sybil_cli import meter_guard

    node = _open(home)
    with meter_guard(node):  # a meter registered at a peer node is refused here too
        dev = node.register_device(request_id=_rid(request_id), **fields)
    _emit(dev.to_dict(), as_json, text=f"registered {dev.id} ({dev.local_ref}, {dev.zone})")


@main.group(invoke_without_command=True)
@_purpose_option
@_home_option
@_json_option
@click.pass_context
def devices(ctx, purpose, home, as_json) -> None:
    """List registered devices in id order (--json: JSON Lines, streamed); subcommands:
    duplicates, check."""
    if ctx.invoked_subcommand:
        return
    items = _open(home).stream_devices(purpose=Purpose[purpose.upper()])
    if as_json:
        json_lines(items)
        return
    stream_table(
        "devices",
        ["id", "ref", "source", "capacity W", "zone", "cell", "owner"],
        (
            [d.id, d.local_ref, Source(d.source).name.lower(), f"{d.capacity_w:,}", d.zone,
             d.cell, d.owner]
            for d in items
        ),
    )


# -- meter data and issuance -------------------------------------------------------------------


@main.group()
def meter() -> None:
    """Meter data."""


@meter.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--format", "fmt", default="", help="csv or greenbutton (default: detect).")
@_request_option
@_home_option
@_json_option
def meter_import(file, fmt, request_id, home, as_json) -> None:
    """Import production readings from FILE (registry CSV or Green Button XML).

    The file is read and stored in chunks, all in one transaction: a bad reading anywhere
    leaves nothing of the file stored.  Importing an unchanged file again stores nothing."""

    from eap.node.progress import progress_bar, wanted

    node = _open(home)
    with progress_bar("importing", "bytes", enabled=wanted(as_json)) as progress:
        res = node.import_readings(file, request_id=_rid(request_id), fmt=fmt, progress=progress)
    text = f"imported {res.readings:,} readings ({res.wh:,} Wh), {res.unchanged:,} unchanged"
    if res.unknown_meters:
        text += (
            "\nskipped meters with no registered device: "
            f"{', '.join(res.unknown_meters[:10])}"
        )
    _emit(res.to_dict(), as_json, text=text)


@meter.command("pull")
@click.option(
    "--source",
    default="greenbutton_connect",
    show_default=True,
    help="The meter puller plugin to run (eap_meter_pullers).",
)
@click.option(
    "--subscription",
    "subscriptions",
    multiple=True,
    help="Only this subscription of the source (repeatable; default: all configured).",
)
@_request_option
@_home_option
@_json_option
def meter_pull(source, subscriptions, request_id, home, as_json) -> None:
    """Pull readings published since the last pull from a utility's API (a meter puller
    plugin; built in: Green Button Connect, [meters.greenbutton_connect]) and import them."""
    node = _open(home)
    pullers = {p.name: p for found in node.plugins.hook.eap_meter_pullers() for p in found}
    if source not in pullers:
        raise InvalidArgument(
            f"no meter puller {source!r}; loaded: {', '.join(sorted(pullers)) or 'none'}",
            [FieldViolation("source", "unknown meter puller")],
        )
    done = pullers[source].pull_into_node(node, subscriptions, request_id=_rid(request_id))
    data = [{**p.to_dict(), "import": r.to_dict()} for p, r in done]
    lines = []
    for p, r in done:
        lines.append(
            f"{p.subscription}: {p.interval_blocks} interval block(s) in {p.pages} page(s); "
            f"imported {r.readings:,} readings ({r.wh:,} Wh), {r.unchanged:,} unchanged"
        )
        lines += [f"  skipped {s}" for s in p.skipped]
        if r.unknown_meters:
            lines.append(
                "  meters with no registered device: "
                + ", ".join(r.unknown_meters[:10])
            )
    _emit(data, as_json, text="\n".join(lines))


@main.command()
@click.option("--device", default="", help="Only this device (id or local ref).")
@click.option("--since", default=None, help="Only readings from this time (ISO 8601 or unix s).")
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Readings per signed batch (default and maximum: [limits] max_batch_records).",
)
@_request_option
@_home_option
@_json_option
def issue(device, since, batch_size, request_id, home, as_json) -> None:
    """Issue record bundles from every reading not yet issued, in signed batches.

    Each batch is its own transaction: after a crash, run again (with the same --request-id
    or without) and only what is still pending is issued."""
    from eap.node.progress import progress_bar, wanted

    node = _open(home)
    shown = wanted(as_json)
    with progress_bar("issuing", "readings", enabled=shown) as progress:
        res = node.issue_all(
            request_id=_rid(request_id),
            device=device,
            since=_parse_time(since, "--since"),
            batch_size=batch_size,
            progress=progress if shown else None,  # no bar: no count of what is pending
        )
    if res.batches:
        seqs = res.batch_seqs
        where = (
            f"batch {seqs[0]}" if len(seqs) == 1 else f"{len(seqs)} batches ({seqs[0]}..{seqs[-1]})"
        )
        text = f"issued {res.bundles:,} bundles, {res.wh:,} Wh in {where}"
    else:
        text = "nothing to issue"
    _emit(res.to_dict(), as_json, text=text)


# -- bundles -----------------------------------------------------------------------------------


@main.command()
@click.argument("bundle")
@click.option(
    "--to",
    "to_account",
    required=True,
    help="Destination account id, or NODE_ID/ACCOUNT on another node (exactly once).",
)
@click.option("--wh", type=int, default=0, help="Wh to move (default: the whole bundle).")
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=None,
    help="Cross-node: seconds to wait for the peer before leaving the transfer in "
    "flight for the node's background worker (default 10).",
)
@hcli.sign_option
@_request_option
@_home_option
@_json_option
def transfer(bundle, to_account, wh, wait_s, sign_with, request_id, home, as_json) -> None:
    """Move BUNDLE, or --wh of it (a split), to another account, here or on another node."""
    rid = _rid(request_id)
    if "/" in to_account:
        _transfer_out(bundle, to_account, wh, wait_s, rid, home, as_json, sign_with=sign_with)
        return
    node = _open(home)
    holder = hcli.authorize(
        node, sign_with, "transfer", bundle, request_id=rid, wh=wh, destination=to_account
    )
    res = node.transfer(bundle, to_account=to_account, wh=wh, request_id=rid, holder=holder)
    text = f"moved {res.transferred.id} ({res.transferred.wh:,} Wh) to {to_account}"
    if res.remainder:
        text += f"\nremainder {res.remainder.id} ({res.remainder.wh:,} Wh)"
    _emit(res.to_dict(), as_json, text=text)


def _transfer_out(
    bundle, to, wh, wait_s, request_id, home, as_json, price_minor=0, currency="", sign_with=None
) -> None:
    from eap.node.federation.client import PeerClient
    from eap.node.federation.transfers import ABORTED, Transfers, split_destination

    node = _open(home)
    holder = None
    if sign_with is not None:
        holder = hcli.authorize(
            node,
            sign_with,
            "transfer_out",
            bundle,
            request_id=request_id,
            wh=wh,
            destination="/".join(split_destination(to)),
            price_minor=price_minor,
            currency=currency,
        )
    with PeerClient(node) as client:
        first, rec = Transfers(node, client).send(
            bundle,
            to=to,
            wh=wh,
            request_id=request_id,
            wait_s=wait_s,
            price_minor=price_minor,
            currency=currency,
            holder=holder,
        )
    data = {**first.to_dict(), "transfer": rec.to_dict()}
    text = (
        f"transfer {rec.id}: {rec.state}\n  {rec.wh:,} Wh of "
        f"{first.exported.id} to {to}"
    )
    if price_minor:
        text += f" for {price_minor:,} {currency} minor units"
        if rec.state == "committed":
            text += f" (obligation {rec.id} recorded on both nodes)"
    if first.remainder:
        text += f"\n  remainder {first.remainder.id} ({first.remainder.wh:,} Wh) stays here"
    if rec.reason:
        text += f"\n  reason: {rec.reason}"
    if not rec.settled and rec.state != ABORTED:
        text += (
            "\n  still in flight: the node's background worker (`eap-node serve`) finishes"
            f" it{f' (last error: {rec.last_error})' if rec.last_error else ''}"
        )
    _emit(data, as_json, text=text)
    if rec.state == ABORTED:
        sys.exit(FailedPrecondition.exit_code)


@main.command("transfers")
@click.option(
    "--direction",
    type=click.Choice(["out", "in"]),
    default=None,
    help="Only outgoing or incoming cross-node transfers.",
)
@click.option(
    "--state",
    default=None,
    type=click.Choice(["preparing", "prepared", "committed", "aborted"]),
    help="Only transfers in this state.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="First deliver what is owed to peers and resolve in-doubt imports now.",
)
@_home_option
@_json_option
def transfers_(direction, state, resume, home, as_json) -> None:
    """List cross-node transfers with their state (and what is still owed to the peer)."""
    from eap.node.federation.transfers import Transfers

    node = _open(home)
    if resume:
        from eap.node.federation.client import PeerClient

        with PeerClient(node) as client:
            Transfers(node, client).recover()
    engine = Transfers(node)

    def pages():
        after = ""
        while True:
            page = engine.list(direction=direction, state=state, after=after, limit=1000)
            yield from page
            if len(page) < 1000:
                return
            after = engine.page_token(page[-1])

    if as_json:
        json_lines(pages())
        return
    stream_table(
        "cross-node transfers",
        ["transfer", "dir", "peer", "bundle", "Wh", "account", "state", "owed",
         "reason / last error"],
        (
            [r.id, r.direction, r.peer, r.bundle_id or "", f"{r.wh:,}", r.to_account or "",
             r.state, ",".join(r.pending), r.reason or r.last_error or ""]
            for r in pages()
        ),
    )


@main.command()
@click.argument("bundle")
@click.option("--beneficiary", required=True, help="Who the claim is for.")
@click.option("--purpose", required=True, help="Reporting purpose, e.g. scope2-market-based.")
@click.option("--wh", type=int, default=0, help="Wh to claim (default: the whole bundle).")
@click.option("--consumption-start", default=None, help="Consumption interval start.")
@click.option("--consumption-end", default=None, help="Consumption interval end.")
@click.option("--zone", "consumption_zone", default="", help="Consumption zone.")
@hcli.sign_option
@_request_option
@_home_option
@_json_option
def retire(
    bundle,
    beneficiary,
    purpose,
    wh,
    consumption_start,
    consumption_end,
    consumption_zone,
    sign_with,
    request_id,
    home,
    as_json,
) -> None:
    """Claim BUNDLE (or --wh of it) for consumption, irreversibly; prints the signed receipt."""
    node, rid = _open(home), _rid(request_id)
    claim = dict(
        beneficiary=beneficiary,
        purpose=purpose,
        consumption_start=_parse_time(consumption_start, "--consumption-start"),
        consumption_end=_parse_time(consumption_end, "--consumption-end"),
        consumption_zone=consumption_zone,
    )
    holder = hcli.authorize(node, sign_with, "retire", bundle, request_id=rid, wh=wh, **claim)
    rec = node.retire(bundle, wh=wh, request_id=rid, holder=holder, **claim)
    _emit(
        rec.to_dict(),
        as_json,
        text=f"claim {rec.id}: {rec.bundle.wh:,} Wh of {rec.bundle.id} for {rec.beneficiary}"
        f"\n  receipt digest {rec.digest.hex()}\n  signed by {rec.key_id}",
    )


@main.command()
@click.option("--owner", default="", help="Only bundles of this account.")
@click.option(
    "--status",
    "status_",
    default="",
    help="Only this status: " + ", ".join(m.name.lower() for m in Status if m.value),
)
@click.option("--device", default="", help="Only bundles of this device (id or local ref).")
@click.option("--limit", type=int, default=0, help="At most this many (default: all).")
@_purpose_option
@_home_option
@_json_option
def bundles(owner, status_, device, limit, purpose, home, as_json) -> None:
    """List record bundles in serial order (--json: JSON Lines, streamed page by page)."""
    st = int(Status.parse(status_, "--status")) if status_ else 0
    filters = dict(purpose=Purpose[purpose.upper()], owner=owner, status=st, device=device)
    if as_json:  # lines rendered by the database, written a page at a time
        write_blocks(_open(home).stream_bundle_lines(**filters, limit=max(limit, 0)))
        return
    items = _open(home).stream_bundles(**filters)
    if limit > 0:
        items = itertools.islice(items, limit)
    stream_table(
        "bundles",
        ["id", "Wh", "hour (UTC)", "source", "zone", "owner", "status"],
        (
            [b.id, f"{b.wh:,}", _time(b.interval_start), Source(b.source).name.lower(), b.zone,
             b.owner, Status(b.status).name.lower()]
            for b in items
        ),
    )


@main.command()
@click.option("--beneficiary", default="", help="Only claims for this beneficiary.")
@_purpose_option
@_home_option
@_json_option
def claims(beneficiary, purpose, home, as_json) -> None:
    """List claim receipts in claim order (--json: JSON Lines, streamed)."""
    items = _open(home).stream_claims(
        purpose=Purpose[purpose.upper()], beneficiary=beneficiary
    )
    if as_json:
        json_lines(items)
        return
    stream_table(
        "claims",
        ["claim", "bundle", "Wh", "beneficiary", "purpose"],
        ([c.id, c.bundle.id, f"{c.bundle.wh:,}", c.beneficiary, c.purpose] for c in items),
    )


# -- trades and netting ----------------------------------------------------------------------


@main.command()
@click.argument("bundle")
@click.option(
    "--to",
    "to_account",
    required=True,
    help="Buyer account id on this node, or NODE_ID/ACCOUNT on a peer node (exactly once).",
)
@click.option("--wh", type=int, default=0, help="Wh sold (default: the whole bundle).")
@click.option(
    "--price-minor",
    type=int,
    required=True,
    help="Total price in integer minor units of --currency (e.g. cents), 1..2^62.",
)
@click.option("--currency", required=True, help="ISO 4217 code, e.g. EUR, COP.")
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=None,
    help="Cross-node: seconds to wait for the peer (default 10).",
)
@hcli.sign_option
@_request_option
@_home_option
@_json_option
def trade(
    bundle, to_account, wh, price_minor, currency, wait_s, sign_with, request_id, home, as_json
) -> None:
    """Sell BUNDLE (or --wh of it): a transfer plus the buyer's payment obligation.

    To NODE_ID/ACCOUNT it is a cross-node transfer carrying the price: both nodes record the
    obligation when it commits, none when it aborts; refused (exit 5) past the peer's credit
    limit (`eap-node peer limits`).
    """
    rid = _rid(request_id)
    if "/" in to_account:
        _transfer_out(
            bundle,
            to_account,
            wh,
            wait_s,
            rid,
            home,
            as_json,
            price_minor=price_minor,
            currency=currency,
            sign_with=sign_with,
        )
        return
    node = _open(home)
    holder = hcli.authorize(
        node,
        sign_with,
        "transfer",
        bundle,
        request_id=rid,
        wh=wh,
        destination=to_account,
        price_minor=price_minor,
        currency=currency,
    )
    res = node.transfer(
        bundle,
        to_account=to_account,
        wh=wh,
        price_minor=price_minor,
        currency=currency,
        request_id=rid,
        holder=holder,
    )
    _emit(
        res.to_dict(),
        as_json,
        text=f"sold {res.transferred.id} ({res.transferred.wh:,} Wh) to {to_account} "
        f"for {price_minor:,} {currency} minor units",
    )


@main.command()
@click.option("--period", default="", help="Settlement period YYYY-MM-DD (default: all).")
@click.option("--currency", default="", help="Only this currency.")
@_home_option
@_json_option
def net(period, currency, home, as_json) -> None:
    """Net the period's payment obligations: positions, bilateral nets, settlement payments."""
    from eap.node.domain.settlement import net as net_obligations

    res = net_obligations(_open(home).store, period, currency)
    table = Table(
        "payer",
        "payee",
        "currency",
        "amount (minor)",
        title=f"settlement instructions, period {res.period}: {res.obligations} "
        f"obligations, efficiency " + ", ".join(f"{c} {e:.1%}" for c, e in res.efficiency.items()),
    )
    for p in res.instructions:
        table.add_row(p.payer, p.payee, p.currency, f"{p.amount_minor:,}")
    _emit(res.to_dict(), as_json, table)


# -- keys --------------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """The node's Ed25519 signing keys."""


@keys.command("list")
@_home_option
@_json_option
def keys_list(home, as_json) -> None:
    """List signing keys (the active one and retired ones kept for verification)."""
    ring = _open(home).keys
    items = [
        dict(info.as_dict(), active=kid == ring.active_key_id)
        for kid, info in ring.public_keys().items()
    ]
    table = Table("key id", "fingerprint", "active", "retired at (ms)", title="signing keys")
    for kid, info in ring.public_keys().items():
        table.add_row(
            kid,
            info.fingerprint(),
            "yes" if kid == ring.active_key_id else "",
            str(info.retired_at_ms or ""),
        )
    _emit(items, as_json, table)


@keys.command("rotate")
@click.option(
    "--retire-after-days",
    type=float,
    default=None,
    help="Stop accepting the old key after this many days (default: keep verifying "
    "it, since signed batches and receipts outlive keys).",
)
@_home_option
@_json_option
def keys_rotate(retire_after_days, home, as_json) -> None:
    """Make a new active signing key; the old one is kept for verification."""
    ring = _open(home).keys
    old = ring.active_key_id
    new = ring.rotate(
        retired_validity_s=None if retire_after_days is None else retire_after_days * 86400
    )
    _emit({"retired": old, "active": new}, as_json, text=f"active key {new} (retired {old})")


# -- server ------------------------------------------------------------------------------------


@main.command()
@click.option("--listen", default=None, help="host:port for the local API (default: config).")
@click.option(
    "--tls-cert",
    type=click.Path(path_type=Path),
    default=None,
    help="PEM certificate of the local API (default: [api] tls_cert).",
)
@click.option(
    "--tls-key",
    type=click.Path(path_type=Path),
    default=None,
    help="Its private key, mode 0600 (default: [api] tls_key).",
)
@click.option(
    "--client-ca",
    type=click.Path(path_type=Path),
    default=None,
    help="CA(s) of accepted client certificates (default: [api] client_ca).",
)
@click.option(
    "--require-client-cert/--no-require-client-cert",
    default=None,
    help="Refuse API clients without a certificate from --client-ca.",
)
@click.option(
    "--allow-plaintext-remote",
    is_flag=True,
    default=None,
    help="Serve a non-loopback API without TLS (tokens in clear): an explicit opt-out.",
)
@_home_option
@click.pass_context
def serve(ctx, listen, tls_cert, tls_key, client_ca, require_client_cert,
          allow_plaintext_remote, home) -> None:
    """Serve the local gRPC API (eap.v1.NodeApi, grpc.health.v1, reflection) until stopped.

    A non-loopback API needs TLS ([api] tls_cert / tls_key, docs/operator-guide.md).
    """
    from eap.node.api.server import serve_forever

    serve_forever(_open(home), listen=listen, tls_cert=tls_cert, tls_key=tls_key,
                  client_ca=client_ca, require_client_cert=require_client_cert,
                  allow_plaintext_remote=allow_plaintext_remote or None,
                  log_format=(ctx.obj or {}).get("log_format"),
                  log_level=(ctx.obj or {}).get("log_level"))


@main.command()
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="New or empty folder for the CA, node homes and logs, kept afterwards "
    "(default: a temporary folder, removed afterwards).",
)
@click.option("--keep", is_flag=True, help="Keep the temporary folder (its path is printed).")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the synthetic day.")
@click.option("--day", default="2025-06-21", show_default=True, help="The simulated day (UTC).")
@click.option("--chain", is_flag=True, help="Anchor batch roots and settle on an in-process EVM "
              "chain (plugin evm; needs the `evm` extra) and show the transaction hashes.")
@click.option("--reports", type=click.Path(path_type=Path, file_okay=False),
              default=Path("eap-demo-reports"), show_default=True,
              help="Folder for each city customer's hourly matching report (HTML).")
@_json_option
def demo(workdir, keep, seed, day, chain, reports, as_json) -> None:
    """Three city nodes as separate processes federating through a simulated day.

    Medellín, Barcelona and Amsterdam each run `eap-node serve` on loopback (own SQLite, TLS
    from a demo CA, mutual trust).  Driven through each node's gRPC API: real Green Button
    consumption, synthetic solar and wind issued as signed batches, sync between nodes,
    local and cross-border trades (exactly-once transfers), hourly claims.  Ends with a
    summary per node and a federation-wide audit through one node's RunAudit (exit 1 if the
    books do not close).
    """
    from eap.node.demo_report import run_with_progress

    report = run_with_progress(
        workdir=workdir, keep=keep, seed=seed, day=day, as_json=as_json, console=err_console,
        chain=chain, reports=reports,
    )
    if as_json:
        _emit(report.to_dict(), True)
    else:
        from eap.node.demo_report import render

        render(report, console)
    if not report.ok:
        error(
            "the federation audit failed" if not report.conserved else "see the summary above",
            label="demo check failed:",
        )
        sys.exit(1)


# -- identity and proofs -----------------------------------------------------------------------

#: Exit code of `eap-node proof verify` when the proof does not verify (tampered, wrong key).
PROOF_REJECTED_EXIT = 13


@main.command()
@_home_option
@_json_option
def identity(home, as_json) -> None:
    """Print this node's public identity: node id, zone, protocol versions, signing keys.

    `--json` writes the protobuf JSON of eap.v1.NodeIdentity (as GetIdentity returns it),
    which `eap-node proof verify --identity FILE` reads.
    """
    from google.protobuf import json_format

    from eap.node.api import convert

    ident = convert.node_identity(_open(home))
    if as_json:
        click.echo(json_format.MessageToJson(ident, indent=2, sort_keys=True))
        return
    table = Table(
        "key id",
        "public key (base64)",
        "active",
        "not after (ms)",
        title=f"{ident.node_id} ({ident.zone}), {', '.join(ident.protocol_versions)}",
    )
    for k in ident.keys:
        table.add_row(
            k.key_id,
            base64.b64encode(k.public_key).decode(),
            "yes" if k.active else "",
            str(k.not_after_ms or ""),
        )
    console.print(table)


class _DefaultCommandGroup(click.Group):
    """A group whose first argument, when not a subcommand, goes to a default subcommand:
    `eap-node proof BUNDLE` is `eap-node proof get BUNDLE`."""

    default_command = "get"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@main.group(cls=_DefaultCommandGroup)
def proof() -> None:
    """Self-contained bundle proofs, checked offline with the issuer's public key.

    \b
    eap-node proof BUNDLE [--out FILE]      write the proof of a bundle (JSON)
    eap-node proof verify FILE --key ...    check a proof offline

    `proof verify` exits 0 when the proof holds, 13 when it does not (one line says what
    failed), 2 on bad usage (no key, malformed --key).
    """


@proof.command("get")
@click.argument("bundle")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the proof to FILE (default: stdout).",
)
@_home_option
@_json_option
def proof_get(bundle, out, home, as_json) -> None:
    """Write the proof of BUNDLE (held, retired or exported here) as JSON.

    The file is {"issuer": ..., "bundle_proof": <protobuf JSON of eap.v1.BundleProof>}: the
    bundle (TRANSPARENCY view), the issuer's signed batch header, the issued record, its
    inclusion path and the split lineage.  "issuer" is a convenience; the verifier trusts only
    what the signature covers.  With --out, --json prints a summary as JSON.
    """
    from google.protobuf import json_format

    from eap.node.api import convert
    from eap.node.domain import proofs

    bp = convert.bundle_proof(proofs.bundle_proof(_open(home), bundle))
    doc = {"issuer": bp.proof.batch.issuer, "bundle_proof": json_format.MessageToDict(bp)}
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    if out is None:
        click.echo(text, nl=False)
        return
    out.write_text(text)
    summary = {
        "bundle": bp.bundle.id,
        "issuer": bp.proof.batch.issuer,
        "batch_seq": bp.proof.batch.seq,
        "out": str(out),
    }
    _emit(
        summary,
        as_json,
        text=f"wrote the proof of {bp.bundle.id} (issuer "
        f"{bp.proof.batch.issuer}, batch #{bp.proof.batch.seq}) to {out}",
    )


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise click.BadParameter(f"cannot read {what} {path}: {exc}") from None


def _issuer_key_options(key_flag: str, descriptor_flags: tuple[str, ...], own: str):
    """The options naming an issuer's public keys, shared by `proof verify` and `receipt
    verify`: ``key_flag`` KEYID=BASE64 (repeatable), a descriptor, an identity, ``--issuer``
    (``own``: what the issuer defaults to with keys only)."""

    def wrap(f):
        for option in reversed(
            (
                click.option(
                    key_flag,
                    "key_args",
                    multiple=True,
                    metavar="KEYID=BASE64",
                    help="An issuer public key: key id and raw 32-byte Ed25519 key in base64 "
                    "(repeatable; `eap-node identity` prints them).",
                ),
                click.option(
                    *descriptor_flags,
                    "descriptor_file",
                    type=click.Path(path_type=Path, exists=True),
                    default=None,
                    help="The issuer's signed node descriptor (JSON); its keys are used.",
                ),
                click.option(
                    "--identity",
                    "identity_file",
                    type=click.Path(path_type=Path, exists=True),
                    default=None,
                    help="The issuer's identity (`eap-node identity --json`, GetIdentity).",
                ),
                click.option(
                    "--issuer",
                    default=None,
                    help="Expected issuer node id (default: the descriptor's or identity's; "
                    f"with {key_flag} only, {own}).",
                ),
            )
        ):
            f = option(f)
        return f

    return wrap


def _parse_key_args(key_args, param_hint: str) -> dict[str, bytes]:
    """``{key id: raw key}`` from KEYID=BASE64 arguments; the key id must be the key's own."""
    from eap.node.crypto.keys import key_id_for

    out: dict[str, bytes] = {}
    for arg in key_args:
        kid, sep, b64 = arg.partition("=")
        try:
            raw = base64.b64decode(b64, validate=True)
            ok = sep == "=" and len(raw) == 32 and key_id_for(raw) == kid
        except (ValueError, EapError):
            ok = False
        if not ok:
            raise click.BadParameter(
                f"{arg[:80]!r}: expected KEYID=BASE64 of a 32-byte key whose key id is KEYID",
                param_hint=param_hint,
            )
        out[kid] = raw
    return out


def _verify_keys(descriptor_file, identity_file) -> tuple[dict, str | None]:
    """``({node id: {key id: raw}}, node id or None)`` from the key options."""
    from eap.node.crypto.keys import key_id_for

    out: dict[str, dict[str, bytes]] = {}
    node_id = None
    if descriptor_file is not None:
        from eap.node.federation.descriptor import NodeDescriptor

        try:
            desc = NodeDescriptor.from_json(descriptor_file.read_bytes())
            desc.verify()
        except (OSError, EapError) as exc:
            raise click.BadParameter(
                f"{descriptor_file}: {exc}", param_hint="--descriptor"
            ) from None
        node_id = desc.node_id
        out.setdefault(node_id, {}).update(
            {k.key_id: k.public_key for k in desc.public_keys.values()}
        )
    if identity_file is not None:
        from google.protobuf import json_format

        from eap.v1 import node_api_pb2 as api

        try:
            ident = json_format.ParseDict(
                _read_json(identity_file, "identity"),
                api.NodeIdentity(),
                ignore_unknown_fields=True,
            )
        except json_format.ParseError as exc:
            raise click.BadParameter(f"{identity_file}: {exc}", param_hint="--identity") from None
        for k in ident.keys:
            if len(k.public_key) != 32 or key_id_for(k.public_key) != k.key_id:
                raise click.BadParameter(
                    f"{identity_file}: key {k.key_id} does not match its public key",
                    param_hint="--identity",
                )
        if node_id is not None and ident.node_id != node_id:
            raise click.BadParameter("--identity and --descriptor name different nodes")
        node_id = ident.node_id
        out.setdefault(node_id, {}).update({k.key_id: k.public_key for k in ident.keys})
    return out, node_id


@proof.command("verify")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@_issuer_key_options("--key", ("--descriptor",), "the proof's own issuer")
@_json_option
def proof_verify(file, key_args, descriptor_file, identity_file, issuer, as_json) -> None:
    """Check the proof in FILE offline, with only the issuer's public key(s).

    Checks the batch header's Ed25519 signature, the record's inclusion path up to the signed
    Merkle root, the record rules, the lineage hash recomputed from the record's leaf to the
    bundle, the bundle's id and serial range, and that its attributes equal the issued
    record's.  Exit 0 and print what was proved; exit 13 with one line saying what failed; 2
    on bad usage.  Needs no node home and no network.
    """
    from google.protobuf import json_format

    from eap.node.domain import proofs
    from eap.node.domain.provenance import ProofError
    from eap.v1 import types_pb2 as pb

    if not (key_args or descriptor_file or identity_file):
        raise click.UsageError("give the issuer's key(s): --key, --descriptor or --identity")
    keys, named = _verify_keys(descriptor_file, identity_file)
    issuer = issuer or named
    raw_keys = _parse_key_args(key_args, "--key")

    def reject(reason: str) -> None:
        if as_json:
            click.echo(json.dumps({"ok": False, "reason": reason}, sort_keys=True))
        error(reason, label="proof rejected:")
        sys.exit(PROOF_REJECTED_EXIT)

    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
        body = doc.get("bundle_proof", doc) if isinstance(doc, dict) else doc
        bp = json_format.ParseDict(body, pb.BundleProof())
    except (
        OSError,
        UnicodeDecodeError,
        ValueError,
        TypeError,
        AttributeError,
        json_format.ParseError,
    ) as exc:
        reject(f"not a bundle proof file: {str(exc)[:200]}")
        return
    if raw_keys:  # --key names keys of the expected issuer, else of the proof's issuer
        keys.setdefault(issuer or bp.proof.batch.issuer, {}).update(raw_keys)
    try:
        res = proofs.check_bundle_proof(bp, keys, issuer=issuer)
    except ProofError as exc:
        reject(exc.reason)
        return
    data = res.to_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    a = data["attributes"]
    click.echo(
        f"proof OK: bundle {data['bundle']} ({data['wh']:,} Wh)\n"
        f"  issuer       {data['issuer']}, batch #{data['batch_seq']} signed by {data['key_id']}\n"
        f"  record       {data['record']['id']} (serials "
        f"{data['record']['serial_start']}-{data['record']['serial_end']})\n"
        f"  lineage      {' -> '.join(data['lineage'])}\n"
        f"  attributes   {a['source']}, {a['technology']}, zone {a['zone']}, device "
        f"{a['device_id']}, {_time(a['interval'][0])}-{_time(a['interval'][1])[11:]} UTC, "
        f"renewable {a['renewable_ppm']} ppm, carbon {a['carbon_mg_per_kwh']} mg/kWh\n"
        f"  cell         {data['cell'] or '-'} (attested by the issuer's custody record, "
        "not by the proof)"
    )


# Federation commands (certs, descriptor, peer, sync) live with the federation package.
from eap.node.federation.cli import register as _register_federation  # noqa: E402

_register_federation(main)

# The co-op ledger's commands live beside it.
from eap.node.ledger_cli import register as _register_ledger  # noqa: E402

_register_ledger(main)

# Plugin listing, the anchor queue and chain anchors (anchor status / catch-up / verify).
from eap.node.plugins_cli import register as _register_plugins  # noqa: E402

_register_plugins(main)

# The hourly matching and carbon report.
from eap.node.report_cli import register as _register_report  # noqa: E402

_register_report(main)
# Holder keys: `keys holder-new` (the --sign-with options come from the same module).
hcli.register(main)
# Selective-disclosure claim receipts: export, present, verify.
from eap.node.receipt_cli import register as _register_receipts  # noqa: E402

_register_receipts(main)

# Privacy: the audit log of personal-data reads, regulator aggregates and the regulator token.
from eap.node.privacy_cli import register as _register_privacy  # noqa: E402

_register_privacy(main)
# Bulk device onboarding (`device import`).
from eap.node.device_cli import register as _register_device_import  # noqa: E402

_register_device_import(main)
# Duplicate devices across nodes: `devices duplicates` and `devices check`.
from eap.node.sybil_cli import register as _register_sybil  # noqa: E402

_register_sybil(devices)
# Replicas of the node serving its database (coordination of background work).
from eap.node.replicas_cli import register as _register_replicas  # noqa: E402

_register_replicas(main)
