"""Closed enums of the protocol, with the same numbers as ``eap.v1`` (proto names minus prefix)."""

from __future__ import annotations

import enum

from eap.node.errors import invalid


class _Named(enum.IntEnum):
    @classmethod
    def parse(cls, value: str | int, field: str) -> _Named:
        """Parse a CLI/API value (name in any case, or number); UNSPECIFIED is rejected."""
        try:
            member = cls(int(value)) if str(value).isdigit() else cls[str(value).upper()]
        except (KeyError, ValueError):
            allowed = ", ".join(m.name.lower() for m in cls if m.value)
            raise invalid(field, f"unknown value {value!r}; one of: {allowed}") from None
        if member.value == 0:
            raise invalid(field, "must be specified")
        return member


class Source(_Named):
    UNSPECIFIED = 0
    SOLAR = 1
    WIND = 2
    HYDRO = 3
    NUCLEAR = 4
    BIOMASS = 5
    GEOTHERMAL = 6
    MARINE = 7
    GAS = 8
    COAL = 9
    OIL = 10
    STORAGE = 11
    OTHER = 12


class Technology(_Named):
    UNSPECIFIED = 0
    PHOTOVOLTAIC = 1
    CONCENTRATED_SOLAR = 2
    ONSHORE_WIND = 3
    OFFSHORE_WIND = 4
    RUN_OF_RIVER = 5
    RESERVOIR_HYDRO = 6
    NUCLEAR_FISSION = 7
    STEAM_TURBINE = 8
    COMBINED_CYCLE = 9
    COMBUSTION_ENGINE = 10
    BATTERY = 11
    PUMPED_HYDRO = 12
    FUEL_CELL = 13
    OTHER = 14


class Status(_Named):
    UNSPECIFIED = 0
    ACTIVE = 1
    SPLIT = 2
    RETIRED = 3
    EXPIRED = 4
    WITHDRAWN = 5
    EXPORT_PENDING = 6
    EXPORTED = 7


class Purpose(_Named):
    """Why a read is made (DESIGN §8): decides which fields are disclosed."""

    UNSPECIFIED = 0
    OPERATIONS = 1
    TRANSPARENCY = 2
    HOLDINGS = 3
    #: Zone-level statistics for a regulator (aggregates only, k-anonymous, optional DP noise).
    REGULATION = 4


#: Record fields holding a protocol enum, and the enum naming their values (machine output
#: prints the names: ``"status": "ACTIVE"``, ``"source": "SOLAR"``).
FIELD_ENUMS: dict[str, type[_Named]] = {
    "status": Status,
    "source": Source,
    "technology": Technology,
}
