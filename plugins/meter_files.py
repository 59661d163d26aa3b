"""Built-in meter-data plugin: Green Button (ESPI XML) and the registry's hourly CSV."""

from __future__ import annotations

from eap.node.meters import CsvMeterSource, GreenButtonSource
from eap.plugins import hookimpl


@hookimpl
def eap_meter_sources():
    return [GreenButtonSource(), CsvMeterSource()]
