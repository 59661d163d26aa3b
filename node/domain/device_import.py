"""Bulk device registration: a file (or an RPC batch) of devices, all or nothing.

Every row passes exactly the checks of ``register_device`` (:mod:`device_rules`), then the
plugin hooks ``eap_validate_device`` and ``eap_attest_device`` (each implementation called
once per chunk of rows in one bounded worker, not one thread per row), then the database
checks (owner accounts exist, local refs and meter ids free, here and within the input),
each batched as ``IN`` queries.  Any refused row refuses the whole input with every
violation named ``devices[i].<column>`` (``i`` counts rows from 0); nothing is stored.
Accepted rows are inserted with the store's bulk path (COPY on PostgreSQL) in one
transaction under an idempotency key.

Input columns (CSV header or JSON Lines keys), as the ``device register`` options:
``ref, capacity_w, source, technology, commissioned, lat, lon, zone, owner, meter_id,
attestation``; optional ``renewable_ppm``, ``carbon``, ``attestation_scheme``
(default ``operator-signed``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from eap.node.crypto import device_pseudonym
from eap.node.domain import cells, device_rules, idempotency, plugin_calls
from eap.node.domain.ledger import now_ms
from eap.node.domain.rules import Checker
from eap.node.errors import EapError, FieldViolation, InvalidArgument, PluginError
from eap.node.records.models import DeviceImportResult, Principal
from eap.node.store import repos
from eap.node.store import schema as t
from eap.node.store.engine import bulk_insert

if TYPE_CHECKING:
    from eap.node.domain.node import Node

#: Input column -> canonical field of ``register_device``.
COLUMNS = {
    "ref": "local_ref",
    "capacity_w": "capacity_w",
    "source": "source",
    "technology": "technology",
    "commissioned": "commissioned_on",
    "lat": "latitude",
    "lon": "longitude",
    "zone": "zone",
    "owner": "owner",
    "meter_id": "meter_id",
    "attestation": "attestation_evidence",
    "renewable_ppm": "renewable_ppm",
    "carbon": "carbon_mg",
    "attestation_scheme": "attestation_scheme",
}
REQUIRED = [c for c in COLUMNS if c not in ("renewable_ppm", "carbon", "attestation_scheme")]
COLUMN_OF = {v: k for k, v in COLUMNS.items()}
_INTS = {"capacity_w", "renewable_ppm", "carbon_mg"}
_FLOATS = {"latitude", "longitude"}
#: Violations kept in one refusal (the input may have a million bad rows).
MAX_VIOLATIONS = 1000
#: Rows per plugin worker call and per IN query.
CHUNK = 2000


def read_rows(path: Path, fmt: str = "") -> list[dict[str, Any]]:
    """The rows of a CSV or JSON Lines file (by ``fmt``, else by extension ``.jsonl``)."""
    fmt = (fmt or ("jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else "csv")).lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(
            f"cannot read {path}", [FieldViolation("file", str(exc)[:200])]
        ) from None
    if fmt == "csv":
        return parse_csv(text)
    if fmt in ("jsonl", "json", "ndjson"):
        return parse_json_lines(text)
    raise InvalidArgument(
        f"unknown device file format {fmt!r}", [FieldViolation("format", "csv or jsonl")]
    )


def parse_csv(text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    _check_header(header)
    rows = []
    for row in reader:
        if None in row:  # more cells than the header names
            rows.append({"__extra__": row.pop(None), **row})
        else:
            rows.append({k: v for k, v in row.items() if v not in (None, "") or k in REQUIRED})
    return rows


def parse_json_lines(text: str) -> list[dict[str, Any]]:
    rows = []
    bad: list[FieldViolation] = []
    for n, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            bad.append(FieldViolation(f"devices[{len(rows)}]", f"line {n + 1}: not JSON: {exc}"))
            obj = {}
        if not isinstance(obj, dict):
            bad.append(FieldViolation(f"devices[{len(rows)}]", f"line {n + 1}: not an object"))
            obj = {}
        rows.append(obj)
    if bad:
        raise InvalidArgument("invalid device file", bad[:MAX_VIOLATIONS])
    return rows


def _check_header(header: list[str]) -> None:
    unknown = [h for h in header if h not in COLUMNS]
    missing = [c for c in REQUIRED if c not in header]
    if unknown or missing:
        raise InvalidArgument(
            "invalid device file header",
            [FieldViolation(h, "unknown column") for h in unknown]
            + [FieldViolation(c, "missing column") for c in missing],
        )


def _typed(row: dict[str, Any], i: int, check: Checker) -> dict[str, Any]:
    """The row's values under canonical names, numbers converted (text cells from CSV)."""
    v: dict[str, Any] = {"attestation_scheme": "operator-signed"}
    if "__extra__" in row:
        check.fail(f"devices[{i}]", "more cells than the header has columns")
    for key, value in row.items():
        if key == "__extra__":
            continue
        canon = COLUMNS.get(key)
        if canon is None:
            check.fail(f"devices[{i}].{key}", "unknown column")
            continue
        if isinstance(value, str) and canon in _INTS:
            try:
                value = int(value.strip())
            except ValueError:
                check.fail(f"devices[{i}].{key}", "must be an integer")
                continue
        elif isinstance(value, str) and canon in _FLOATS:
            try:
                value = float(value.strip())
            except ValueError:
                check.fail(f"devices[{i}].{key}", "must be a number")
                continue
            if value != value or value in (float("inf"), float("-inf")):
                value = None  # NaN / inf: refused by the range rule below
        v[canon] = value
    for key in REQUIRED:
        if key not in row:
            check.fail(f"devices[{i}].{key}", "missing")
    return v


def validate(
    node: Node, rows: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every row through the shared rules and the plugins; ``(payloads, attested)``.

    Raises:
        InvalidArgument: at least one row is refused (every violation, capped).
        PluginError: a plugin failed (not a refusal) or timed out.
    """
    check = Checker("invalid devices: nothing was registered")
    payloads: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        typed = _typed(row, i, check)
        payload = device_rules.check_device(
            check, typed, lambda f, i=i: f"devices[{i}].{COLUMN_OF[f]}"
        )
        payloads.append(payload or {})
        if len(check.violations) >= MAX_VIOLATIONS:
            break
    if not rows:
        check.fail("file", "no devices")
    # A cell refused while typed is not refused again by the rule that reads it.
    check.violations = list(dict.fromkeys(check.violations))
    check.done()
    attested = _plugins(node, payloads, check)
    check.done()
    return payloads, attested


def _plugins(node: Node, payloads: list[dict], check: Checker) -> list[dict]:
    """``eap_validate_device`` and ``eap_attest_device`` over every row, chunk by chunk."""
    timeout_s = plugin_calls.timeout_of(node)
    config = dict(node.config.extra)
    settings = node._attestation_settings()
    attested: list[Any] = [None] * len(payloads)
    for lo in range(0, len(payloads), CHUNK):
        chunk = range(lo, min(lo + CHUNK, len(payloads)))
        for name, impl in plugin_calls.impls(node.plugins, "eap_validate_device"):
            kwargs = [{"device": dict(payloads[i]), "config": config} for i in chunk]
            results = _each(impl, name, list(chunk), kwargs, timeout_s)
            for i, result in zip(chunk, results, strict=True):
                for v in _as_violations(result, i, name):
                    check.violations.append(v)
        for name, impl in plugin_calls.impls(node.plugins, "eap_attest_device"):
            todo = [i for i in chunk if attested[i] is None]
            if not todo:
                break
            kwargs = [
                {
                    "device": dict(payloads[i]),
                    "scheme": payloads[i]["attestation"][0],
                    "evidence": payloads[i]["attestation"][1],
                    "settings": settings,
                }
                for i in todo
            ]
            for i, result in zip(todo, _each(impl, name, todo, kwargs, timeout_s), strict=True):
                if isinstance(result, list):  # a refusal (EapError) of this row
                    check.violations += result
                    attested[i] = {}
                elif result is not None:
                    attested[i] = result
        for i in chunk:
            if attested[i] is None:
                scheme = payloads[i]["attestation"][0]
                check.fail(
                    f"devices[{i}].attestation_scheme", f"no plugin accepts scheme {scheme!r}"
                )
        if len(check.violations) >= MAX_VIOLATIONS:
            break
    return attested


def _each(impl: Any, name: str, rows: list[int], kwargs: list[dict], timeout_s: float) -> list[Any]:
    """One implementation over a chunk of rows in one bounded worker (``timeout_s`` per row).
    A row the plugin refuses with an EapError yields that row's violations (a list)."""

    def run() -> list[Any]:
        out: list[Any] = []
        for n, kw in zip(rows, kwargs, strict=True):
            args = {k: kw[k] for k in impl.argnames if k in kw}
            try:
                out.append(impl.function(**args))
            except EapError as exc:  # the row's fields when the refusal names them
                out.append(
                    [
                        FieldViolation(
                            f"devices[{n}].{v.field}", f"{v.description} (plugin {name})"
                        )
                        for v in exc.violations
                    ]
                    or [FieldViolation(f"devices[{n}]", f"{exc} (plugin {name})")]
                )
        return out

    hook = getattr(impl.function, "__name__", "hook")
    results = plugin_calls.bounded(run, timeout_s * max(1, len(kwargs)), name, hook)
    if not isinstance(results, list) or len(results) != len(kwargs):
        raise PluginError(f"plugin {name} answered {hook} for the wrong rows", plugin=name)
    return results


def _as_violations(result: Any, i: int, plugin: str) -> Iterable[FieldViolation]:
    if isinstance(result, list) and result and isinstance(result[0], FieldViolation):
        return result  # a refusal raised for this row (already named)
    out = []
    for v in result or ():
        if isinstance(v, FieldViolation):
            field, text = v.field, v.description
        elif isinstance(v, dict):
            field, text = str(v.get("field", "")), str(v.get("description", ""))
        else:
            field, text = (str(x) for x in v)
        out.append(FieldViolation(f"devices[{i}].{field}", f"{text} (plugin {plugin})"))
    return out


def register_devices(
    node: Node,
    rows: list[dict[str, Any]],
    *,
    request_id: str,
    principal: Principal | None = None,
) -> DeviceImportResult:
    """Register every row or none (see the module docstring)."""
    principal = principal or Principal.operator()
    node._operator_only(principal, "register devices")
    payloads, attested = validate(node, rows)
    digest = hashlib.sha256(
        json.dumps(payloads, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    secret = node.config.node_secret()
    res = node.config.privacy.h3_resolution

    def op(conn: Connection) -> DeviceImportResult:
        check = Checker("devices refused: nothing was registered")
        _database_checks(conn, payloads, check)
        check.done()
        at = now_ms()
        ids = [device_pseudonym(secret, p["local_ref"]) for p in payloads]
        cols: dict[str, list] = {
            "id": ids,
            "local_ref": [p["local_ref"] for p in payloads],
            "capacity_w": [p["capacity_w"] for p in payloads],
            "source": [p["source"] for p in payloads],
            "technology": [p["technology"] for p in payloads],
            "commissioned_on": [p["commissioned_on"] for p in payloads],
            "latitude": [float(p["latitude"]) for p in payloads],
            "longitude": [float(p["longitude"]) for p in payloads],
            "zone": [p["zone"] for p in payloads],
            "cell": [cells.public_cell(p["latitude"], p["longitude"], res) for p in payloads],
            "owner": [p["owner"] for p in payloads],
            "meter_id": [p["meter_id"] for p in payloads],
            "renewable_ppm": [p["renewable_ppm"] for p in payloads],
            "carbon_mg": [p["carbon_mg"] for p in payloads],
            "attested_by": [p["attestation"][0] for p in payloads],
            "attestation_ref": [str(a["ref"])[:256] for a in attested],
            "registered_at_ms": [at] * len(payloads),
        }
        bulk_insert(conn, t.devices, cols)
        return DeviceImportResult(devices=len(ids), digest=digest, first_id=ids[0], last_id=ids[-1])

    return idempotency.run(
        node.store,
        request_id=request_id,
        operation="register_devices",
        principal=principal,
        payload={"sha256": digest, "devices": len(payloads)},
        result_type=DeviceImportResult,
        fn=op,
    )


def _database_checks(conn: Connection, payloads: list[dict], check: Checker) -> None:
    """Owners exist; refs and meter ids are free here and unique within the input."""
    refs = [p["local_ref"] for p in payloads]
    meters = [p["meter_id"] for p in payloads]
    owners = sorted({p["owner"] for p in payloads})
    known_owners = repos.present_values(conn, t.accounts.c.id, owners)
    taken_refs = repos.present_values(conn, t.devices.c.local_ref, refs)
    taken_meters = repos.present_values(conn, t.devices.c.meter_id, meters)
    seen_refs: dict[str, int] = {}
    seen_meters: dict[str, int] = {}
    for i, p in enumerate(payloads):
        if p["owner"] not in known_owners:
            check.fail(f"devices[{i}].owner", f"unknown account {p['owner']}")
        if p["local_ref"] in taken_refs:
            check.fail(f"devices[{i}].ref", "already registered")
        elif p["local_ref"] in seen_refs:
            check.fail(f"devices[{i}].ref", f"repeats devices[{seen_refs[p['local_ref']]}]")
        if p["meter_id"] in taken_meters:
            check.fail(f"devices[{i}].meter_id", "already registered")
        elif p["meter_id"] in seen_meters:
            check.fail(f"devices[{i}].meter_id", f"repeats devices[{seen_meters[p['meter_id']]}]")
        seen_refs.setdefault(p["local_ref"], i)
        seen_meters.setdefault(p["meter_id"], i)
        if len(check.violations) >= MAX_VIOLATIONS:
            return
