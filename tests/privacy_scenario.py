"""A three-node federated day in this process over real gRPC (tests/inproc_fed.py), with every
federation message, export file, log line and TRANSPARENCY read captured: the ground truth of
tests/test_privacy_capture.py and tests/test_privacy_table.py (docs/privacy.md).

Nodes a (issuer), b (buyer, claims), c (only syncs and audits).  Private values are chosen
distinctive so that a search for them finds nothing by accident.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from inproc_fed import InProcFed
from privacy_api import aggregate_cells, api_reads
from sqlalchemy import select
from support import write_csv

from eap.node.domain import holder_auth, peer_credit, sybil
from eap.node.federation.audit import Auditor
from eap.node.records.enums import Purpose
from eap.node.records.models import Principal
from eap.node.store import schema as t

A, B, C = "a.example", "b.example", "c.example"
LAT, LON = 6.244203, -75.581215
METER = "MTR-PRIV-99172"
LABEL_A = "Alice Rooftop Cooperative"
LABEL_B, IDENTITY_B = "Bodega Barcelona Buyers", "bodega.buyers@example.org"
LOCAL_REF = "roof-alice-17"
EVIDENCE = "grid-connection-agreement GCA-58231"
BENEFICIARY = "Bodega Barcelona SL"
#: Four more rooftops of the cooperative (same building): with the first, five devices issue
#: in the first hour, the regulator's k (5) for that aggregate cell; later hours stay below k.
NEIGHBOUR_METERS = [f"MTR-PRIV-9918{i}" for i in range(4)]
#: An account that holds nothing: the public's view of claims (every caller sees every claim,
#: but only its holder and the operator get a claim's full SD receipt).
PUBLIC_READER = "acct_public_reader_without_holdings"


@dataclasses.dataclass
class Scenario:
    fed: InProcFed
    values: dict[str, Any]
    wire: list[tuple[str, str, bytes]]
    exports: dict[str, bytes]
    logs: list[str]
    reads: dict[str, dict[str, list[dict]]]  # purpose name -> entity -> dicts
    #: What operators see of entities without a read API: entity -> dicts (all nodes).
    operator_views: dict[str, list[dict]]
    secrets: dict[str, list[str]]
    #: Public-API reads and refusals (tests/privacy_api.py): raw outputs, views, codes.
    api: dict[str, Any] = dataclasses.field(default_factory=dict)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _pem_bodies(folder: Path) -> list[str]:
    out = []
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".key", ".pem"):
            text = path.read_text(errors="replace")
            if "PRIVATE KEY" in text:
                out += [ln for ln in text.splitlines() if ln and not ln.startswith("-----")]
    return out


def build(root: Path, monkeypatch) -> Scenario:
    handler = _Collect()
    logger = logging.getLogger()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        return _build(root, monkeypatch, handler)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _build(root: Path, monkeypatch, handler: _Collect) -> Scenario:
    f = InProcFed(root / "fed", [A, B, C], monkeypatch=monkeypatch)
    a, b, c = f[A], f[B], f[C]
    made_a = a.node.create_account(request_id="acct-alice", label=LABEL_A)
    made_b = b.node.create_account(
        request_id="acct-bodega", label=LABEL_B, identity=IDENTITY_B, disclose=True
    )
    acct_a, acct_b = made_a.account.id, made_b.account.id
    dev = a.node.register_device(
        request_id="dev-alice",
        local_ref=LOCAL_REF,
        capacity_w=4200,
        source="solar",
        technology="photovoltaic",
        commissioned_on="2021-03-04",
        latitude=LAT,
        longitude=LON,
        zone="CO-ANT",
        owner=acct_a,
        meter_id=METER,
        attestation_evidence=EVIDENCE,
    )
    for i, meter in enumerate(NEIGHBOUR_METERS):
        a.node.register_device(
            request_id=f"dev-neighbour-{i}",
            local_ref=f"{LOCAL_REF}-n{i}",
            capacity_w=3000,
            source="solar",
            technology="photovoltaic",
            commissioned_on="2022-05-06",
            latitude=LAT,
            longitude=LON,
            zone="CO-ANT",
            owner=acct_a,
            meter_id=meter,
            attestation_evidence=EVIDENCE,
        )
    t0 = dt.datetime(2026, 3, 1, 10)

    def hour(h: int) -> str:
        return (t0 + dt.timedelta(hours=h)).strftime("%Y-%m-%d %H:%M:%S")

    rows = [(hour(h), hour(h + 1), METER, 1500 + h) for h in range(4)]
    rows += [(hour(0), hour(1), m, 900 + i) for i, m in enumerate(NEIGHBOUR_METERS)]
    a.node.import_readings(write_csv(root / "readings.csv", rows), request_id="imp-alice")
    a.node.issue(request_id="iss-alice")
    bundles = [
        x for x in a.node.list_bundles(purpose=Purpose.OPERATIONS).items if x.device_id == dev.id
    ]
    # A holder-held key (docs/holder-keys.md): the wallet keeps the private half; the node
    # of the account (b) gets only the public key, and a bundle comes to it across nodes.
    holder_key_path, holder_pub = holder_auth.new_key_pair(root / "wallet")
    holder_priv = holder_auth.load_private_key(holder_key_path).private_bytes_raw()
    keyed = b.node.create_account(request_id="acct-keyed", holder_public_key=holder_pub)
    for peer in (B, C):
        peer_credit.set_limits(
            a.node.store,
            A,
            peer=peer,
            currency="EUR",
            credit_limit_minor=10**9,
            settle_threshold_minor=0,
        )
        peer_credit.set_limits(
            f[peer].node.store,
            peer,
            peer=A,
            currency="EUR",
            credit_limit_minor=10**9,
            settle_threshold_minor=0,
        )
    # A plain cross-node transfer and a priced one (an obligation to settle).
    a.runtime.transfers.send(bundles[0].id, to=f"{B}/{acct_b}", request_id="xfer-1", wait_s=10)
    a.runtime.transfers.send(
        bundles[1].id,
        to=f"{B}/{acct_b}",
        request_id="trade-1",
        wait_s=10,
        price_minor=1234,
        currency="EUR",
    )
    a.runtime.transfers.send(
        bundles[3].id, to=f"{B}/{keyed.account.id}", request_id="xfer-keyed", wait_s=10
    )
    held = b.node.list_bundles(purpose=Purpose.OPERATIONS, owner=acct_b).items
    claim = b.node.retire(
        held[0].id, beneficiary=BENEFICIARY, purpose="scope2 2026", request_id="claim-1"
    )
    # The retirement report to the issuer leaves through b's outbox: drive it until sent.
    deadline = time.monotonic() + 30
    while not any(rpc == "ReportRetirement" for rpc, _, _ in f.wire):
        assert time.monotonic() < deadline, "the retirement report was never sent"
        b.runtime.transfers.tick(force=True)
        time.sleep(0.05)
    for m in (b, c):
        m.runtime.syncer.sync_all()
    for m in f:  # the duplicate-device sweep (with the sync worker of `serve`)
        m.runtime.device_checker.sweep()
    audit = Auditor.from_engine(c.runtime.transfers).run()
    start = int(t0.replace(tzinfo=dt.UTC).timestamp())
    got_api = api_reads(
        a,
        b,
        acct_a=acct_a,
        token_a=made_a.token,
        acct_b=acct_b,
        token_b=made_b.token,
        claim_id=claim.id,
        zone="CO-ANT",
        start=start,
        end=start + 4 * 3600,
        cli=_cli(),
    )
    settlement = None
    try:
        settlement = a.runtime.transfers.settlement.run(request_id="settle-1")
    except Exception as exc:  # recorded, asserted by the tests that need it
        settlement = exc
    # Exports: descriptors, a bundle proof, the node identity, the audit report.
    exports: dict[str, bytes] = {}
    for path in (root / "fed" / "descriptors").glob("*.json"):
        exports[f"descriptor {path.name}"] = path.read_bytes()
    runner = CliRunner()
    for m, bundle in ((a, bundles[2].id), (b, held[0].id)):
        out = m.home / "proof.json"
        res = runner.invoke(_cli(), ["proof", bundle, "--out", str(out), "--home", str(m.home)])
        assert res.exit_code == 0, res.output
        exports[f"proof {m.node_id}"] = out.read_bytes()
        res = runner.invoke(_cli(), ["identity", "--json", "--home", str(m.home)])
        exports[f"identity {m.node_id}"] = res.output.encode()
    exports["audit report"] = str(audit).encode()
    exports.update({f"api {k}": v for k, v in got_api["raw"].items()})
    # Reads by purpose.
    reads: dict[str, dict[str, list[dict]]] = {}
    holders = {
        A: [Principal(kind="account", account_id=acct_a)],
        B: [
            Principal(kind="account", account_id=acct_b),
            Principal(kind="account", account_id=keyed.account.id),
        ],
    }
    public = Principal(kind="account", account_id=PUBLIC_READER)
    for purpose in (Purpose.TRANSPARENCY, Purpose.OPERATIONS, Purpose.HOLDINGS):
        got: dict[str, list[dict]] = {"device": [], "account": [], "bundle": [], "claim": []}
        for m in f:
            principals = holders.get(m.node_id, []) if purpose == Purpose.HOLDINGS else [None]
            for principal in principals:
                kw = {"purpose": purpose, "principal": principal}
                if purpose == Purpose.TRANSPARENCY:  # claims: as anyone, not as the operator
                    claims = m.node.list_claims(purpose=purpose, principal=public).items
                else:
                    claims = m.node.list_claims(**kw).items
                got["device"] += [d.to_dict() for d in m.node.list_devices(**kw).items]
                got["account"] += [x.to_dict() for x in m.node.list_accounts(**kw).items]
                got["bundle"] += [x.to_dict() for x in m.node.list_bundles(**kw).items]
                got["claim"] += [x.to_dict() for x in claims]
        reads[purpose.name] = got
    # The audit log: the holder's own rows (its account token), the operator's view of them.
    reads["HOLDINGS"]["audit"] = got_api["holder_audit"]
    # What the regulator token reads: the aggregates (every other read is refused).
    aggregate = aggregate_cells(got_api["aggregates_rpc"].get("cells", []))
    reads["REGULATION"] = {"regulator": [{"zone_aggregate": aggregate}]}
    operator_views: dict[str, list[dict]] = {
        "transfer": [],
        "reading": [],
        "settlement": [],
        "audit": got_api["operator_audit"],
        "regulator": [{"zone_aggregate": aggregate_cells(got_api["aggregates_cli"]["cells"])}],
    }
    for m in f:
        operator_views["transfer"] += [x.to_dict() for x in m.runtime.transfers.list()]
        with m.node.store.read() as conn:
            operator_views["reading"] += [
                dict(r._mapping) for r in conn.execute(select(t.readings)).all()
            ]
            operator_views["settlement"] += [
                {k: (v.hex() if isinstance(v, bytes) else v) for k, v in r._mapping.items()}
                for r in conn.execute(select(t.settlement_rounds)).all()
            ]
    values = {
        "device.id": dev.id,
        "device.local_ref": LOCAL_REF,
        "device.meter_id": METER,
        "device.latitude": LAT,
        "device.longitude": LON,
        "device.cell": dev.cell,
        "device.zone": dev.zone,
        "device.capacity_w": dev.capacity_w,
        "device.owner": acct_a,
        "device.attestation_ref": dev.attestation_ref,
        "device.attested_by": dev.attested_by,
        "account.id": acct_a,
        "account.label": LABEL_A,
        "account.identity": IDENTITY_B,
        "account.token": made_a.token,
        "account.balance_wh": a.node.list_accounts(purpose=Purpose.OPERATIONS).items[0].balance_wh,
        "bundle.id": bundles[0].id,
        "bundle.device_id": dev.id,
        "bundle.owner": acct_a,
        "bundle.zone": "CO-ANT",
        "bundle.cell": dev.cell,
        "bundle.serial_start": bundles[2].serial_start,
        "claim.id": claim.id,
        "claim.beneficiary": BENEFICIARY,
        "claim.purpose": "scope2 2026",
        "claim.signature": claim.signature,
        "reading.wh": 1500 + 3,
        "transfer.id": _transfer_ids(a)[0],
        "transfer.to_account": acct_b,
        "trade.price_minor": 1234,
        "settlement": settlement,
        "settlement.round_id": getattr(settlement, "round_id", None),
        "device.meter_tag": sybil.own_tag(a.node, METER),
        "audit": audit,
        "claim.sd_receipt": got_api["sd_receipt"],
        "account.holder_public_key": holder_pub,
        "account.holder_private_key": holder_priv,
        "audit.row_hash": _own_row(got_api["holder_audit"], acct_a)["row_hash"],
        "audit.principal": _own_row(got_api["holder_audit"], acct_a)["principal"],
        "regulator.zone_aggregate": aggregate,
        "presentation": got_api["presentation"],
        "h3_resolution": a.node.config.privacy.h3_resolution,
    }
    secrets = {
        "node secret": [m.node.config.node_secret().hex() for m in f],
        "api token": [m.node.config.api_token() for m in f],
        "account token": [made_a.token, made_b.token, keyed.token],
        "regulator token": [m.node.config.regulator_token() or "" for m in f],
        "private key": [ln for m in f for ln in _pem_bodies(m.home)]
        + _pem_bodies(root / "wallet")
        + [holder_priv.hex()],
    }
    return Scenario(
        f, values, f.wire, exports, handler.lines, reads, operator_views, secrets, got_api
    )


def _own_row(rows: list[dict], account: str) -> dict:
    """The audit row of ``account`` reading its own data (principal ``account:<id>``)."""
    return next(r for r in rows if r["principal"] == f"account:{account}")


def _transfer_ids(member) -> list[str]:
    return [t.id for t in member.runtime.transfers.list()]


def _cli():
    from eap.node.cli import main

    return main


def as_json(obj: Any) -> str:
    return json.dumps(obj, default=str, sort_keys=True)
