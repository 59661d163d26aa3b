"""The rules a device registration must pass, shared by ``register_device`` and the bulk
``device import`` / ``RegisterDevices`` path so both refuse exactly the same input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eap.node.domain.rules import (
    ACCOUNT_RE,
    LOCAL_REF_RE,
    MAX_CAPACITY_W,
    MAX_CARBON_MG,
    MAX_RENEWABLE_PPM,
    ZONE_RE,
    Checker,
)
from eap.node.errors import InvalidArgument
from eap.node.records.enums import Source, Technology

RENEWABLE = {
    Source.SOLAR,
    Source.WIND,
    Source.HYDRO,
    Source.GEOTHERMAL,
    Source.MARINE,
    Source.BIOMASS,
}

#: Canonical field -> the name ``register_device`` reports it under.
SINGLE_NAMES = {
    "local_ref": "device.local_ref",
    "capacity_w": "device.capacity_w",
    "source": "device.source",
    "technology": "device.technology",
    "commissioned_on": "device.commissioned_on",
    "latitude": "device.latitude",
    "longitude": "device.longitude",
    "zone": "device.zone",
    "owner": "device.owner",
    "meter_id": "device.meter_id",
    "renewable_ppm": "device.renewable_ppm",
    "carbon_mg": "device.carbon_mg_per_kwh",
    "attestation_scheme": "attestation.scheme",
    "attestation_evidence": "attestation.evidence",
}


def check_device(
    check: Checker, v: dict[str, Any], name: Callable[[str], str] = SINGLE_NAMES.__getitem__
) -> dict[str, Any] | None:
    """Validate the fields ``v`` (canonical names) into ``check``; returns the normalised
    payload (enum numbers, default renewable share) or None when something was refused."""
    before = len(check.violations)
    check.text(
        v.get("local_ref"),
        name("local_ref"),
        max_len=64,
        pattern=LOCAL_REF_RE,
        hint="letters, digits, '_', '.', ':' or '-'",
    )
    check.int_range(v.get("capacity_w"), name("capacity_w"), 1, MAX_CAPACITY_W, "W")
    src = tech = None
    try:
        src = Source.parse(v.get("source"), name("source"))
    except InvalidArgument as e:
        check.violations += e.violations
    try:
        tech = Technology.parse(v.get("technology"), name("technology"))
    except InvalidArgument as e:
        check.violations += e.violations
    check.iso_date(v.get("commissioned_on"), name("commissioned_on"))
    lat, lon = v.get("latitude"), v.get("longitude")
    check.require(
        isinstance(lat, int | float) and not isinstance(lat, bool) and -90 <= lat <= 90,
        name("latitude"),
        "must be within -90..90 degrees",
    )
    check.require(
        isinstance(lon, int | float) and not isinstance(lon, bool) and -180 <= lon <= 180,
        name("longitude"),
        "must be within -180..180 degrees",
    )
    check.text(
        v.get("zone"), name("zone"), max_len=32, pattern=ZONE_RE, hint="like CO-ANT, ES or NL"
    )
    check.text(v.get("owner"), name("owner"), max_len=64, pattern=ACCOUNT_RE, hint="an acct_ id")
    check.text(v.get("meter_id"), name("meter_id"), max_len=128)
    renewable_ppm = v.get("renewable_ppm")
    if renewable_ppm is None:
        renewable_ppm = MAX_RENEWABLE_PPM if src in RENEWABLE else 0
    check.int_range(renewable_ppm, name("renewable_ppm"), 0, MAX_RENEWABLE_PPM, "ppm")
    carbon_mg = v.get("carbon_mg", 0)
    check.int_range(carbon_mg, name("carbon_mg"), 0, MAX_CARBON_MG, "mg/kWh")
    check.text(v.get("attestation_scheme"), name("attestation_scheme"), max_len=64)
    check.text(v.get("attestation_evidence"), name("attestation_evidence"), max_len=256)
    if len(check.violations) > before:
        return None
    return dict(
        local_ref=v["local_ref"],
        capacity_w=v["capacity_w"],
        source=int(src),
        technology=int(tech),
        commissioned_on=v["commissioned_on"],
        latitude=lat,
        longitude=lon,
        zone=v["zone"],
        owner=v["owner"],
        meter_id=v["meter_id"],
        renewable_ppm=renewable_ppm,
        carbon_mg=carbon_mg,
        attestation=[v["attestation_scheme"], v["attestation_evidence"]],
    )
