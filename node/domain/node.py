"""The node's operations: accounts, devices, readings, issuance, transfer, split, claim.

:class:`Node` is what the CLI and the gRPC API call.  Every mutation runs in one database
transaction under an idempotency key; every rule violation raises before anything changes.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pluggy
from sqlalchemy import Connection

from eap.node import kernels
from eap.node.config import PROTOCOL_VERSION, NodeConfig
from eap.node.crypto import KeyRing, account_id_from_public_key, device_pseudonym
from eap.node.crypto.tokens import bearer_token
from eap.node.domain import (
    aggregates,
    anchoring,
    audit_trail,
    cells,
    custody,
    device_rules,
    holder_auth,
    idempotency,
    ingest,
    issuance,
    ledger,
    listings,
    obligations,
    plugin_calls,
    receipts,
    sybil,
)
from eap.node.domain.holder_auth import HolderAuth
from eap.node.domain.ledger import now_ms
from eap.node.domain.policy import (
    redact_account,
    redact_bundle,
    redact_device,
    redacts_bundles,
    require_purpose,
    require_record_purpose,
)
from eap.node.domain.rules import (
    ACCOUNT_RE,
    BUNDLE_ID_RE,
    CLAIM_SEQ_RE,
    DEVICE_ID_RE,
    ZONE_RE,
    Checker,
)
from eap.node.domain.rules import page_token as check_page_token
from eap.node.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    invalid,
)
from eap.node.meters import MeterReadings
from eap.node.records.enums import Purpose, Source, Status, Technology
from eap.node.records.models import (
    Account,
    Bundle,
    ClaimReceipt,
    CreatedAccount,
    Device,
    ImportResult,
    IssueAllResult,
    IssueResult,
    NodeStatus,
    Page,
    Principal,
    TransferResult,
)
from eap.node.store import Store, open_store, repos
from eap.node.telemetry import ops as telemetry_ops
from eap.node.telemetry.ops import traced
from eap.plugins.manager import get_plugin_manager

MAX_PAGE = 1000
log = logging.getLogger(__name__)


def _import_attrs(r: ImportResult) -> dict:
    return {"readings": r.readings, "wh": r.wh, "unknown_meters": len(r.unknown_meters)}


def _import_metrics(metrics: Any, r: ImportResult, seconds: float) -> None:
    metrics.imported_readings.add(r.readings)
    metrics.import_duration.record(seconds)



class Node:
    """One EAP node over its home (config, keys) and store."""

    def __init__(
        self,
        config: NodeConfig,
        store: Store,
        keyring: KeyRing,
        plugins: pluggy.PluginManager | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.keys = keyring
        self.node_id = config.node_id
        self.plugins = plugins or get_plugin_manager()
        #: Checks a new meter against peer nodes (:mod:`eap.node.domain.sybil`); installed by
        #: the federation runtime, None on a node that does not federate.
        self.meter_guard: sybil.MeterGuard | None = None

    # -- lifecycle of the node itself -----------------------------------------------------------

    @classmethod
    def open(cls, home: Path, *, migrate: bool = True) -> Node:
        config = NodeConfig.load(home)
        store = open_store(config.database, migrate=migrate)
        node = cls(config, store, KeyRing.load(config.keys_dir))
        node._check_identity()
        return node

    @classmethod
    def initialise(cls, config: NodeConfig, plugins: pluggy.PluginManager | None = None) -> Node:
        """Create keys and database of a freshly written home."""
        keyring = KeyRing.create(config.keys_dir)
        store = open_store(config.database)
        with store.transaction() as conn:
            existing = repos.get_meta(conn)
            if existing.get("node_id") not in (None, config.node_id):
                raise AlreadyExists(f"database {store.url} belongs to node {existing['node_id']!r}")
            repos.put_meta(
                conn,
                {
                    "node_id": config.node_id,
                    "zone": config.zone,
                    "protocol_version": PROTOCOL_VERSION,
                },
            )
        return cls(config, store, keyring, plugins)

    def _check_identity(self) -> None:
        with self.store.read() as conn:
            stored = repos.get_meta(conn).get("node_id")
        if stored != self.node_id:
            raise FailedPrecondition(
                f"database {self.store.url} belongs to {stored!r}, not {self.node_id!r}"
            )

    def close(self) -> None:
        self.store.dispose()
        if getattr(self, "_telemetry", None) is not None:
            self._telemetry.shutdown()  # flush spans, stop /metrics

    def status(self) -> NodeStatus:
        with self.store.read() as conn:
            tot = repos.totals(conn)
        return NodeStatus(
            node_id=self.node_id,
            zone=self.config.zone,
            protocol_version=PROTOCOL_VERSION,
            key_id=self.keys.active_key_id,
            devices=tot["devices"],
            accounts=tot["accounts"],
            readings=tot["readings"],
            bundles_active=tot["bundles_active"],
            wh_metered=tot["wh_metered"],
            wh_issued=tot["wh_issued"],
            wh_active=min(tot.get("wh_active", 0) + tot.get("wh_export_pending", 0), 2**63 - 1),
            wh_retired=tot.get("wh_retired", 0),
            wh_exported=tot.get("wh_exported", 0),
            wh_imported=tot.get("wh_imported", 0),
            core_backend=kernels.backend,
            database=self.store.dialect,
        )

    # -- accounts -------------------------------------------------------------------------------

    def create_account(
        self,
        *,
        request_id: str,
        label: str = "",
        identity: str = "",
        disclose: bool = False,
        holder_public_key: bytes | None = None,
        principal: Principal | None = None,
    ) -> CreatedAccount:
        """A new account; with ``holder_public_key`` a holder-signed one (its bundles move
        only with the holder's signature, :mod:`~eap.node.domain.holder_auth`)."""
        principal = principal or Principal.operator()
        self._operator_only(principal, "create accounts")
        holder_key = holder_auth.check_public_key(holder_public_key)
        check = Checker()
        check.text(label, "label", min_len=0, max_len=128)
        check.text(identity, "identity", min_len=0, max_len=256)
        check.require(
            not (identity and not disclose),
            "identity",
            "a real identity is only stored when its holder opts in (disclose)",
        )
        check.done()
        token = bearer_token()
        # A random key names the account, never the holder's key: ids of one holder's accounts
        # stay unlinkable, here and across nodes, and the holder key never leaves the node.
        pub = secrets.token_bytes(32)

        def op(conn: Connection) -> CreatedAccount:
            acct = Account(
                id=account_id_from_public_key(pub),
                label=label,
                identity=identity or None,
                disclosed=disclose,
                created_at_ms=now_ms(),
                holder_public_key=holder_key,
            )
            repos.insert_account(conn, acct, _token_hash(token))
            return CreatedAccount(acct, token)

        return idempotency.run(
            self.store,
            request_id=request_id,
            operation="create_account",
            principal=principal,
            payload={
                "label": label,
                "identity": identity,
                "disclose": disclose,
                **({"holder_key": holder_key.hex()} if holder_key else {}),
            },
            result_type=CreatedAccount,
            fn=op,
            replay=lambda first: CreatedAccount(first.account, ""),
        )

    def principal_for_token(self, token: str) -> Principal | None:
        """Authenticate a bearer token: the operator's, or an account's."""
        if secrets.compare_digest(token, self.config.api_token()):
            return Principal.operator()
        regulator = self.config.regulator_token()
        if regulator and secrets.compare_digest(token, regulator):
            return Principal("regulator")
        with self.store.read() as conn:
            account = repos.account_by_token(conn, _token_hash(token))
        return Principal("account", account) if account else None

    def list_accounts(
        self,
        *,
        purpose: Purpose,
        principal: Principal | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> Page:
        principal = principal or Principal.operator()
        require_record_purpose(purpose, principal)
        page_token = check_page_token(page_token, ACCOUNT_RE)
        with self.store.transaction() as conn:
            if principal.kind == "account":
                own = repos.get_account(conn, principal.account_id or "")
                items = [own] if own and not page_token else []
            else:
                items = repos.list_accounts(conn, page_token, _page(page_size))
            self._audit(conn, principal, purpose, "accounts", items)
        return _paged([redact_account(a, purpose) for a in items], page_size, lambda a: a.id)

    # -- devices --------------------------------------------------------------------------------

    def register_device(
        self,
        *,
        request_id: str,
        local_ref: str,
        capacity_w: int,
        source: str | int,
        technology: str | int,
        commissioned_on: str,
        latitude: float,
        longitude: float,
        zone: str,
        owner: str,
        meter_id: str,
        renewable_ppm: int | None = None,
        carbon_mg: int = 0,
        attestation_scheme: str = "operator-signed",
        attestation_evidence: str = "",
        principal: Principal | None = None,
    ) -> Device:
        principal = principal or Principal.operator()
        self._operator_only(principal, "register devices")
        check = Checker("invalid device")
        payload = device_rules.check_device(
            check,
            dict(
                local_ref=local_ref,
                capacity_w=capacity_w,
                source=source,
                technology=technology,
                commissioned_on=commissioned_on,
                latitude=latitude,
                longitude=longitude,
                zone=zone,
                owner=owner,
                meter_id=meter_id,
                renewable_ppm=renewable_ppm,
                carbon_mg=carbon_mg,
                attestation_scheme=attestation_scheme,
                attestation_evidence=attestation_evidence,
            ),
        )
        check.done()
        assert payload is not None
        src, tech = Source(payload["source"]), Technology(payload["technology"])
        renewable_ppm = payload["renewable_ppm"]

        # Plugins judge the device before anything is written: a violation, a raise or a
        # timeout refuses the registration with nothing changed.
        timeout_s = plugin_calls.timeout_of(self)
        plugin_calls.violations(
            self.plugins,
            "eap_validate_device",
            {"device": dict(payload), "config": dict(self.config.extra)},
            timeout_s,
            "device refused by a validation policy",
        )
        attested = plugin_calls.call_first(
            self.plugins,
            "eap_attest_device",
            {
                "device": dict(payload),
                "scheme": attestation_scheme,
                "evidence": attestation_evidence,
                "settings": self._attestation_settings(),
            },
            timeout_s,
        )
        if attested is None:
            raise invalid("attestation.scheme", f"no plugin accepts scheme {attestation_scheme!r}")
        attested = attested[1]
        # Duplicate meter at a peer node (Sybil): refused here, before anything is written.
        peer_tags = sybil.precheck(self, meter_id=meter_id, local_ref=local_ref)

        def op(conn: Connection) -> Device:
            if repos.get_account(conn, owner) is None:
                raise NotFound(f"no account {owner}", [_fv("device.owner", "unknown account")])
            taken = repos.device_conflicts(conn, local_ref, meter_id)
            if taken:
                raise AlreadyExists(
                    "device already registered", [_fv(f, "already registered") for f in taken]
                )
            dev = Device(
                id=device_pseudonym(self.config.node_secret(), local_ref),
                local_ref=local_ref,
                capacity_w=capacity_w,
                source=int(src),
                technology=int(tech),
                commissioned_on=commissioned_on,
                latitude=float(latitude),
                longitude=float(longitude),
                zone=zone,
                cell=cells.public_cell(latitude, longitude, self.config.privacy.h3_resolution),
                owner=owner,
                meter_id=meter_id,
                renewable_ppm=renewable_ppm,
                carbon_mg=carbon_mg,
                attested_by=attestation_scheme,
                attestation_ref=str(attested["ref"])[:256],
                registered_at_ms=now_ms(),
            )
            repos.insert_device(conn, dev)
            sybil.record_registration(conn, self, dev.id, meter_id, peer_tags)
            return dev

        return idempotency.run(
            self.store,
            request_id=request_id,
            operation="register_device",
            principal=principal,
            payload=payload,
            result_type=Device,
            fn=op,
        )

    def register_devices(
        self, rows: list[dict[str, Any]], *, request_id: str, principal: Principal | None = None
    ):
        """Register many devices, all or nothing (:mod:`~eap.node.domain.device_import`)."""
        from eap.node.domain import device_import

        return device_import.register_devices(
            self, rows, request_id=request_id, principal=principal
        )

    def import_devices(self, path: Path, *, request_id: str, fmt: str = ""):
        """``register_devices`` over a CSV or JSON Lines file (``eap-node device import``)."""
        from eap.node.domain import device_import

        return self.register_devices(
            device_import.read_rows(Path(path), fmt), request_id=request_id
        )

    def _attestation_settings(self) -> dict[str, Any]:
        """``[attestation]`` of the config, with ``home`` so plugins can resolve paths."""
        table = dict(self.config.extra.get("attestation", {}) or {})
        table["home"] = str(self.config.home)
        return table

    def list_devices(
        self,
        *,
        purpose: Purpose,
        principal: Principal | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> Page:
        principal = principal or Principal.operator()
        require_record_purpose(purpose, principal)
        page_token = check_page_token(page_token, DEVICE_ID_RE)
        with self.store.transaction() as conn:
            items = repos.list_devices(conn, page_token, _page(page_size))
            # The next page starts after the last device read, not the last one shown.
            nxt = items[-1].id if len(items) == _page(page_size) else ""
            if principal.kind == "account":
                items = [d for d in items if d.owner == principal.account_id]
            self._audit(conn, principal, purpose, "devices", items)
        return Page([redact_device(d, purpose) for d in items], nxt)

    def stream_devices(self, **filters: Any):
        """Every device (``list_devices`` filters), page after page: constant memory."""
        return listings.walk(functools.partial(self.list_devices, **filters))

    def stream_accounts(self, **filters: Any):
        """Every account (``list_accounts`` filters), page after page: constant memory."""
        return listings.walk(functools.partial(self.list_accounts, **filters))

    def stream_bundles(self, **filters: Any):
        """Every bundle (``list_bundles`` filters) in serial order: constant memory."""
        return listings.walk(functools.partial(self.list_bundles, **filters))

    def stream_bundle_lines(
        self,
        *,
        purpose: Purpose,
        principal: Principal | None = None,
        owner: str = "",
        status: int = 0,
        device: str = "",
        limit: int = 0,
    ) -> Iterator[str]:
        """The bundles ``stream_bundles`` gives with these filters (at most ``limit``, 0 =
        all), as the JSON Lines the CLI prints for them (``eap-node bundles --json``), a page
        of newline-terminated lines per string, rendered by the database; same purpose checks
        and fields as ``list_bundles``.  Constant memory."""
        owner = self._bundle_owner(purpose, principal, owner)
        if redacts_bundles(purpose):  # lines from the records the purpose may see
            items = self.stream_bundles(
                purpose=purpose, principal=principal, owner=owner, status=status, device=device
            )
            if limit > 0:
                items = itertools.islice(items, limit)
            items = iter(items)
            while chunk := list(itertools.islice(items, listings.STREAM_PAGE)):
                yield "".join(listings.bundle_line(b) + "\n" for b in chunk)
            return
        if device:
            with self.store.read() as conn:
                device = self._device_id(conn, device)
        yield from listings.walk_bundle_lines(
            self.store,
            owner=owner or None,
            status=status or None,
            device=device or None,
            limit=max(limit, 0),
        )

    def stream_claims(self, **filters: Any):
        """Every claim receipt (``list_claims`` filters) in claim order: constant memory."""
        return listings.walk(functools.partial(self.list_claims, **filters))

    # -- meter readings -------------------------------------------------------------------------

    @traced("eap.import", _import_attrs, _import_metrics)
    def import_readings(
        self,
        path: Path,
        *,
        request_id: str,
        fmt: str = "",
        principal: Principal | None = None,
        progress: ingest.Progress | None = None,
    ) -> ImportResult:
        """Import production readings from a meter-data file, streamed in chunks into one
        transaction (:mod:`eap.node.domain.ingest`)."""
        return ingest.import_file(
            self, path, request_id=request_id, fmt=fmt, principal=principal, progress=progress
        )

    @traced("eap.import", _import_attrs, _import_metrics)
    def import_pulled_readings(
        self,
        readings: MeterReadings,
        *,
        request_id: str,
        payload: dict,
        principal: Principal | None = None,
    ) -> ImportResult:
        """Import readings a plugin pulled from a utility API (``eap-node meter pull``): the same
        checks and storage as a file import; ``payload`` names the pull for idempotency."""
        return ingest.import_readings(
            self, readings, request_id=request_id, payload=payload, principal=principal
        )

    def import_readings_bytes(
        self,
        content: bytes,
        *,
        filename: str,
        request_id: str,
        fmt: str = "",
        principal: Principal | None = None,
    ) -> ImportResult:
        suffix = Path(filename or "readings").suffix or ".dat"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(content)
            try:
                return self.import_readings(
                    path, request_id=request_id, fmt=fmt, principal=principal
                )
            except InvalidArgument as exc:  # never show the server's temporary path
                raise _hide_path(exc, str(path), filename or "content") from None

    # -- issuance -------------------------------------------------------------------------------

    @traced("eap.issue", lambda r: {"bundles": r.bundles, "wh": r.wh, "batch_seq": r.batch_seq})
    def issue(
        self,
        *,
        request_id: str,
        device: str = "",
        since: int = 0,
        principal: Principal | None = None,
    ) -> IssueResult:
        """Issue one signed batch of at most ``[limits] max_batch_records`` pending readings
        (the ``IssueRecords`` RPC; see :mod:`eap.node.domain.issuance`)."""
        return issuance.issue_one(
            self, request_id=request_id, device=device, since=since, principal=principal
        )

    def issue_all(
        self,
        *,
        request_id: str,
        device: str = "",
        since: int = 0,
        batch_size: int | None = None,
        principal: Principal | None = None,
        progress: issuance.Progress | None = None,
    ) -> IssueAllResult:
        """Issue every pending reading in signed batches, each its own transaction
        (``eap-node issue``; see :mod:`eap.node.domain.issuance`)."""
        return issuance.issue_all(
            self,
            request_id=request_id,
            device=device,
            since=since,
            batch_size=batch_size,
            principal=principal,
            progress=progress,
        )

    def _anchor(self) -> None:
        """Drain the anchor queue after an issuance; an anchoring plugin that is down only
        leaves its batches queued (:mod:`eap.node.domain.anchoring`)."""
        try:
            anchoring.drain(self)
        except Exception:
            log.exception("draining the anchor queue failed; batches stay queued")

    def record_event(self, kind: str, request_id: str, **fields: Any) -> None:
        """Tell ``eap_record_event`` plugins that a committed operation changed records.

        Called after the commit; plugin failures are logged and never reach the caller.
        """
        telemetry_ops.on_event(self, kind, fields)
        event = {
            "type": kind,
            "node_id": self.node_id,
            "at_ms": now_ms(),
            "request_id": request_id,
            **fields,
        }
        try:
            plugin_calls.notify(
                self.plugins, "eap_record_event", {"event": event}, plugin_calls.timeout_of(self)
            )
        except Exception:
            log.exception("delivering the %s event failed", kind)

    def meter_sources(self, fmt: str = "") -> list:
        """Meter-data readers from the plugins (plugins first), optionally one format only."""
        sources = [s for found in self.plugins.hook.eap_meter_sources() for s in found]
        if not fmt:
            return sources
        chosen = [s for s in sources if s.name == fmt or s.name.split("-")[0] == fmt]
        if not chosen:
            names = ", ".join(s.name for s in sources)
            raise invalid("format", f"unknown meter data format {fmt!r}; one of: {names}")
        return chosen

    # -- bundles --------------------------------------------------------------------------------

    def get_bundle(
        self,
        bundle_ref: str,
        *,
        purpose: Purpose = Purpose.OPERATIONS,
        principal: Principal | None = None,
    ) -> Bundle:
        principal = principal or Principal.operator()
        require_record_purpose(purpose, principal)
        with self.store.read() as conn:
            found = repos.get_bundle(conn, bundle_ref)
        if found is None:
            raise NotFound(f"no bundle {bundle_ref}", [_fv("bundle_id", "unknown bundle")])
        bundle = found[0]
        if purpose == Purpose.HOLDINGS and not principal.may_act_for(bundle.owner):
            raise PermissionDenied("not your bundle")
        return redact_bundle(bundle, purpose)

    def list_bundles(
        self,
        *,
        purpose: Purpose,
        principal: Principal | None = None,
        owner: str = "",
        status: int = 0,
        device: str = "",
        page_size: int = 100,
        page_token: str = "",
    ) -> Page:
        owner = self._bundle_owner(purpose, principal, owner)
        page_token = check_page_token(page_token, BUNDLE_ID_RE)
        with self.store.read() as conn:
            if device:
                device = self._device_id(conn, device)
            items = repos.list_bundles(
                conn,
                owner=owner or None,
                status=status or None,
                device=device or None,
                after=page_token,
                limit=_page(page_size),
            )
        return _paged([redact_bundle(b, purpose) for b in items], page_size, lambda b: b.id)

    @staticmethod
    def _bundle_owner(purpose: Purpose, principal: Principal | None, owner: str) -> str:
        """The owner filter of a bundle listing by ``principal`` for ``purpose`` (checked):
        an account holder reading HOLDINGS lists only its own."""
        principal = principal or Principal.operator()
        require_record_purpose(purpose, principal)
        if purpose == Purpose.HOLDINGS:
            owner = principal.account_id or owner
        return owner

    @staticmethod
    def _device_id(conn: Connection, device: str) -> str:
        """A device filter given by id or local ref, as the device id."""
        dev = repos.get_device(conn, device)
        return dev.id if dev else device

    @traced(
        "eap.transfer",
        lambda r: {"scope": "local", "wh": r.transferred.wh, "split": r.remainder is not None},
    )
    def transfer(
        self,
        bundle_ref: str,
        *,
        to_account: str,
        wh: int = 0,
        request_id: str,
        principal: Principal | None = None,
        price_minor: int = 0,
        currency: str = "",
        holder: HolderAuth | None = None,
    ) -> TransferResult:
        """Move a bundle, or ``wh`` of it (a split), to another account on this node.

        With ``price_minor`` (integer minor units of ``currency``) the transfer is a trade: the
        receiver owes the sender that amount, recorded as an obligation in the same
        transaction and netted per period (:mod:`eap.node.domain.settlement`).

        Bundles of a holder-signed account also need ``holder``, the holder's signature over
        this request (:func:`~eap.node.domain.holder_auth.require`).
        """
        principal = principal or Principal.operator()
        check = Checker()
        check.text(to_account, "to_account", max_len=64, pattern=ACCOUNT_RE, hint="an acct_ id")
        check.int_range(wh, "wh", 0, 2**62, "Wh")
        if price_minor or currency:
            obligations.check_price(check, price_minor, currency)
        check.done()

        sellers: list[str] = []

        def op(conn: Connection) -> TransferResult:
            bundle, version = ledger.spendable(conn, bundle_ref, principal, wh)
            sellers.append(bundle.owner)
            holder_auth.require(conn, holder_auth.Intent(
                node_id=self.node_id, account=bundle.owner, operation=holder_auth.TRANSFER,
                moves=((bundle.id, wh),), destination=to_account, price_minor=price_minor,
                currency=currency, request_id=request_id,
                expires_at_ms=holder.expires_at_ms if holder else 0), holder)
            if repos.get_account(conn, to_account) is None:
                raise NotFound(f"no account {to_account}", [_fv("to_account", "unknown account")])
            if to_account == bundle.owner:
                raise invalid("to_account", "already owns the bundle")
            amount = wh or bundle.wh
            if amount == bundle.wh:
                if not repos.set_bundle_state(
                    conn, bundle.id, version, expect_status=Status.ACTIVE, owner=to_account
                ):
                    raise Aborted(f"bundle {bundle.id} changed concurrently; retry")
                ledger.journal(
                    conn, "transfer", bundle.id, bundle.owner, to_account, amount, request_id
                )
                bundle.owner = to_account
                return TransferResult(bundle)
            moved, rest = ledger.split(conn, bundle, version, amount, to_account, Status.ACTIVE)
            ledger.journal(conn, "transfer", moved.id, bundle.owner, to_account, amount, request_id)
            return TransferResult(moved, rest)

        def trade(conn: Connection) -> TransferResult:
            result = op(conn)
            fresh.append(result)
            if price_minor:
                n = repos.bump(conn, "trades") + 1
                repos.insert_obligation(
                    conn,
                    obligation_id=obligations.local_id(self.node_id, n),
                    period=_period(now_ms()),
                    payer=to_account,
                    payee=sellers[-1],
                    amount_minor=price_minor,
                    currency=currency,
                    bundle_id=result.transferred.id,
                    wh=result.transferred.wh,
                    request_id=request_id,
                    created_at_ms=now_ms(),
                )
            return result

        fresh: list[TransferResult] = []
        payload = {"bundle": bundle_ref, "to": to_account, "wh": wh}
        if price_minor:
            payload["price"] = [price_minor, currency]
        result = idempotency.run(
            self.store,
            request_id=request_id,
            operation="transfer",
            principal=principal,
            payload=payload,
            result_type=TransferResult,
            fn=trade,
        )
        if fresh:
            self.record_event(
                "transferred",
                request_id,
                bundle=result.transferred.id,
                wh=result.transferred.wh,
                from_account=sellers[-1],
                to_account=to_account,
                remainder=result.remainder.id if result.remainder else None,
            )
        return result

    @traced("eap.retire", lambda r: {"wh": r.bundle.wh})
    def retire(
        self,
        bundle_ref: str,
        *,
        beneficiary: str,
        purpose: str,
        wh: int = 0,
        consumption_start: int = 0,
        consumption_end: int = 0,
        consumption_zone: str = "",
        request_id: str,
        principal: Principal | None = None,
        holder: HolderAuth | None = None,
    ) -> ClaimReceipt:
        """Claim a bundle (or ``wh`` of it) for consumption, irreversibly; signed receipt.

        Bundles of a holder-signed account also need ``holder``, the holder's signature.
        """
        principal = principal or Principal.operator()
        check = Checker()
        check.text(beneficiary, "beneficiary", max_len=256)
        check.text(purpose, "purpose", max_len=128)
        check.int_range(wh, "wh", 0, 2**62, "Wh")
        if consumption_start or consumption_end:
            check.interval(consumption_start, consumption_end, "consumption")
        if consumption_zone:
            check.text(consumption_zone, "consumption_zone", max_len=32, pattern=ZONE_RE)
        check.done()

        def op(conn: Connection) -> ClaimReceipt:
            bundle, version = ledger.spendable(conn, bundle_ref, principal, wh)
            holder_auth.require(conn, holder_auth.Intent(
                node_id=self.node_id, account=bundle.owner, operation=holder_auth.RETIRE,
                moves=((bundle.id, wh),), beneficiary=beneficiary, purpose=purpose,
                consumption_start=consumption_start, consumption_end=consumption_end,
                consumption_zone=consumption_zone, request_id=request_id,
                expires_at_ms=holder.expires_at_ms if holder else 0), holder)
            c_start = consumption_start or bundle.interval_start
            c_end = consumption_end or bundle.interval_end
            if not (c_start < bundle.interval_end and c_end > bundle.interval_start):
                raise invalid("consumption", "must overlap the hour the energy was generated in")
            amount = wh or bundle.wh
            if amount == bundle.wh:
                if not repos.set_bundle_state(
                    conn,
                    bundle.id,
                    version,
                    expect_status=Status.ACTIVE,
                    status=int(Status.RETIRED),
                ):
                    raise Aborted(f"bundle {bundle.id} changed concurrently; retry")
                bundle.status = int(Status.RETIRED)
                claimed = bundle
            else:
                claimed, _ = ledger.split(
                    conn, bundle, version, amount, bundle.owner, Status.RETIRED
                )
            seq = repos.bump(conn, "claim") + 1
            receipt = self._receipt(
                seq, claimed, beneficiary, purpose, c_start, c_end, consumption_zone or bundle.zone
            )
            # A holder-signed account's key binds the receipt (cnf): only the holder presents.
            receipt.sd_receipt = receipts.for_claim(
                conn, self, receipt, holder_key=holder_auth.holder_key(conn, bundle.owner)
            )
            repos.insert_claim(conn, seq, receipt)
            ledger.journal(conn, "retire", claimed.id, bundle.owner, None, amount, request_id)
            if claimed.issuer != self.node_id:
                custody.report_retirement(conn, receipt.id, claimed, receipt.claimed_at_ms)
            fresh.append(receipt)
            return receipt

        fresh: list[ClaimReceipt] = []
        receipt = idempotency.run(
            self.store,
            request_id=request_id,
            operation="retire",
            principal=principal,
            payload={
                "bundle": bundle_ref,
                "wh": wh,
                "beneficiary": beneficiary,
                "purpose": purpose,
                "consumption": [consumption_start, consumption_end],
                "zone": consumption_zone,
            },
            result_type=ClaimReceipt,
            fn=op,
        )
        if fresh:
            self.record_event(
                "retired",
                request_id,
                claim=receipt.id,
                bundle=receipt.bundle.id,
                wh=receipt.bundle.wh,
                purpose=purpose,
            )
        return receipt

    def list_claims(
        self,
        *,
        purpose: Purpose,
        principal: Principal | None = None,
        beneficiary: str = "",
        page_size: int = 100,
        page_token: str = "",
    ) -> Page:
        principal = principal or Principal.operator()
        require_record_purpose(purpose, principal)
        after = int(check_page_token(page_token, CLAIM_SEQ_RE) or 0)
        with self.store.read() as conn:
            rows = repos.list_claims(conn, beneficiary or None, after, _page(page_size))
            items = [
                (s, c)
                for s, c in rows
                if purpose != Purpose.HOLDINGS or principal.may_act_for(c.bundle.owner)
            ]
            self._audit(conn, principal, purpose, "claims", [c for _, c in items])
        for _, c in items:
            if purpose == Purpose.TRANSPARENCY or not principal.may_act_for(c.bundle.owner):
                # The salts are the holder's: showing them shows everything.  Public reads
                # never carry them, not even the operator's (a public explorer runs on those).
                c.sd_receipt = ""
            c.bundle = redact_bundle(c.bundle, purpose)
        nxt = str(rows[-1][0]) if len(rows) == _page(page_size) else ""
        return Page([c for _, c in items], nxt)

    # -- helpers --------------------------------------------------------------------------------

    def _receipt(
        self,
        seq: int,
        bundle: Bundle,
        beneficiary: str,
        purpose: str,
        start: int,
        end: int,
        zone: str,
    ) -> ClaimReceipt:
        claim_id = f"{self.node_id}/claim/{seq}"
        at = now_ms()
        body = {
            "id": claim_id,
            "bundle": bundle.id,
            "lineage": bundle.lineage_hash,
            "wh": bundle.wh,
            "beneficiary": beneficiary,
            "purpose": purpose,
            "consumption": [start, end],
            "zone": zone,
            "claimed_at_ms": at,
            "generation": [bundle.interval_start, bundle.interval_end],
            "source": bundle.source,
            "carbon_mg": bundle.carbon_mg,
        }
        digest = hashlib.sha256(
            b"EAP-CLAIM-v1\x00" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        ).digest()
        key_id, sig = self.keys.sign(digest)
        return ClaimReceipt(
            id=claim_id,
            bundle=bundle,
            beneficiary=beneficiary,
            purpose=purpose,
            consumption_start=start,
            consumption_end=end,
            consumption_zone=zone,
            claimed_at_ms=at,
            digest=digest,
            signature=sig,
            key_id=key_id,
        )

    @staticmethod
    def _operator_only(principal: Principal, what: str) -> None:
        if principal.kind != "operator":
            raise PermissionDenied(f"only the node operator may {what}")

    def _audit(
        self,
        conn,
        principal: Principal,
        purpose: Purpose,
        what: str,
        items: list[Any],
        subjects: list[str] | None = None,
    ) -> None:
        """Chain an audit row for a read that disclosed personal fields (:mod:`audit_trail`)."""
        audit_trail.record(
            conn,
            self.keys,
            self.node_id,
            at_ms=now_ms(),
            principal=principal,
            purpose=purpose,
            what=what,
            items=items,
            subjects=subjects,
        )

    def audit_read(
        self, conn, principal: Principal, what: str, items: list[Any], subjects: list[str]
    ) -> None:
        """Audit a read made outside this class (e.g. a matching report) of ``subjects``' data:
        purpose OPERATIONS for the operator, HOLDINGS for an account reading its own."""
        purpose = Purpose.OPERATIONS if principal.kind == "operator" else Purpose.HOLDINGS
        self._audit(conn, principal, purpose, what, items, subjects)

    def audit_entries(
        self,
        *,
        account: str = "",
        principal: Principal | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> Page:
        """Who read ``account``'s personal data, and why; the operator's look is audited too."""
        principal = principal or Principal.operator()
        with self.store.transaction() as conn:
            account, items = audit_trail.entries_for(
                conn, account, principal, after=after, limit=_page(limit)
            )
            if principal.kind == "operator":
                self._audit(conn, principal, Purpose.OPERATIONS, "audit_log", items, [account])
        return _paged(items, limit, lambda e: str(e.seq))

    def aggregates(
        self,
        *,
        zone: str,
        start: int,
        end: int,
        k: int = 0,
        epsilon: float = 0.0,
        bound_wh: int = 0,
        purpose: Purpose = Purpose.REGULATION,
        principal: Principal | None = None,
    ):
        """Regulator aggregates of a zone (:mod:`eap.node.domain.aggregates`)."""
        principal = principal or Principal.operator()
        if require_purpose(purpose, principal) != Purpose.REGULATION:
            raise invalid("purpose", "aggregates are read with the REGULATION purpose")
        return aggregates.compute(
            self.store,
            self.node_id,
            zone=zone,
            start=start,
            end=end,
            k=k,
            k_min=self.config.privacy.k_anonymity,
            epsilon=epsilon,
            bound_wh=bound_wh or aggregates.DEFAULT_BOUND_WH,
        )

    def verify_audit_log(self, expect: tuple[int, str] | None = None):
        """Recompute the audit chain and check its signed head (:func:`audit_trail.verify`)."""
        return audit_trail.verify(self.store, self.keys, self.node_id, expect=expect)


def _period(at_ms: int) -> str:
    """Settlement period of an event: its UTC day."""
    return time.strftime("%Y-%m-%d", time.gmtime(at_ms / 1000))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _hide_path(exc: InvalidArgument, path: str, shown: str) -> InvalidArgument:
    from eap.node.errors import FieldViolation

    exc.violations = [
        FieldViolation(v.field, v.description.replace(path, shown)) for v in exc.violations
    ]
    return exc


def _fv(field: str, description: str):
    from eap.node.errors import FieldViolation

    return FieldViolation(field, description)


def _page(size: int) -> int:
    if size <= 0:
        return 100
    return min(size, MAX_PAGE)


def _paged(items: list, size: int, key) -> Page:
    nxt = key(items[-1]) if items and len(items) == _page(size) else ""
    return Page(items, nxt)
