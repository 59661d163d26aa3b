"""``eap-node demo``: three city nodes federating through one simulated day.

Medellín, Barcelona and Amsterdam each run their own node: a separate ``eap-node serve``
process on loopback with its embedded SQLite database, a TLS certificate from a demo CA, and
the two other cities on its trust list (signed descriptors exchanged, keys pinned by
fingerprint).  The demo drives them through their local gRPC API (``eap.v1.NodeApi``, operator
token of each home), as a city's own systems would:

* **consumption** of one real customer per city from Green Button files
  (``../shared/data/greenbutton``, else the sample packaged with the project): the customer's
  first full day, replayed hour by hour in the city's local time on the simulated day;
* **production**: a solar park and a wind farm per city owned by an energy co-op, synthetic
  but physical (sun elevation for the city's latitude, longitude and date; a seeded random wind),
  imported as meter files through ``ImportReadings`` and issued as signed batches;
* the day runs in four quarters of six hours.  Each quarter every node issues one batch; the
  nodes sync each other's batches by themselves (signature, Merkle root and rules verified);
  each co-op sells its local retailer what the city consumes in the hour (whole bundles and
  splits); the surplus goes abroad to the next city west of the sun (Barcelona → Medellín →
  Amsterdam → Barcelona), bought by that city's co-op for the hours the city is short and sold
  on to its retailer: cross-node transfers, exactly once,
  whole and partial, one of them replayed to show the replay changes nothing; and every
  retailer claims, hour by hour, what it holds for that hour (its own city's and imported
  records) for its customer (24/7 matching, beneficiary = the customer's pseudonym).
* **money**: every sale is a priced trade (integer minor units: COP in Medellín, EUR elsewhere
  and across borders); each node sets a credit limit for the other two.  The day ends with a
  settlement round run by the last city's node (``RunSettlement``): every node signs its view
  of the day's obligations, the multilateral net is computed by the core's netting kernels, all
  three sign the statement, and each executes its side of the payments through its settlement
  backend (the built-in co-op ledger).  The summary shows gross, net, efficiency and the signed
  statement's digest.

The run ends with a summary per node and a federation-wide audit, through the protocol only:
the first city's node runs ``RunAudit`` (its local API), which gathers every node's signed
holdings statement (``GetHoldings``) and checks, for every issuer, that the Wh it issued equal
the Wh active, retired or in flight for its serials across all nodes, that no serial is held in
two places, and that every holding matches the issuer's custody.  The demo fails (exit 1) when
the books do not close.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import random
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eap.node.errors import FailedPrecondition, InvalidArgument
from eap.node.federation.localnet import LocalFederation, LocalNode
from eap.node.meters import MeterReadings, read_meter_file, sample_greenbutton_path

SHARED_GREENBUTTON = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "greenbutton"

DEFAULT_DAY = "2025-06-21"
HOURS = 24
QUARTERS = 4
CLAIM_PURPOSE = "scope2-market-based/24-7-hourly"
#: Federation settings of the demo homes: quick background sync, so nodes catch up in < 1 s.
FEDERATION_SETTINGS = {"sync_interval_s": 0.3}
TRANSFER_SETTINGS = {"worker_interval_s": 0.3, "inline_wait_s": 15.0}
#: Steps reported to ``progress``: set-up, start, handshakes, 5 per quarter, settle, the
#: settlement round, checks, the customers' matching reports.
TOTAL_STEPS = 3 + 5 * QUARTERS + 5
#: Prices, minor units per kWh: what a co-op charges its local retailer (local currency) and
#: what surplus costs across borders (EUR).  Every amount is an integer of minor units.
LOCAL_PRICE = {"CO-ANT": ("COP", 80_000), "ES": ("EUR", 12), "NL": ("EUR", 13)}
EXPORT_PRICE = ("EUR", 15)
#: Credit each node extends to each peer's accounts (EUR minor units).
PEER_CREDIT_LIMIT = 100_000_000
#: The co-op ledger (each node's settlement backend) lets a member pay this far below zero.
LEDGER_SETTINGS = {
    "settlement": {"coop-ledger": {"default_credit_line_minor": {"EUR": 10_000_000,
                                                                 "COP": 10_000_000_000}}}
}


@dataclass(frozen=True)
class City:
    node_id: str
    zone: str
    name: str
    lat: float
    lon: float
    #: Civil time offset on the simulated day (summer time in Europe).
    utc_offset_h: int
    #: Green Button file of the city's customer, in the shared folder.
    consumption_file: str
    #: Solar park size as a multiple of the customer's peak hour, wind farm of its mean hour.
    solar_factor: float
    wind_factor: float
    #: Node whose retailer buys this city's surplus.
    sells_to: str


CITIES: tuple[City, ...] = (
    City(
        "medellin.example",
        "CO-ANT",
        "Medellín",
        6.2442,
        -75.5812,
        -5,
        "Coastal_Multi_Family_Jan_1_2011_to_Jan_1_2012_RetailCustomer_5.xml",
        1.9,
        0.35,
        "amsterdam.example",
    ),
    City(
        "barcelona.example",
        "ES",
        "Barcelona",
        41.3874,
        2.1686,
        2,
        "Desert_Single_Family_Jan_1_2011_to_Jan_1_2012_RetailCustomer_7.xml",
        1.7,
        0.3,
        "medellin.example",
    ),
    City(
        "amsterdam.example",
        "NL",
        "Amsterdam",
        52.3676,
        4.9041,
        2,
        "TestGBDataHourlyNineDaysBinnedDaily.xml",
        0.7,
        1.3,
        "barcelona.example",
    ),
)


# -- the simulated day ----------------------------------------------------------------------------


@dataclass
class CityPlan:
    """Everything known about a city's day before it runs (Wh per UTC hour of the day)."""

    city: City
    consumption_source: str
    day: int
    demand: list[int]
    solar: list[int]
    wind: list[int]
    capacity_w: dict[str, int]

    def production(self, h: int) -> int:
        return self.solar[h] + self.wind[h]

    def deficit(self, h: int) -> int:
        """Wh the city's customer needs in hour ``h`` beyond its own city's production."""
        return max(0, self.demand[h] - self.production(h))

    def meter_csv(self, hours: Iterable[int]) -> bytes:
        """The co-op's meter file for ``hours`` (the registry CSV layout operators import)."""
        lines = [
            "interval_start_datetime,interval_end_datetime,device_id,interval_usage,"
            "gross_net_indicator"
        ]
        for kind, series in (("solar", self.solar), ("wind", self.wind)):
            for h in hours:
                start = dt.datetime.fromtimestamp(self.day + 3600 * h, dt.UTC)
                end = start + dt.timedelta(hours=1)
                lines.append(
                    f"{start:%Y-%m-%d %H:%M:%S},{end:%Y-%m-%d %H:%M:%S},"
                    f"{self.meter(kind)},{series[h]},NET"
                )
        return ("\n".join(lines) + "\n").encode()

    def meter(self, kind: str) -> str:
        return f"{self.city.node_id.split('.')[0]}-{kind}-1"


def consumption_readings(city: City) -> tuple[MeterReadings, str]:
    """The city's customer from the shared Green Button folder, else the packaged sample."""
    path = SHARED_GREENBUTTON / city.consumption_file
    if not path.exists():
        path = sample_greenbutton_path()
    return read_meter_file(path), path.name


def first_full_day(readings: MeterReadings) -> list[int]:
    """24 consecutive hourly values from the first reading on (files start at local midnight).

    Raises:
        InvalidArgument: no run of 24 contiguous hourly readings.
    """
    order = np.argsort(readings.interval_start, kind="stable")
    start, end = readings.interval_start[order], readings.interval_end[order]
    wh = readings.wh[order]
    for i in range(len(start) - HOURS + 1):
        s, e = start[i : i + HOURS], end[i : i + HOURS]
        if np.all(e - s == 3600) and np.all(s[1:] == e[:-1]):
            return [int(v) for v in wh[i : i + HOURS]]
    raise InvalidArgument("no complete day of hourly consumption in the Green Button file")


def sun_height(lat: float, lon: float, when: int) -> float:
    """Cosine of the solar zenith angle (0 below the horizon) at unix second ``when``."""
    t = dt.datetime.fromtimestamp(when, dt.UTC)
    doy = t.timetuple().tm_yday
    decl = math.radians(23.44) * math.sin(2 * math.pi * (284 + doy) / 365)
    solar_time = t.hour + t.minute / 60 + lon / 15
    omega = math.radians(15 * (solar_time - 12))
    phi = math.radians(lat)
    return max(
        0.0, math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(omega)
    )


def plan_city(city: City, day: int, seed: int) -> CityPlan:
    readings, source = consumption_readings(city)
    profile = first_full_day(readings)  # by local hour of the customer
    demand = [profile[(h + city.utc_offset_h) % HOURS] for h in range(HOURS)]
    rng = random.Random(f"{seed}:{city.node_id}")
    solar_cap = max(500, int(max(demand) * city.solar_factor))
    wind_cap = max(200, int(sum(demand) / HOURS * city.wind_factor))
    clouds = rng.uniform(0.7, 1.0)
    solar, wind, level = [], [], rng.uniform(0.3, 0.8)
    for h in range(HOURS):
        middle = day + 3600 * h + 1800
        sky = clouds * rng.uniform(0.8, 1.0)
        solar.append(int(solar_cap * sun_height(city.lat, city.lon, middle) * sky))
        level = min(0.95, max(0.05, level + rng.uniform(-0.18, 0.18)))
        wind.append(int(wind_cap * level))
    return CityPlan(city, source, day, demand, solar, wind, {"solar": solar_cap, "wind": wind_cap})


# -- report ---------------------------------------------------------------------------------------


@dataclass
class NodeReport:
    node_id: str
    city: str
    zone: str
    consumption_source: str
    consumer: str = ""
    consumed_wh: int = 0
    produced_wh: int = 0
    issued_wh: int = 0
    issued_records: int = 0
    batches: int = 0
    local_traded_wh: int = 0
    exported_wh: int = 0
    imported_wh: int = 0
    exported_to: dict[str, int] = field(default_factory=dict)
    imported_from: dict[str, int] = field(default_factory=dict)
    transfers_out: dict[str, int] = field(default_factory=dict)
    claims: int = 0
    claimed_wh: int = 0
    claimed_imported_wh: int = 0
    retired_wh: int = 0
    active_wh: int = 0
    synced_records: int = 0
    synced_from: dict[str, dict[str, int]] = field(default_factory=dict)
    hourly_consumption: list[int] = field(default_factory=list)
    hourly_claimed: list[int] = field(default_factory=list)
    #: issued + imported == active (incl. export pending) + retired + exported, on this node.
    balanced: bool = False

    @property
    def hourly_cfe(self) -> list[float]:
        """Share of each hour's consumption matched by claims of that hour."""
        return [
            min(1.0, c / d) if d else 1.0
            for c, d in zip(self.hourly_claimed, self.hourly_consumption, strict=True)
        ]

    @property
    def cfe_score(self) -> float:
        """Google's 24/7 CFE score: hourly matched carbon-free Wh over consumed Wh."""
        matched = sum(
            min(c, d) for c, d in zip(self.hourly_claimed, self.hourly_consumption, strict=True)
        )
        return matched / self.consumed_wh if self.consumed_wh else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "cfe_score": round(self.cfe_score, 4),
            "hourly_cfe": [round(x, 4) for x in self.hourly_cfe],
        }


@dataclass
class DemoReport:
    day: str
    seed: int
    nodes: list[NodeReport]
    #: ``eap.node.federation.audit.report_dict`` of the RunAudit at the end of the run.
    audit: dict[str, Any]
    replays: dict[str, int]
    unsettled: list[str]
    #: The settlement round that closed the day (gross, net, efficiency, digest, ok).
    settlement: dict[str, Any] = field(default_factory=dict)
    #: ``--chain``: batch anchors and settlement transactions on the shared chain.
    chain: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    workdir: str | None = None
    #: City name -> path of its customer's hourly matching report (HTML), when written.
    reports: dict[str, str] = field(default_factory=dict)

    @property
    def conserved(self) -> bool:
        return bool(self.audit["ok"]) and all(n.balanced for n in self.nodes)

    @property
    def ok(self) -> bool:
        return (
            self.conserved
            and not self.unsettled
            and self.replays.get("same_result", 0) == self.replays.get("sent", 0)
            and bool(self.settlement.get("ok"))
            and bool(self.chain.get("ok", True))
        )

    def to_dict(self) -> dict[str, Any]:
        out = {
            "day": self.day,
            "seed": self.seed,
            "seconds": round(self.seconds, 2),
            "workdir": self.workdir,
            "reports": self.reports,
            "ok": self.ok,
            "conserved": self.conserved,
            "nodes": [n.to_dict() for n in self.nodes],
            "audit": self.audit,
            "settlement": self.settlement,
            "replays": self.replays,
            "unsettled": self.unsettled,
        }
        if self.chain:
            out["chain"] = self.chain
        return out


# -- the run --------------------------------------------------------------------------------------


@dataclass
class _Held:
    """A bundle the demo tracks: id, Wh and the hour of the day it was generated in."""

    id: str
    wh: int
    hour: int
    source: int = 0


@dataclass
class _CityState:
    plan: CityPlan
    node: LocalNode
    coop: str = ""
    retailer: str = ""
    consumer: str = ""
    batches: int = 0
    #: hour -> the co-op's unsold bundles; the retailer's bought and imported bundles.
    unsold: dict[int, list[_Held]] = field(default_factory=lambda: defaultdict(list))
    bought: dict[int, list[_Held]] = field(default_factory=lambda: defaultdict(list))
    imported: dict[int, list[_Held]] = field(default_factory=lambda: defaultdict(list))
    local_traded_wh: int = 0
    transfers_out: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    claims: int = 0
    claimed_imported_wh: int = 0
    hourly_claimed: list[int] = field(default_factory=lambda: [0] * HOURS)


Progress = Callable[[str], None]


class DemoRun:
    """One run of the demo over a :class:`LocalFederation` (see the module docstring)."""

    def __init__(
        self, net: LocalFederation, plans: list[CityPlan], *, progress: Progress | None = None
    ) -> None:
        from eap.v1 import federation_pb2, node_api_pb2, types_pb2

        self.api, self.pb, self.fed = node_api_pb2, types_pb2, federation_pb2
        self.net = net
        self.cities = {p.city.node_id: _CityState(p, net[p.city.node_id]) for p in plans}
        self.progress = progress or (lambda what: None)
        self.pool = ThreadPoolExecutor(max_workers=len(plans), thread_name_prefix="eap-demo")
        self.replays = {"sent": 0, "same_result": 0}
        self.pending_imports: list[tuple[str, _Held, str]] = []
        self._lock = threading.Lock()

    def each(self, fn: Callable[[_CityState], Any]) -> list[Any]:
        """``fn`` for every city at once (each node is its own process)."""
        return [f.result() for f in [self.pool.submit(fn, c) for c in self.cities.values()]]

    # -- set-up -----------------------------------------------------------------------------------

    def setup(self, c: _CityState) -> None:
        api, pb, plan = self.api, self.pb, c.plan
        stub = c.node.api()

        def new(rid: str, label: str) -> str:
            return stub.CreateAccount(
                api.CreateAccountRequest(request_id=rid, label=label)
            ).account.id

        c.coop = new("acct-coop", f"{plan.city.name} energy co-op")
        c.retailer = new("acct-retailer", f"{plan.city.name} retailer")
        c.consumer = new("acct-consumer", f"{plan.city.name} customer ({plan.consumption_source})")
        for peer in self.cities:  # how much each peer's retailers may owe this node's co-op
            if peer != plan.city.node_id:
                stub.SetPeerLimits(api.SetPeerLimitsRequest(
                    peer=peer, currency=EXPORT_PRICE[0], credit_limit_minor=PEER_CREDIT_LIMIT))
        for kind, source, tech, ref in (
            ("solar", pb.ENERGY_SOURCE_SOLAR, pb.TECHNOLOGY_PHOTOVOLTAIC, "solar-park-1"),
            ("wind", pb.ENERGY_SOURCE_WIND, pb.TECHNOLOGY_ONSHORE_WIND, "wind-farm-1"),
        ):
            stub.RegisterDevice(
                api.RegisterDeviceRequest(
                    request_id=f"device-{kind}",
                    device=pb.Device(
                        local_ref=ref,
                        capacity_w=plan.capacity_w[kind],
                        source=source,
                        technology=tech,
                        commissioned_on="2019-03-01",
                        latitude=plan.city.lat + 0.02,
                        longitude=plan.city.lon - 0.02,
                        zone=plan.city.zone,
                        owner=c.coop,
                        meter_id=plan.meter(kind),
                    ),
                    attestation=pb.Attestation(
                        scheme="operator-signed", evidence=f"{ref} grid connection agreement"
                    ),
                )
            )

    # -- one quarter ------------------------------------------------------------------------------

    def issue(self, c: _CityState, hours: range) -> None:
        api, stub = self.api, c.node.api()
        q = hours.start // len(hours)
        stub.ImportReadings(
            api.ImportReadingsRequest(
                request_id=f"meter-q{q}",
                format="csv",
                content=c.plan.meter_csv(hours),
                filename=f"{c.plan.city.node_id}-q{q}.csv",
            )
        )
        res = stub.IssueRecords(api.IssueRecordsRequest(request_id=f"issue-q{q}"))
        if res.batch_seq:
            c.batches += 1
        for b in self._list(stub, owner=c.coop, status=self.pb.BUNDLE_STATUS_ACTIVE):
            h = (b.attributes.interval.start_unix - c.plan.day) // 3600
            if h in hours:
                c.unsold[h].append(_Held(b.id, _wh(b), h, b.attributes.source))
        for h in hours:  # solar first: the wind farm keeps what the sun covers
            c.unsold[h].sort(key=lambda x: (x.source != self.pb.ENERGY_SOURCE_SOLAR, x.id))

    def wait_synced(self) -> None:
        """Until every node holds every peer's batches issued so far (synced by the nodes)."""
        from eap.node.store import peer_repos

        want = {n: c.batches for n, c in self.cities.items()}

        def done() -> bool:
            for c in self.cities.values():
                with c.node.store().read() as conn:
                    got = peer_repos.peer_totals(conn)
                if any(got.get(p, (0,))[0] < k for p, k in want.items() if p != c.node.node_id):
                    return False
            return True

        self.net.wait_until(done, 60, "the nodes to sync each other's batches", interval=0.05)

    def sell_locally(self, c: _CityState, hours: range) -> None:
        """The co-op sells its retailer the hour's consumption (solar first, splitting)."""
        stub = c.node.api()
        for h in hours:
            need = c.plan.demand[h]
            keep: list[_Held] = []
            for b in c.unsold[h]:
                take = min(need, b.wh)
                if take <= 0:
                    keep.append(b)
                    continue
                currency, per_kwh = LOCAL_PRICE[c.plan.city.zone]
                res = stub.TransferBundle(
                    self.api.TransferBundleRequest(
                        request_id=f"sell-{b.id}",
                        bundle_id=b.id,
                        to_account=c.retailer,
                        wh=0 if take == b.wh else take,
                        price_minor=price_minor(take, per_kwh),
                        currency=currency,
                    )
                )
                c.bought[h].append(_Held(res.transferred.id, _wh(res.transferred), h))
                if res.HasField("remainder"):
                    keep.append(_Held(res.remainder.id, _wh(res.remainder), h, b.source))
                c.local_traded_wh += take
                need -= take
            c.unsold[h] = keep

    def export(self, c: _CityState, hours: range) -> None:
        """Surplus to the next city's retailer for the hours it is short (exactly once)."""
        fed = self.fed
        dest = self.cities[c.plan.city.sells_to]
        stub = c.node.api()
        for h in hours:
            need = dest.plan.deficit(h)
            keep: list[_Held] = []
            for b in c.unsold[h]:
                take = min(need, b.wh)
                if take <= 0:
                    keep.append(b)
                    continue
                req = self.api.TransferBundleRequest(
                    request_id=f"export-{b.id}",
                    bundle_id=b.id,
                    to_account=f"{dest.plan.city.node_id}/{dest.coop}",
                    wh=0 if take == b.wh else take,
                    price_minor=price_minor(take, EXPORT_PRICE[1]),
                    currency=EXPORT_PRICE[0],
                )
                res = stub.TransferBundle(req)
                if not c.transfers_out:  # the first one is sent twice: a replay moves nothing
                    again = stub.TransferBundle(req)
                    same = (again.transfer.id, again.transferred.id) == (
                        res.transfer.id,
                        res.transferred.id,
                    )
                    with self._lock:
                        self.replays["sent"] += 1
                        self.replays["same_result"] += int(same)
                t = res.transfer
                if res.HasField("remainder"):
                    keep.append(_Held(res.remainder.id, _wh(res.remainder), h, b.source))
                if t.state == fed.TRANSFER_STATE_ABORTED:
                    c.transfers_out["aborted"] += 1
                    keep.append(_Held(res.transferred.id, take, h, b.source))
                    continue
                c.transfers_out["partial" if res.HasField("remainder") else "whole"] += 1
                got = _Held(res.transferred.id, take, h)
                dest.imported[h].append(got)
                if not t.settled:  # the node's worker finishes it; claims wait for it
                    with self._lock:
                        self.pending_imports.append((dest.plan.city.node_id, got, t.id))
                need -= take
            c.unsold[h] = keep

    def wait_imports(self) -> None:
        """Until every committed import of this quarter is live at its destination."""
        pending, self.pending_imports = self.pending_imports, []
        for node_id, held, _ in pending:
            live = functools.partial(self._is_live, self.cities[node_id].node, held.id)
            self.net.wait_until(live, 60, f"import of {held.id} on {node_id}")

    def _is_live(self, node: LocalNode, bundle_id: str) -> bool:
        b = node.api().GetBundle(
            self.api.GetBundleRequest(id=bundle_id, purpose=self.api.READ_PURPOSE_OPERATIONS)
        )
        return b.status == self.pb.BUNDLE_STATUS_ACTIVE

    def claim(self, c: _CityState, hours: range) -> None:
        """The retailer claims, hour by hour, what it holds for the hour, for its customer."""
        stub = c.node.api()
        currency, per_kwh = LOCAL_PRICE[c.plan.city.zone]
        for h in hours:
            start = c.plan.day + 3600 * h
            for held in c.imported[h]:  # the co-op imported it; its retailer buys it on
                stub.TransferBundle(
                    self.api.TransferBundleRequest(
                        request_id=f"resell-{held.id}",
                        bundle_id=held.id,
                        to_account=c.retailer,
                        price_minor=price_minor(held.wh, per_kwh),
                        currency=currency,
                    )
                )
            for held, imported in [(b, False) for b in c.bought[h]] + [
                (b, True) for b in c.imported[h]
            ]:
                stub.RetireBundle(
                    self.api.RetireBundleRequest(
                        request_id=f"claim-{held.id}",
                        bundle_id=held.id,
                        beneficiary=c.consumer,
                        purpose=CLAIM_PURPOSE,
                        consumption=self.pb.Interval(start_unix=start, end_unix=start + 3600),
                        consumption_zone=c.plan.city.zone,
                    )
                )
                c.claims += 1
                c.hourly_claimed[h] += held.wh
                if imported:
                    c.claimed_imported_wh += held.wh

    def quarter(self, q: int) -> None:
        hours = range(q * HOURS // QUARTERS, (q + 1) * HOURS // QUARTERS)
        span = f"{hours.start:02d}:00-{hours.stop:02d}:00 UTC"
        self.progress(f"{span}: metering and issuance on every node")
        self.each(lambda c: self.issue(c, hours))
        self.progress(f"{span}: nodes sync each other's signed batches")
        self.wait_synced()
        self.progress(f"{span}: co-ops sell to their local retailers")
        self.each(lambda c: self.sell_locally(c, hours))
        self.progress(f"{span}: surplus crosses borders (exactly-once transfers)")
        self.each(lambda c: self.export(c, hours))
        self.wait_imports()
        self.progress(f"{span}: hourly claims for each city's customer")
        self.each(lambda c: self.claim(c, hours))

    def run(self) -> None:
        self.progress("handshakes between the three nodes")
        self.net.wait_for_handshakes()
        self.each(self.setup)
        for q in range(QUARTERS):
            self.quarter(q)
        self.progress("every transfer settled on both sides")
        self.net.wait_until(
            lambda: not unsettled_transfers(self.net), 60, "cross-node transfers to settle"
        )

    def settle(self, coordinator: str, periods: list[str]) -> dict[str, Any]:
        """The day's settlement: a round per period on ``coordinator`` (``RunSettlement``),
        then every node's view of it until each has executed its side of the payments."""
        stub = self.cities[coordinator].node.api()
        rounds = [
            stub.RunSettlement(self.api.RunSettlementRequest(request_id=f"settle-{p}", period=p))
            for p in periods
        ]
        problems = [f"{r.round_id}: {x}" for r in rounds for x in r.problems]
        final = [r for r in rounds if r.state in ("final", "settled")]

        def executed() -> bool:
            for c in self.cities.values():
                for r in final:
                    got = c.node.api().GetSettlementRound(
                        self.api.GetSettlementRoundRequest(round_id=r.round_id))
                    if any(i.state == "pending" for i in got.instructions):
                        return False
            return True

        settled = bool(final) and len(final) == len(rounds)
        if settled:
            try:
                self.net.wait_until(executed, 60, "every node to execute its payments")
            except Exception as exc:  # reported, and the demo fails
                settled = False
                problems.append(str(exc))
        gross: dict[str, int] = defaultdict(int)
        net: dict[str, int] = defaultdict(int)
        for r in rounds:
            for cur in r.currencies:
                gross[cur.currency] += cur.gross_minor
                net[cur.currency] += cur.net_minor
        return {
            "rounds": [r.round_id for r in rounds],
            "periods": periods,
            "coordinator": coordinator,
            "gross": dict(sorted(gross.items())),
            "net": dict(sorted(net.items())),
            "efficiency": {k: round(1 - net[k] / gross[k], 4) if gross[k] else 0.0
                           for k in sorted(gross)},
            "digest": rounds[0].digest if len(rounds) == 1 else [r.digest for r in rounds],
            "instructions": sum(len(r.instructions) for r in rounds),
            "held_out": sum(len(r.held_out) for r in rounds),
            "signed_by": sorted({n for r in rounds for n in r.signed_by}),
            "problems": problems,
            "ok": settled and not problems and not any(r.held_out for r in rounds),
        }

    def matching_reports(self, folder: Path) -> dict[str, str]:
        """Each city's customer: its claims matched against its Green Button load, asked of
        its node over the API and written as one HTML file per city into ``folder``."""
        from eap.node.api.convert import matching_report_from
        from eap.node.report_html import render

        folder.mkdir(parents=True, exist_ok=True)
        written = {}
        for c in self.cities.values():
            day = c.plan.day
            msg = c.node.api().GetMatchingReport(
                self.api.GetMatchingReportRequest(
                    account=c.consumer,
                    start_unix=day,
                    end_unix=day + 3600 * HOURS,
                    load=[
                        self.api.HourlyLoad(hour_unix=day + 3600 * h, wh=wh)
                        for h, wh in enumerate(c.plan.demand)
                    ],
                    zone=c.plan.city.zone,
                )
            )
            path = folder / f"{c.plan.city.node_id.split('.')[0]}-customer.html"
            path.write_text(render(matching_report_from(msg)), encoding="utf-8")
            written[c.plan.city.name] = str(path)
        return written

    def statuses(self) -> dict[str, Any]:
        return {
            n: c.node.api().GetStatus(self.api.GetStatusRequest()) for n, c in self.cities.items()
        }

    def close(self) -> None:
        # Not waiting: on an interrupt, calls in flight fail once the nodes are stopped.
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _list(self, stub: Any, **filters: Any) -> list[Any]:
        out, token = [], ""
        while True:
            page = stub.ListBundles(
                self.api.ListBundlesRequest(
                    purpose=self.api.READ_PURPOSE_OPERATIONS,
                    page_size=1000,
                    page_token=token,
                    **filters,
                )
            )
            out += page.bundles
            token = page.next_page_token
            if not token:
                return out


def price_minor(wh: int, per_kwh_minor: int) -> int:
    """Integer minor units for ``wh`` Wh at ``per_kwh_minor`` per kWh (rounded up, at least 1)."""
    return max(1, -(-wh * per_kwh_minor // 1000))


def _wh(b: Any) -> int:
    return int(b.serial_end - b.serial_start)


# -- checks over the nodes' databases -------------------------------------------------------------


def unsettled_transfers(net: LocalFederation) -> list[str]:
    """Transfers not final on some node, or whose decision the peer has not acknowledged."""
    from eap.node.federation.transfers import FINAL
    from eap.node.store import transfer_repos as tr

    out = []
    for n in net:
        with n.store().read() as conn:
            for r in tr.list_transfers(conn, direction=None, state=None, after=None, limit=1000):
                if r.state not in FINAL or tr.outbox_unacked(conn, r.id):
                    out.append(f"{n.node_id}: {r.id} {r.state}")
    return out


def audit_report(node: LocalNode) -> dict[str, Any]:
    """The federation audit run by ``node`` through its local API (``RunAudit``): every node's
    signed holdings statement, gathered over the federation protocol and reconciled."""
    from eap.node.federation.audit import report_dict
    from eap.v1 import node_api_pb2

    return report_dict(node.api().RunAudit(node_api_pb2.RunAuditRequest()))


def node_reports(run: DemoRun, statuses: dict[str, Any]) -> list[NodeReport]:
    from eap.node.store import peer_repos
    from eap.node.store import transfer_repos as tr

    reports = []
    for node_id, c in run.cities.items():
        st = statuses[node_id]
        with c.node.store().read() as conn:
            synced = peer_repos.peer_totals(conn)
            records = len(tr.issued_ranges(conn, node_id))
            moved = tr.list_transfers(
                conn, direction=None, state="committed", after=None, limit=10_000
            )
        exported_to: dict[str, int] = defaultdict(int)
        imported_from: dict[str, int] = defaultdict(int)
        for t in moved:
            (exported_to if t.direction == tr.OUT else imported_from)[t.peer] += int(t.wh)
        r = NodeReport(
            node_id=node_id,
            city=c.plan.city.name,
            zone=c.plan.city.zone,
            consumption_source=c.plan.consumption_source,
            consumer=c.consumer,
            consumed_wh=sum(c.plan.demand),
            produced_wh=int(st.wh_metered),
            issued_wh=int(st.wh_issued),
            issued_records=records,
            batches=c.batches,
            local_traded_wh=c.local_traded_wh,
            exported_wh=int(st.wh_exported),
            imported_wh=int(st.wh_imported),
            exported_to=dict(exported_to),
            imported_from=dict(imported_from),
            transfers_out=dict(c.transfers_out),
            claims=c.claims,
            claimed_wh=sum(c.hourly_claimed),
            claimed_imported_wh=c.claimed_imported_wh,
            retired_wh=int(st.wh_retired),
            active_wh=int(st.wh_active),
            synced_records=sum(v[1] for v in synced.values()),
            synced_from={
                p: {"batches": v[0], "records": v[1], "wh": v[2]} for p, v in sorted(synced.items())
            },
            hourly_consumption=list(c.plan.demand),
            hourly_claimed=list(c.hourly_claimed),
        )
        r.balanced = st.wh_issued + st.wh_imported == st.wh_active + st.wh_retired + st.wh_exported
        reports.append(r)
    return reports


# -- on a chain (--chain) ------------------------------------------------------------------------


def start_chain(root: Path, net: LocalFederation) -> Any:
    """An in-process EVM chain served on loopback, the contracts deployed, and every node's
    home given a funded, authorised signer key and ``[evm]`` settings pointing at it."""
    from eap.node.federation.localnet import merge_settings
    from eap.plugins.evm_devchain import DevChain

    dev = DevChain()
    url = dev.serve()
    owner = root / "chain-owner-key"
    dev.new_key(owner)
    dev.deploy(owner)
    for n in net:
        dev.authorise(dev.new_key(n.home / "evm-key"))
        merge_settings(n.home, "evm", dev.settings("evm-key", url=url))
        merge_settings(n.home, "settlement", {"backend": "evm"})
    return dev


def chain_report(dev: Any, net: LocalFederation, settlement: dict[str, Any]) -> dict[str, Any]:
    """What the chain holds: each node's anchored batch roots (checked against the batches in
    its database) and the settlement transactions, with their hashes."""
    from eap.node.store import repos
    from eap.plugins import evm

    def tx(ev: Any) -> str:
        return "0x" + bytes(ev["transactionHash"]).hex().removeprefix("0x")

    by_issuer = {evm.issuer_hash(n.node_id): n for n in net}
    anchors, problems = [], []
    for ev in dev.events("AnchorRegistry", "Anchored"):
        node = by_issuer.get(bytes(ev["args"]["issuer"]))
        if node is None:
            continue
        seq, root = int(ev["args"]["seq"]), bytes(ev["args"]["root"])
        with node.store().read() as conn:
            rows = repos.batches_after(conn, seq - 1, 1)
        held = bytes(rows[0].merkle_root) if rows and int(rows[0].seq) == seq else None
        if held != root:
            problems.append(f"{node.node_id} batch {seq}: chain root differs from the node's")
        anchors.append({"node": node.node_id, "seq": seq, "root": root.hex(), "tx": tx(ev),
                        "verified": held == root})
    batches = 0
    for n in net:
        with n.store().read() as conn:
            batches += len(repos.batches_after(conn, 0, 100_000))
    if len(anchors) != batches:
        problems.append(f"{len(anchors)} of {batches} batches anchored")
    payments = [{"instruction": "0x" + bytes(ev["args"]["instruction_id"]).hex(),
                 "currency": bytes(ev["args"]["currency"]).rstrip(b"\0").decode(),
                 "amount_minor": int(ev["args"]["amount"]), "tx": tx(ev)}
                for ev in dev.events("SettlementLedger", "Settled")]
    if settlement.get("ok") and len(payments) != settlement.get("instructions", 0):
        problems.append(f"{len(payments)} settlement transactions for "
                        f"{settlement.get('instructions')} instructions")
    return {
        "chain_id": dev.chain_id,
        "rpc_url": dev.server and f"http://127.0.0.1:{dev.server.server_address[1]}",
        "contracts": dict(dev.contracts),
        "block": int(dev.w3.eth.block_number),
        "anchors": sorted(anchors, key=lambda a: (a["node"], a["seq"])),
        "settlements": payments,
        "problems": problems,
        "ok": not problems,
    }


# -- entry point ----------------------------------------------------------------------------------


def parse_day(day: str) -> int:
    try:
        d = dt.date.fromisoformat(day)
    except ValueError:
        raise InvalidArgument(f"--day {day!r} is not an ISO date like {DEFAULT_DAY}") from None
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp())


def run_demo(
    workdir: Path | None = None,
    *,
    seed: int = 7,
    day: str = DEFAULT_DAY,
    keep: bool = False,
    progress: Progress | None = None,
    cities: tuple[City, ...] = CITIES,
    chain: bool = False,
    reports: Path | None = None,
) -> DemoReport:
    """Run the demo; every node process is stopped when this returns or raises.

    Args:
        workdir: where the CA, homes and logs go (kept); default a temporary folder, removed
            afterwards unless ``keep``.
        progress: called with a description at each of :data:`TOTAL_STEPS` steps.
        chain: run an in-process EVM chain (plugin ``evm``) served over JSON-RPC on
            loopback; every node anchors its batch roots there and settles through the
            ``evm`` backend; the report's ``chain`` lists the transactions.
        reports: folder for each city customer's hourly matching report (HTML, from the
            node's GetMatchingReport RPC); None writes none.
    """
    started = time.monotonic()
    step = progress or (lambda what: None)
    day_s = parse_day(day)
    own = workdir is None
    root = Path(tempfile.mkdtemp(prefix="eap-demo-")) if own else Path(workdir)
    if not own and root.exists() and any(root.iterdir()):
        raise FailedPrecondition(f"--workdir {root} is not empty; give a new or empty folder")
    net: LocalFederation | None = None
    run: DemoRun | None = None
    dev: Any = None
    try:
        step("demo CA, three node homes, certificates, descriptors, trust lists")
        plans = [plan_city(c, day_s, seed) for c in cities]
        net = LocalFederation.create(
            root,
            [(c.node_id, c.zone) for c in cities],
            federation=FEDERATION_SETTINGS,
            transfers=TRANSFER_SETTINGS,
            settings=LEDGER_SETTINGS,
        )
        if chain:
            dev = start_chain(root, net)
        step("starting the nodes: three `eap-node serve` processes on loopback")
        net.start()
        run = DemoRun(net, plans, progress=step)
        first_day = time.strftime("%Y-%m-%d", time.gmtime())
        run.run()
        periods = sorted({first_day, time.strftime("%Y-%m-%d", time.gmtime())})
        coordinator = cities[-1].node_id
        step(f"settling the day's trades: a settlement round run by {coordinator} (signed "
             "views, multilateral netting, signed statement, payments)")
        settlement = run.settle(coordinator, periods)
        statuses = run.statuses()
        auditor = net[cities[0].node_id]
        step(f"auditing the federation's books: RunAudit on {auditor.node_id} (signed holdings "
             "statements of every node)")
        audit = audit_report(auditor)
        on_chain = chain_report(dev, net, settlement) if dev is not None else {}
        step("hourly matching reports for each city's customer (GetMatchingReport)")
        written = run.matching_reports(reports) if reports is not None else {}
        step("stopping the nodes")
        net.stop()
        report = DemoReport(
            day=day,
            seed=seed,
            nodes=node_reports(run, statuses),
            audit=audit,
            settlement=settlement,
            chain=on_chain,
            replays=run.replays,
            unsettled=unsettled_transfers(net),
            workdir=str(root) if (keep or not own) else None,
            reports=written,
        )
        report.seconds = time.monotonic() - started
        return report
    finally:
        if run is not None:
            run.close()
        if net is not None:
            net.stop()
        if dev is not None:
            dev.close()
        if own and not keep:
            shutil.rmtree(root, ignore_errors=True)
