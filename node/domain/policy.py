"""Purpose limitation (DESIGN §8): which fields each read purpose may see.

* OPERATIONS: everything, operator only; reads of private fields are audit-logged.
* HOLDINGS: an account holder's own bundles and claims; no device or meter details.
* TRANSPARENCY: energy flows for anyone: pseudonyms, zone, coarse cell, amounts and times.
* REGULATION: zone/hour aggregates only (``eap.node.domain.aggregates``), for the operator and
  the regulator principal (``<home>/regulator-token``); no record-level reads.
"""

from __future__ import annotations

import dataclasses

from eap.node.errors import PermissionDenied, invalid
from eap.node.records.enums import Purpose
from eap.node.records.models import Account, Bundle, Device, Principal


def require_purpose(purpose: Purpose | int, principal: Principal) -> Purpose:
    """Reject reads without a purpose, and purposes the caller may not use."""
    try:
        purpose = Purpose(int(purpose))
    except ValueError:
        raise invalid("purpose", f"unknown read purpose {purpose}") from None
    if purpose == Purpose.UNSPECIFIED:
        raise invalid("purpose", "every read must name a purpose")
    if purpose == Purpose.OPERATIONS and principal.kind != "operator":
        raise PermissionDenied("the OPERATIONS purpose is reserved to the node operator")
    if purpose == Purpose.HOLDINGS and principal.kind != "account":
        raise invalid("purpose", "HOLDINGS reads are made by an account holder")
    if purpose == Purpose.REGULATION and principal.kind not in ("operator", "regulator"):
        raise PermissionDenied("the REGULATION purpose is reserved to the operator and regulator")
    if principal.kind == "regulator" and purpose != Purpose.REGULATION:
        raise PermissionDenied("the regulator reads aggregates only (purpose REGULATION)")
    return purpose


def require_record_purpose(purpose: Purpose | int, principal: Principal) -> Purpose:
    """:func:`require_purpose` for reads of individual records, which REGULATION may not make."""
    purpose = require_purpose(purpose, principal)
    if purpose == Purpose.REGULATION:
        raise invalid("purpose", "REGULATION reads aggregates only, not individual records")
    return purpose


def redact_device(device: Device, purpose: Purpose) -> Device:
    if purpose == Purpose.OPERATIONS:
        return device
    return dataclasses.replace(
        device, local_ref="", latitude=None, longitude=None, meter_id=None, attestation_ref=""
    )


def redact_account(account: Account, purpose: Purpose) -> Account:
    if purpose == Purpose.OPERATIONS:
        return account
    if purpose == Purpose.HOLDINGS:
        return dataclasses.replace(
            account, identity=account.identity if account.disclosed else None
        )
    return dataclasses.replace(
        account,
        label="",
        identity=account.identity if account.disclosed else None,
        holder_public_key=None,
    )


def redact_bundle(bundle: Bundle, purpose: Purpose) -> Bundle:
    # Bundles carry only public attributes (pseudonymous device and owner, zone, cell).
    return bundle


def redacts_bundles(purpose: Purpose) -> bool:
    """Whether :func:`redact_bundle` hides anything from ``purpose`` (never, today).  Listings
    that render bundle rows without building records (the database-rendered JSON Lines of
    ``eap-node bundles --json``) rely on it: where it is True they go through the records and
    :func:`redact_bundle`.  Change both together."""
    return False
