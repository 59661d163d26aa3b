"""``eap-node demo``: a simulated day of a city node, end to end, on a throwaway home.

Real consumption comes from Green Button files (``../shared/data/greenbutton`` when present,
else the small sample packaged with the project); production is synthetic solar and wind,
written as meter CSV files and imported through the same reader operators use.  The day runs
issuance, trades (transfers and splits) and hourly claims (24/7 matching), and ends with a
summary and a conservation check: every issued Wh is active or retired, none lost or doubled.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eap.node.config import create_home
from eap.node.domain.enums import Purpose, Status
from eap.node.domain.node import Node
from eap.node.meters import MeterReadings, read_meter_file, sample_greenbutton_path

SHARED_GREENBUTTON = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "greenbutton"


@dataclass(frozen=True)
class City:
    node_id: str
    zone: str
    lat: float
    lon: float
    consumption_file: str  # file name in the shared Green Button folder


CITIES = (
    City(
        "medellin.example",
        "CO-ANT",
        6.2442,
        -75.5812,
        "Coastal_Multi_Family_Jan_1_2011_to_Jan_1_2012_RetailCustomer_5.xml",
    ),
    City(
        "barcelona.example",
        "ES",
        41.3874,
        2.1686,
        "Desert_Single_Family_Jan_1_2011_to_Jan_1_2012_RetailCustomer_7.xml",
    ),
    City("amsterdam.example", "NL", 52.3676, 4.9041, "TestGBDataHourlyNineDaysBinnedDaily.xml"),
)


@dataclass
class CityReport:
    node_id: str
    consumption_source: str
    wh_consumed: int = 0
    wh_metered: int = 0
    wh_issued: int = 0
    wh_transferred: int = 0
    wh_claimed: int = 0
    wh_active: int = 0
    wh_exported: int = 0
    wh_imported: int = 0
    claims: int = 0
    conserved: bool = False
    hourly_cfe: list[float] = field(default_factory=list)

    @property
    def cfe_score(self) -> float:
        return self.wh_claimed / self.wh_consumed if self.wh_consumed else 0.0


def consumption_for(city: City) -> tuple[MeterReadings, str]:
    """Hourly consumption of one city's customer: the shared file, else the packaged sample."""
    path = SHARED_GREENBUTTON / city.consumption_file
    if not path.exists():
        path = sample_greenbutton_path()
    return read_meter_file(path), path.name


def first_full_day(readings: MeterReadings) -> tuple[int, np.ndarray]:
    """Start (unix s) of the first UTC day with 24 hourly readings, and those 24 values in Wh."""
    hourly = (readings.interval_end - readings.interval_start) == 3600
    starts = readings.interval_start[hourly]
    values = readings.wh[hourly]
    by_hour = dict(zip(starts.tolist(), values.tolist(), strict=True))
    day = (int(starts.min()) // 86400 + 1) * 86400
    while day + 86400 <= int(starts.max()) + 3600:
        hours = [by_hour.get(day + 3600 * h) for h in range(24)]
        if all(v is not None for v in hours):
            return day, np.array(hours, dtype=np.int64)
        day += 86400
    raise ValueError("no complete day of hourly consumption")


def synthetic_production(day: int, demand: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Solar and wind output (Wh per hour) sized to cover roughly the day's demand."""
    rng = random.Random(seed)
    peak = max(int(demand.max()), 1000)
    solar_cap, wind_cap = int(peak * 1.6), int(peak * 0.8)
    solar, wind = [], []
    level = rng.uniform(0.3, 0.7)
    for h in range(24):
        sun = max(0.0, math.sin(math.pi * (h - 6) / 12)) * rng.uniform(0.6, 1.0)
        solar.append(int(solar_cap * sun))
        level = min(0.95, max(0.05, level + rng.uniform(-0.15, 0.15)))
        wind.append(int(wind_cap * level))
    return {
        "solar": np.array(solar),
        "wind": np.array(wind),
        "capacity": {"solar": solar_cap, "wind": wind_cap},
    }  # type: ignore[dict-item]


def write_meter_csv(path: Path, day: int, series: dict[str, np.ndarray]) -> Path:
    lines = [
        "interval_start_datetime,interval_end_datetime,device_id,interval_usage,gross_net_indicator"
    ]
    for meter, values in series.items():
        for h, wh in enumerate(values.tolist()):
            start = dt.datetime.fromtimestamp(day + 3600 * h, dt.UTC)
            end = start + dt.timedelta(hours=1)
            lines.append(f"{start:%Y-%m-%d %H:%M:%S},{end:%Y-%m-%d %H:%M:%S},{meter},{wh},NET")
    path.write_text("\n".join(lines) + "\n")
    return path


def run_city(city: City, workdir: Path, seed: int, progress=None) -> CityReport:
    """Simulate one city's day on its own node (embedded SQLite)."""
    readings, source_name = consumption_for(city)
    day, demand = first_full_day(readings)
    report = CityReport(city.node_id, source_name, wh_consumed=int(demand.sum()))
    node = Node.initialise(create_home(workdir / city.node_id, city.node_id, city.zone))
    try:
        step = (lambda what: progress(city.node_id, what)) if progress else (lambda what: None)
        step("accounts and devices")
        coop = node.create_account(request_id="coop", label="energy co-op").account.id
        utility = node.create_account(request_id="utility", label="retailer").account.id
        consumer = node.create_account(request_id="consumer", label="customer").account.id
        prod = synthetic_production(day, demand, seed)
        commissioned = "2019-03-01"
        for kind, tech in (("solar", "photovoltaic"), ("wind", "onshore_wind")):
            node.register_device(
                request_id=f"dev-{kind}",
                local_ref=f"{kind}-1",
                capacity_w=prod["capacity"][kind],
                source=kind,
                technology=tech,
                commissioned_on=commissioned,
                latitude=city.lat + 0.01,
                longitude=city.lon - 0.01,
                zone=city.zone,
                owner=coop,
                meter_id=f"{city.node_id}:{kind}",
                attestation_evidence=f"{kind} interconnection",
            )
        step("meter import")
        csv = write_meter_csv(
            workdir / f"{city.node_id}-production.csv",
            day,
            {f"{city.node_id}:{k}": prod[k] for k in ("solar", "wind")},
        )
        node.import_readings(csv, request_id="import")
        step("issuance")
        node.issue(request_id="issue")
        step("trades")
        # The co-op sells its bundles to the retailer; hours with more than demand are split.
        bundles = _active(node, coop)
        for b in bundles:
            hour = (b.interval_start - day) // 3600
            want = int(demand[hour]) if 0 <= hour < 24 else 0
            wh = min(b.wh, want)
            if wh <= 0:
                continue
            node.transfer(
                b.id, to_account=utility, wh=0 if wh == b.wh else wh, request_id=f"sell-{b.id}"
            )
            report.wh_transferred += wh
        step("hourly claims")
        held = _active(node, utility)
        for h in range(24):
            need = int(demand[h])
            for b in (x for x in held if x.interval_start == day + 3600 * h):
                if need <= 0:
                    break
                take = min(need, b.wh)
                node.retire(
                    b.id,
                    wh=0 if take == b.wh else take,
                    beneficiary=consumer,
                    purpose="24/7-matching",
                    request_id=f"claim-{b.id}",
                )
                report.wh_claimed += take
                report.claims += 1
                need -= take
            report.hourly_cfe.append(1 - need / demand[h] if demand[h] else 1.0)
        st = node.status()
        report.wh_metered, report.wh_issued = st.wh_metered, st.wh_issued
        report.wh_active, report.wh_exported, report.wh_imported = (
            st.wh_active,
            st.wh_exported,
            st.wh_imported,
        )
        report.conserved = (
            st.wh_active + st.wh_retired + st.wh_exported - st.wh_imported == st.wh_issued
            and st.wh_retired == report.wh_claimed
        )
    finally:
        node.close()
    return report


def _active(node: Node, owner: str):
    out, token = [], ""
    while True:
        page = node.list_bundles(
            purpose=Purpose.OPERATIONS,
            owner=owner,
            status=int(Status.ACTIVE),
            page_size=1000,
            page_token=token,
        )
        out += page.items
        if not page.next_token:
            return sorted(out, key=lambda b: (b.interval_start, b.serial_start))
        token = page.next_token


def run_demo(
    workdir: Path | None = None,
    *,
    cities: tuple[City, ...] = CITIES,
    seed: int = 7,
    keep: bool = False,
    progress=None,
) -> list[CityReport]:
    """Run the simulated day for each city; returns one report per node."""
    own = workdir is None
    workdir = Path(workdir or tempfile.mkdtemp(prefix="eap-demo-"))
    try:
        return [run_city(c, workdir, seed + i, progress) for i, c in enumerate(cities)]
    finally:
        if own and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
