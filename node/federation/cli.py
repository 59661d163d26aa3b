"""``eap-node certs | descriptor | peer | sync | audit``: operating a node's federation
(peers include their credit limits and balances: ``peer limits``, ``peer balances``).

Registered on the main command group by :func:`register`.  Like every command, errors print
one line on stderr and exit with the error's code; ``--json`` prints machine-readable output.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click

from eap.node.cli import _emit, _home_option, _json_option, _open
from eap.node.cli_output import Table, styled
from eap.node.config import NodeConfig, default_home
from eap.node.errors import EapError, invalid


def _ms(value: int | None) -> str:
    if not value:
        return "-"
    return dt.datetime.fromtimestamp(value / 1000, dt.UTC).strftime("%m-%d %H:%M:%S")


# -- certs ---------------------------------------------------------------------------------------


@click.group()
def certs() -> None:
    """A demo/test federation PKI: a CA and node TLS certificates (real federations bring
    their own)."""


@certs.command("init-ca")
@click.option("--dir", "ca_dir", type=click.Path(path_type=Path), required=True,
              help="Folder for ca.crt and ca.key (created 0700).")
@click.option("--name", default="EAP demo federation CA", show_default=True)
@click.option("--days", type=int, default=3650, show_default=True)
@_json_option
def certs_init_ca(ca_dir, name, days, as_json) -> None:
    """Create a federation CA."""
    from eap.node.crypto import create_ca

    files = create_ca(ca_dir, name=name, days=days)
    _emit({"ca_cert": str(files.cert), "ca_key": str(files.key)}, as_json,
          text=f"created CA {name!r}\n  certificate {files.cert}\n  key {files.key} (keep "
               "it offline in a real federation)")


@certs.command("issue")
@click.option("--ca", "ca_dir", type=click.Path(path_type=Path), required=True,
              help="CA folder made by `certs init-ca`.")
@click.option("--node-id", default=None, help="Node id (default: the home's node id).")
@click.option("--host", "hosts", multiple=True,
              help="Further DNS name or IP the node is reached by (repeatable; default "
                   "localhost and 127.0.0.1).")
@click.option("--days", type=int, default=365, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: <home>/tls).")
@click.option("--overwrite", is_flag=True, help="Replace an existing certificate (renewal).")
@_home_option
@_json_option
def certs_issue(ca_dir, node_id, hosts, days, out, overwrite, home, as_json) -> None:
    """Issue a node TLS certificate into <home>/tls (node.crt, node.key 0600, ca.crt)."""
    from eap.node.crypto import issue_node_cert

    home = home or default_home()
    if node_id is None or out is None:
        cfg = NodeConfig.load(home)
        node_id = node_id or cfg.node_id
        out = out or home / "tls"
    host_list = ["localhost", "127.0.0.1", *hosts]
    files = issue_node_cert(ca_dir, node_id, out, host_list, days=days, overwrite=overwrite)
    _emit({"node_id": node_id, "cert": str(files.cert), "key": str(files.key),
           "ca": str(files.ca)}, as_json,
          text=f"issued TLS certificate for {node_id}\n  {files.cert}\n  {files.key}")


# -- descriptor ------------------------------------------------------------------------------------


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write to FILE (default: stdout).")
@click.option("--endpoint", default=None,
              help="Advertised federation host:port (default: [federation] endpoint/listen).")
@_home_option
def descriptor(out, endpoint, home) -> None:
    """Print this node's signed descriptor (JSON) for peers to `peer add`."""
    from eap.node.federation.descriptor import describe

    node = _open(home)
    desc = describe(node, endpoint=endpoint)
    text = desc.to_json()
    if out is None:
        click.echo(text, nl=False)
        return
    out.write_text(text)
    click.echo(f"wrote descriptor of {desc.node_id} to {out}\n"
               f"  key {desc.signing_key_id} fingerprint {desc.signer_fingerprint()}", err=True)


# -- peers ---------------------------------------------------------------------------------------


@click.group()
def peer() -> None:
    """The trust list: peers this node accepts."""


def _trust(home):
    from eap.node.federation.peers import TrustList

    node = _open(home)
    return node, TrustList(node.store, node.node_id, cache_s=0)


@peer.command("add")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False), required=False)
@click.option("--fingerprint", default=None,
              help="Expected SHA256:… fingerprint of the peer's signing key (compare out of "
                   "band). Required without FILE.")
@click.option("--node-id", default=None, help="Peer node id (without FILE).")
@click.option("--endpoint", default=None,
              help="Peer federation host:port (without FILE; with FILE overrides the "
                   "advertised one).")
@click.option("--update", is_flag=True, help="Replace the keys of a peer already trusted.")
@_home_option
@_json_option
def peer_add(file, fingerprint, node_id, endpoint, update, home, as_json) -> None:
    """Trust a peer: from its signed descriptor FILE, or by --node-id, --endpoint and
    --fingerprint (keys then learned and checked at the first handshake)."""
    from eap.node.federation.descriptor import NodeDescriptor

    node, trust = _trust(home)
    if file is not None:
        if node_id:
            raise invalid("--node-id", "comes from the descriptor FILE")
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise invalid("FILE", f"cannot read {file}: {exc.strerror}") from exc
        desc = NodeDescriptor.from_json(raw)
        p = trust.add_descriptor(desc, fingerprint=fingerprint, update=update, endpoint=endpoint)
        if desc.tls_ca_pem:
            _warn_foreign_ca(node, desc)
    else:
        missing = [o for o, v in (("--node-id", node_id), ("--endpoint", endpoint),
                                  ("--fingerprint", fingerprint)) if not v]
        if missing:
            raise invalid(missing[0], "required when no descriptor FILE is given")
        p = trust.add_pinned(node_id, endpoint, fingerprint)
    _emit(p.to_dict(), as_json,
          text=f"trusting {p.node_id} at {p.endpoint} ({p.status}; key {p.fingerprint})")


def _warn_foreign_ca(node, desc) -> None:
    """Warn when the peer's TLS CA is not among the CAs this node trusts."""
    from cryptography import x509

    from eap.node.federation.descriptor import ca_fingerprint
    from eap.node.federation.settings import FederationSettings

    ca_file = FederationSettings.load(node.config).tls_dir / "ca.crt"
    if not ca_file.exists():
        return
    pems = x509.load_pem_x509_certificates(ca_file.read_bytes())
    from cryptography.hazmat.primitives import serialization

    mine = {ca_fingerprint(c.public_bytes(serialization.Encoding.PEM)) for c in pems}
    if desc.tls_ca_fingerprint not in mine:
        click.echo(f"warning: {desc.node_id} presents TLS CA {desc.tls_ca_fingerprint}, which "
                   f"{ca_file} does not hold: append its CA there or connections will fail",
                   err=True)


@peer.command("list")
@_home_option
@_json_option
def peer_list(home, as_json) -> None:
    """Peers with status, protocol version, capabilities, last handshake and sync, cursor."""
    from eap.node.store import peer_repos

    node, trust = _trust(home)
    peers = trust.all()
    with node.store.read() as conn:
        totals = peer_repos.peer_totals(conn)
    rows = []
    for p in peers:
        d = p.to_dict()
        d["batches"], d["records"], d["wh"] = totals.get(p.node_id, (0, 0, 0))
        rows.append(d)
    table = Table("peer", "status", "protocol", "capabilities", "last hello", "last sync",
                  "cursor", "records", title="peers")
    for d in rows:
        table.add_row(d["node_id"], d["status"], d["protocol_version"] or "-",
                      ", ".join(d["capabilities"]) or "-", _ms(d["last_hello_ms"]),
                      _ms(d["last_sync_ms"]), str(d["cursor"]), f"{d['records']:,}")
    if not as_json:
        for d in rows:
            if d["last_error"]:
                click.echo(f"{d['node_id']}: last error: {d['last_error']}", err=True)
    _emit(rows, as_json, table)


@peer.command("remove")
@click.argument("node_id")
@_home_option
@_json_option
def peer_remove(node_id, home, as_json) -> None:
    """Stop trusting NODE_ID (records already imported from it stay, read-only)."""
    _, trust = _trust(home)
    trust.remove(node_id)
    _emit({"removed": node_id}, as_json, text=f"removed {node_id} from the trust list")


@peer.command("hello")
@click.argument("node_id")
@_home_option
@_json_option
def peer_hello(node_id, home, as_json) -> None:
    """Handshake with NODE_ID now: negotiate protocol version and capabilities."""
    from eap.node.federation.client import PeerClient

    node, trust = _trust(home)
    with PeerClient(node, trust=trust) as client:
        p = client.hello(node_id)
    _emit(p.to_dict(), as_json,
          text=f"{p.node_id}: {p.protocol_version}, capabilities {', '.join(p.capabilities)}")


@peer.command("limits")
@click.argument("node_id")
@click.option("--credit-limit", type=int, required=True,
              help="Most NODE_ID's accounts may owe this node's accounts, net, in minor units "
                   "of --currency (0 = refuse priced trades to it).")
@click.option("--settle-threshold", type=int, default=0, show_default=True,
              help="Net balance (either way) at which a settlement round is requested, minor "
                   "units (0 = never).")
@click.option("--currency", required=True, help="ISO 4217 code, e.g. EUR.")
@_home_option
@_json_option
def peer_limits(node_id, credit_limit, settle_threshold, currency, home, as_json) -> None:
    """Set this node's credit limit and settlement threshold towards peer NODE_ID."""
    from eap.node.domain import peer_credit

    node = _open(home)
    b = peer_credit.set_limits(node.store, node.node_id, peer=node_id, currency=currency,
                               credit_limit_minor=credit_limit,
                               settle_threshold_minor=settle_threshold)
    _emit(b.to_dict(), as_json,
          text=f"{b.peer} {b.currency}: credit limit {b.credit_limit_minor:,}, settlement "
               f"threshold {b.settle_threshold_minor:,}; balance {b.balance_minor:,}")


@peer.command("balances")
@_home_option
@_json_option
def peer_balances(home, as_json) -> None:
    """Running balances with every peer node per currency (unsettled obligations and priced
    trades in flight), with credit limits and settlement thresholds."""
    from eap.node.domain import peer_credit

    node = _open(home)
    rows = peer_credit.balances(node.store, node.node_id)
    table = Table("peer", "currency", "receivable", "payable", "in flight", "balance",
                  "credit limit", "threshold", title="peer balances (minor units)")
    for b in rows:
        table.add_row(b.peer, b.currency, f"{b.receivable_minor:,}", f"{b.payable_minor:,}",
                      f"{b.in_flight_minor:,}", f"{b.balance_minor:,}",
                      f"{b.credit_limit_minor:,}" if b.credit_limit_minor else "none",
                      f"{b.settle_threshold_minor:,}" if b.settle_threshold_minor else "-")
    _emit([b.to_dict() for b in rows], as_json, table)


# -- sync ----------------------------------------------------------------------------------------


@click.command()
@click.option("--peer", "peer_id", default=None, help="Only this peer (default: every peer).")
@click.option("--max-batches", type=int, default=0, help="Stop after this many batches.")
@_home_option
@_json_option
def sync(peer_id, max_batches, home, as_json) -> None:
    """Pull and import peers' signed record batches from where the last sync stopped."""
    from eap.node.federation.client import PeerClient
    from eap.node.federation.sync import Syncer

    node, trust = _trust(home)
    with PeerClient(node, trust=trust) as client:
        syncer = Syncer(node, client, trust=trust)
        if peer_id:
            trust.lookup(peer_id)
            results = [syncer.sync_peer(peer_id, max_batches=max_batches)]
        else:
            results = syncer.sync_all()
    table = Table("peer", "batches", "records", "Wh", "cursor", "error", title="sync")
    for r in results:
        table.add_row(r.peer, str(r.batches), f"{r.records:,}", f"{r.wh:,}", str(r.cursor),
                      str(r.error or ""))
    _emit([r.to_dict() for r in results], as_json, table)
    failed = [r.error for r in results if r.error is not None]
    if failed:
        first: EapError = failed[0]
        sys.exit(first.exit_code)


# -- audit ---------------------------------------------------------------------------------------


@click.command()
@click.option("--skip", "skip_peers", multiple=True, metavar="PEER",
              help="Leave this peer out (repeatable); its issuer's books then cannot close.")
@_home_option
@_json_option
def audit(skip_peers, home, as_json) -> None:
    """Check the federation's books: gather every node's signed holdings statement (through
    the protocol), verify them and reconcile every issuer (exit 5 when they do not close)."""
    from eap.node.errors import FailedPrecondition
    from eap.node.federation.audit import Auditor, report_dict
    from eap.node.federation.client import PeerClient

    node, trust = _trust(home)
    with PeerClient(node, trust=trust) as client:
        report = Auditor(node, client, trust).run(skip_peers=skip_peers)
    if as_json:
        _emit(report_dict(report), True)
    else:
        _print_audit(report)
    if not report.ok:
        sys.exit(FailedPrecondition.exit_code)


def _print_audit(report) -> None:
    from eap.node.cli import console

    table = Table("issuer", "issued Wh", "active", "retired", "in flight", "missing",
                  "conflicting", "books", title=f"audit by {report.auditor} at "
                  f"{_ms(report.at_ms)} UTC")
    for i in report.issuers:
        table.add_row(i.issuer, f"{i.issued_wh:,}", f"{i.active_wh:,}", f"{i.retired_wh:,}",
                      f"{i.in_flight_wh:,}", f"{i.missing_wh:,}", f"{i.conflicting_wh:,}",
                      styled("close", "green") if i.ok else styled("DO NOT CLOSE", "red"))
    console.print(table)
    stmts = Table("node", "statement (SHA-256)", "key", "verified", title="statements")
    for s in report.statements:
        stmts.add_row(s.node_id, s.digest[:16] or "-", s.key_id or "-",
                      "yes" if s.verified else styled("no:", "red", s.error))
    console.print(stmts)
    for line in report.problems:
        console.print(styled("problem:", "red", line), highlight=False)
    for i in report.issuers:
        for line in i.problems:
            console.print(styled(f"{i.issuer}:", "red", line), highlight=False)
    console.print(styled("the books close", "green") if report.ok
                  else styled("the books do NOT close", "red"))


def register(main: click.Group) -> None:
    """Add the federation commands to the ``eap-node`` group."""
    from eap.node.federation.settle_cli import settle

    for command in (certs, descriptor, peer, sync, audit, settle):
        main.add_command(command)
