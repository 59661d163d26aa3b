"""Domain objects returned by :class:`~eap.node.domain.node.Node` (plain dataclasses).

They serialise to JSON-able dicts (``to_dict``/``from_dict``) so that the first result of an
idempotent request can be stored and replayed exactly, and so the CLI can print ``--json``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Self


class Serialisable:
    """Mixin: ``to_dict`` / ``from_dict`` over (nested) dataclasses; bytes as hex."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[f.name] = _dump(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in data:
                kwargs[f.name] = _load(hints[f.name], data[f.name])
        return cls(**kwargs)


def _dump(value: Any) -> Any:
    if isinstance(value, Serialisable):
        return value.to_dict()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return value


def _load(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)]
        return _load(inner[0], value) if inner else value
    if origin is list:
        return [_load(args[0], v) for v in value]
    if isinstance(hint, type) and issubclass(hint, Serialisable):
        return hint.from_dict(value)
    if hint is bytes:
        return bytes.fromhex(value)
    return value


@dataclass
class Account(Serialisable):
    id: str
    label: str = ""
    identity: str | None = None
    disclosed: bool = False
    balance_wh: int = 0
    created_at_ms: int = 0
    #: Raw Ed25519 public key of the holder: moves of this account's bundles need the holder's
    #: signature (:mod:`eap.node.domain.holder_auth`; verify holder-signed statements with
    #: ``holder_auth.verify``).  None = a custodial account.  Never leaves the node.
    holder_public_key: bytes | None = None


@dataclass
class CreatedAccount(Serialisable):
    account: Account
    #: Bearer token, present only in the response to the creating call.
    token: str = ""


@dataclass
class Device(Serialisable):
    id: str
    local_ref: str
    capacity_w: int
    source: int
    technology: int
    commissioned_on: str
    latitude: float | None
    longitude: float | None
    zone: str
    cell: str
    owner: str
    meter_id: str | None
    renewable_ppm: int
    carbon_mg: int
    attested_by: str
    attestation_ref: str
    registered_at_ms: int


@dataclass
class Bundle(Serialisable):
    id: str
    issuer: str
    serial_start: int
    serial_end: int
    device_id: str
    interval_start: int
    interval_end: int
    source: int
    technology: int
    renewable_ppm: int
    carbon_mg: int
    zone: str
    cell: str
    owner: str
    status: int
    parent_id: str | None
    lineage_hash: str
    issued_at_ms: int
    held_by: str | None = None

    @property
    def wh(self) -> int:
        return self.serial_end - self.serial_start


@dataclass
class ImportResult(Serialisable):
    readings: int = 0
    wh: int = 0
    unchanged: int = 0
    unknown_meters: list[str] = field(default_factory=list)


@dataclass
class DeviceImportResult(Serialisable):
    """A bulk device registration (``device import`` / ``RegisterDevices``): all or nothing."""

    #: Devices registered (every row of the input).
    devices: int = 0
    #: SHA-256 (hex) of the normalised rows: what an idempotent replay must match.
    digest: str = ""
    #: Pseudonym ids of the first and last registered device, in input order.
    first_id: str = ""
    last_id: str = ""


@dataclass
class IssueResult(Serialisable):
    bundles: int = 0
    wh: int = 0
    batch_seq: int = 0
    merkle_root: bytes = b""


@dataclass
class IssueAllResult(Serialisable):
    """What one ``issue`` run over everything pending did: ``batches`` signed batches (their
    sequence numbers in ``batch_seqs``) holding ``bundles`` bundles and ``wh`` Wh."""

    batches: int = 0
    bundles: int = 0
    wh: int = 0
    batch_seqs: list[int] = field(default_factory=list)


@dataclass
class TransferResult(Serialisable):
    transferred: Bundle
    remainder: Bundle | None = None


@dataclass
class ClaimReceipt(Serialisable):
    id: str
    bundle: Bundle
    beneficiary: str
    purpose: str
    consumption_start: int
    consumption_end: int
    consumption_zone: str
    claimed_at_ms: int
    digest: bytes
    signature: bytes
    key_id: str
    #: Selective-disclosure receipt (SD-JWT with every disclosure, docs/receipts.md): for
    #: the holder only; empty for claims made before SD receipts, or when redacted.
    sd_receipt: str = ""


@dataclass
class NodeStatus(Serialisable):
    node_id: str
    zone: str
    protocol_version: str
    key_id: str
    devices: int
    accounts: int
    readings: int
    bundles_active: int
    wh_metered: int
    wh_issued: int
    wh_active: int
    wh_retired: int
    wh_exported: int
    wh_imported: int
    core_backend: str
    database: str


@dataclass
class Page(Serialisable):
    """A page of a listing; ``next_token`` is empty on the last page."""

    items: list[Any]
    next_token: str = ""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the node operator, or the holder of one account."""

    kind: str  # "operator" | "account" | "regulator"
    account_id: str | None = None
    #: How the caller came in, recorded in the audit log: "local" (CLI) or "grpc".
    via: str = field(default="local", compare=False)

    @classmethod
    def operator(cls) -> Principal:
        return cls("operator")

    @property
    def name(self) -> str:
        if self.kind in ("operator", "regulator"):
            return self.kind
        return f"account:{self.account_id}"

    def may_act_for(self, owner: str) -> bool:
        return self.kind == "operator" or self.account_id == owner


@dataclass(frozen=True)
class AuditEntry:
    """One row of the hash-chained audit log of reads of personal data."""

    seq: int
    at_ms: int
    principal: str
    via: str
    purpose: str
    what: str
    count: int
    accounts: tuple[str, ...]
    fields: tuple[str, ...]
    prev_hash: str
    row_hash: str

    def as_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["accounts"], d["fields"] = list(self.accounts), list(self.fields)
        return d
