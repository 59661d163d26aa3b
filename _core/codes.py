"""Validation result codes and the enum bounds of the canonical record columns.

One byte per record: ``OK`` (0) or the number of the first rule the record breaks, in the
order the rules are checked (``RULE_NAMES[code]`` is its name).  Rules 1-9 look at one record,
10-12 at the whole batch; see ``docs/core.md``.
"""

from __future__ import annotations

OK = 0
INTERVAL_EMPTY = 1
INTERVAL_TOO_LONG = 2
INTERVAL_MISALIGNED = 3
SERIAL_RANGE_INVALID = 4
SOURCE_INVALID = 5
TECHNOLOGY_INVALID = 6
RENEWABLE_SHARE_OUT_OF_RANGE = 7
CARBON_INTENSITY_OUT_OF_RANGE = 8
EXCEEDS_CAPACITY = 9
INTERVAL_OVERLAP = 10
SERIAL_OVERLAP = 11
EXCEEDS_METERED = 12

#: ``RULE_NAMES[code]`` is the name of the rule with that code (``RULE_NAMES[0] == "OK"``).
RULE_NAMES: tuple[str, ...] = (
    "OK",
    "INTERVAL_EMPTY",
    "INTERVAL_TOO_LONG",
    "INTERVAL_MISALIGNED",
    "SERIAL_RANGE_INVALID",
    "SOURCE_INVALID",
    "TECHNOLOGY_INVALID",
    "RENEWABLE_SHARE_OUT_OF_RANGE",
    "CARBON_INTENSITY_OUT_OF_RANGE",
    "EXCEEDS_CAPACITY",
    "INTERVAL_OVERLAP",
    "SERIAL_OVERLAP",
    "EXCEEDS_METERED",
)

#: One line per rule, for error messages (same index as ``RULE_NAMES``).
RULE_DESCRIPTIONS: tuple[str, ...] = (
    "record is valid",
    "interval_end must be after interval_start",
    "interval must not be longer than 3600 s",
    "interval duration must divide 3600 s and interval_start must be a multiple of it",
    "serial range must satisfy 0 <= serial_start < serial_end",
    "source must be an energy source enum value in 1..12",
    "technology must be a technology enum value in 1..14",
    "renewable_ppm must be in 0..1000000",
    "carbon_mg must be in 0..2000000 mg CO2e/kWh",
    "Wh exceed device capacity x interval duration",
    "interval overlaps a different interval of the same device in the batch",
    "serial range overlaps the serial range of another record in the batch",
    "Wh of this device-interval in the batch exceed its metered Wh",
)

MAX_INTERVAL_S = 3600
SOURCE_MAX = 12
TECHNOLOGY_MAX = 14
RENEWABLE_PPM_MAX = 1_000_000
CARBON_MG_MAX = 2_000_000

#: Energy source enum (``source`` column); 0 is "unspecified" and invalid.
SOURCES: dict[str, int] = {
    "SOLAR": 1,
    "WIND": 2,
    "HYDRO": 3,
    "NUCLEAR": 4,
    "BIOMASS": 5,
    "GEOTHERMAL": 6,
    "MARINE": 7,
    "GAS": 8,
    "COAL": 9,
    "OIL": 10,
    "STORAGE": 11,
    "OTHER": 12,
}

#: Technology enum (``technology`` column); 0 is "unspecified" and invalid.
TECHNOLOGIES: dict[str, int] = {
    "PHOTOVOLTAIC": 1,
    "CONCENTRATED_SOLAR": 2,
    "ONSHORE_WIND": 3,
    "OFFSHORE_WIND": 4,
    "RUN_OF_RIVER": 5,
    "RESERVOIR_HYDRO": 6,
    "NUCLEAR_FISSION": 7,
    "STEAM_TURBINE": 8,
    "COMBINED_CYCLE": 9,
    "COMBUSTION_ENGINE": 10,
    "BATTERY": 11,
    "PUMPED_HYDRO": 12,
    "FUEL_CELL": 13,
    "OTHER": 14,
}
