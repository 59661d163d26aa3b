"""Hourly matching and Scope 2 carbon accounting for one consumer (``eap-node report``).

A consumer's claims (records retired with it as beneficiary, or from its own account) are
matched hour by hour against its load: the load of a Green Button or CSV file, or, without
one, the consumption the claims themselves name.  For each hour of the report:

* **supply**: Wh of the consumer's claimed records generated in that hour, split into
  carbon-free (:data:`CARBON_FREE`) and other sources;
* **24/7 carbon-free score**: ``min(carbon-free supply, load) / load`` for the hour, and over
  the period the load-weighted average ``Σ min(cfe, load) / Σ load`` (the hourly matching
  definition used for 24/7 carbon-free energy);
* **market-based emissions** (GHG Protocol Scope 2 guidance): claimed records applied to the
  hour's load, lowest intensity first, at their own carbon intensity; load they do not cover
  at the **residual mix** of the zone and hour, the Wh-weighted intensity of the records of
  that zone and hour that nobody claimed (falling back to the zone's residual over the period,
  then to the location-based figure, and saying which in ``residual_basis``);
* **location-based emissions**: the whole load at the average intensity of every record
  issued in the zone and hour.

Intensities are mg CO2e per kWh (the records' unit); emissions are grams
(``Wh x mg/kWh / 10⁶``).  The pool of records is what this node knows: its own issuance and
the peers' records it synced (docs/reporting.md says what that means for the residual mix).

:func:`compute` is pure (and property-tested); :func:`build` gathers its inputs from a node's
store.  Reads need the operator or the consumer account itself.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from eap.node.records.enums import Source

HOUR = 3600

#: Sources counted as carbon-free energy for the 24/7 score (no combustion at the point of
#: generation).  Biomass and storage are not: storage only shifts energy in time.
CARBON_FREE = frozenset(
    {Source.SOLAR, Source.WIND, Source.HYDRO, Source.NUCLEAR, Source.GEOTHERMAL, Source.MARINE}
)

#: Longest period one report may cover (a year and a day, in hours).
MAX_HOURS = 366 * 24


@dataclass(frozen=True)
class ClaimedRecord:
    """One claim of the consumer, reduced to what matching needs."""

    hour: int
    wh: int
    source: int
    carbon_mg: int
    zone: str
    issuer: str
    consumption_start: int = 0
    consumption_end: int = 0


@dataclass(frozen=True)
class PoolStats:
    """Records of one zone and hour: every issued one, and those nobody claimed.

    ``*_mgwh`` are Σ Wh x intensity, so an average intensity is ``mgwh / wh``."""

    issued_wh: int = 0
    issued_mgwh: int = 0
    unclaimed_wh: int = 0
    unclaimed_mgwh: int = 0


@dataclass
class HourRow:
    """The figures of one hour (``hour`` = start, unix seconds UTC)."""

    hour: int
    load_wh: int
    claimed_wh: int
    cfe_wh: int
    matched_cfe_wh: int
    cfe_score: float
    market_g: float
    location_g: float
    residual_mg_per_kwh: float
    location_mg_per_kwh: float
    residual_basis: str


@dataclass
class Flow:
    """Claimed Wh that came from records issued by ``source`` node to the consumer's node."""

    source: str
    target: str
    wh: int


@dataclass
class MatchingReport:
    """A consumer's hourly matching over ``[start, end)`` (see the module docstring)."""

    node_id: str
    subject: str
    zone: str
    start: int
    end: int
    load_basis: str
    hours: list[HourRow] = field(default_factory=list)
    flows: list[Flow] = field(default_factory=list)

    # -- totals ------------------------------------------------------------------------------

    @property
    def load_wh(self) -> int:
        return sum(h.load_wh for h in self.hours)

    @property
    def claimed_wh(self) -> int:
        return sum(h.claimed_wh for h in self.hours)

    @property
    def matched_cfe_wh(self) -> int:
        return sum(h.matched_cfe_wh for h in self.hours)

    @property
    def cfe_score(self) -> float:
        """Load-weighted 24/7 score over the period: Σ min(cfe, load) / Σ load."""
        load = self.load_wh
        return self.matched_cfe_wh / load if load else 0.0

    @property
    def market_g(self) -> float:
        return sum(h.market_g for h in self.hours)

    @property
    def location_g(self) -> float:
        return sum(h.location_g for h in self.hours)

    def by_hour_of_day(self) -> list[float]:
        """Load-weighted score per UTC hour of day (0..23); 0 where there was no load."""
        matched, load = [0] * 24, [0] * 24
        for h in self.hours:
            i = (h.hour // HOUR) % 24
            matched[i] += h.matched_cfe_wh
            load[i] += h.load_wh
        return [m / d if d else 0.0 for m, d in zip(matched, load, strict=True)]

    def by_day(self) -> list[dict[str, Any]]:
        """Per UTC day: load, matched carbon-free Wh, score and both emissions figures."""
        days: dict[str, dict[str, Any]] = {}
        for h in self.hours:
            day = dt.datetime.fromtimestamp(h.hour, dt.UTC).strftime("%Y-%m-%d")
            d = days.setdefault(
                day,
                {"day": day, "load_wh": 0, "matched_cfe_wh": 0, "market_g": 0.0, "location_g": 0.0},
            )
            d["load_wh"] += h.load_wh
            d["matched_cfe_wh"] += h.matched_cfe_wh
            d["market_g"] += h.market_g
            d["location_g"] += h.location_g
        for d in days.values():
            d["cfe_score"] = d["matched_cfe_wh"] / d["load_wh"] if d["load_wh"] else 0.0
        return list(days.values())

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data: the same figures the HTML plots."""
        return {
            "node_id": self.node_id,
            "subject": self.subject,
            "zone": self.zone,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "load_basis": self.load_basis,
            "carbon_free_sources": sorted(Source(s).name for s in CARBON_FREE),
            "summary": {
                "load_wh": self.load_wh,
                "claimed_wh": self.claimed_wh,
                "matched_cfe_wh": self.matched_cfe_wh,
                "cfe_score": self.cfe_score,
                "mean_hourly_cfe_score": (
                    sum(h.cfe_score for h in self.hours if h.load_wh)
                    / max(1, sum(1 for h in self.hours if h.load_wh))
                ),
                "market_based_g": self.market_g,
                "location_based_g": self.location_g,
            },
            "hours": [{**asdict(h), "hour": _iso(h.hour)} for h in self.hours],
            "score_by_hour_of_day": self.by_hour_of_day(),
            "days": self.by_day(),
            "flows": [asdict(f) for f in self.flows],
        }


def _iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _grams(wh: int, mg_per_kwh: float) -> float:
    return wh * mg_per_kwh / 1_000_000


def compute(
    *,
    node_id: str,
    subject: str,
    zone: str,
    start: int,
    end: int,
    load: Mapping[int, int] | None,
    claims: Iterable[ClaimedRecord],
    pool: Mapping[int, PoolStats],
) -> MatchingReport:
    """Match ``claims`` against ``load`` (Wh by hour start) over ``[start, end)``.

    Without ``load``, each claim's Wh counts as load over the hours of its consumption
    interval (spread evenly, remainders to the first hours).  ``pool`` holds the zone's
    records by hour for the residual mix and the location-based average."""
    claims = [c for c in claims if start <= c.hour < end]
    basis = "file" if load is not None else "claims"
    if load is None:
        load = _load_from_claims(claims)
    by_hour: dict[int, list[ClaimedRecord]] = defaultdict(list)
    for c in claims:
        by_hour[c.hour].append(c)
    period_unclaimed = sum(p.unclaimed_wh for p in pool.values())
    period_mgwh = sum(p.unclaimed_mgwh for p in pool.values())
    period_residual = period_mgwh / period_unclaimed if period_unclaimed else None
    report = MatchingReport(node_id, subject, zone, start, end, basis)
    for hour in range(start, end, HOUR):
        demand = max(0, int(load.get(hour, 0)))
        held = sorted(by_hour.get(hour, ()), key=lambda c: c.carbon_mg)
        claimed = sum(c.wh for c in held)
        cfe = sum(c.wh for c in held if c.source in CARBON_FREE)
        matched = min(cfe, demand)
        stats = pool.get(hour, PoolStats())
        location_ci = stats.issued_mgwh / stats.issued_wh if stats.issued_wh else 0.0
        if stats.unclaimed_wh:
            residual_ci, basis_h = stats.unclaimed_mgwh / stats.unclaimed_wh, "zone-hour"
        elif period_residual is not None:
            residual_ci, basis_h = period_residual, "zone-period"
        elif stats.issued_wh:
            residual_ci, basis_h = location_ci, "location"
        else:
            residual_ci, basis_h = 0.0, "none"
        market, left = 0.0, demand
        for c in held:  # instruments applied to the load, lowest intensity first
            used = min(c.wh, left)
            market += _grams(used, c.carbon_mg)
            left -= used
        market += _grams(left, residual_ci)
        report.hours.append(
            HourRow(
                hour=hour,
                load_wh=demand,
                claimed_wh=claimed,
                cfe_wh=cfe,
                matched_cfe_wh=matched,
                cfe_score=matched / demand if demand else 0.0,
                market_g=market,
                location_g=_grams(demand, location_ci),
                residual_mg_per_kwh=residual_ci,
                location_mg_per_kwh=location_ci,
                residual_basis=basis_h,
            )
        )
    flows: dict[str, int] = defaultdict(int)
    for c in claims:
        flows[c.issuer] += c.wh
    report.flows = [Flow(src, node_id, wh) for src, wh in sorted(flows.items())]
    return report


def _load_from_claims(claims: list[ClaimedRecord]) -> dict[int, int]:
    load: dict[int, int] = defaultdict(int)
    for c in claims:
        first = c.consumption_start // HOUR * HOUR if c.consumption_end else c.hour
        last = (c.consumption_end - 1) // HOUR * HOUR if c.consumption_end else c.hour
        hours = list(range(first, last + 1, HOUR))
        share, extra = divmod(c.wh, len(hours))
        for i, h in enumerate(hours):
            load[h] += share + (1 if i < extra else 0)
    return dict(load)


def load_by_hour(intervals: Iterable[tuple[int, int, int]]) -> dict[int, int]:
    """Wh by UTC hour start from (start, end, Wh) intervals of a load file.  Intervals finer
    than an hour add up; an interval spanning hours is spread in proportion to its seconds."""
    load: dict[int, int] = defaultdict(int)
    for s, e, wh in intervals:
        if e <= s:
            continue
        span = e - s
        h, given = s // HOUR * HOUR, 0
        while h < e:
            part = min(e, h + HOUR) - max(s, h)
            share = wh * part // span if h + HOUR < e else wh - given
            load[h] += share
            given += share
            h += HOUR
    return dict(load)


def build(
    node: Any,
    *,
    account: str,
    start: int,
    end: int,
    load: Mapping[int, int] | None = None,
    zone: str = "",
    principal: Any = None,
) -> MatchingReport:
    """The report of ``account`` on ``node`` (a :class:`~eap.node.domain.node.Node`).

    ``start``/``end`` are rounded out to whole hours.  Without ``zone`` the zone is the one
    the claims name for their consumption (the most Wh), else the node's."""
    from eap.node.errors import FailedPrecondition, PermissionDenied, invalid
    from eap.node.records.models import Principal
    from eap.node.store import report_repos

    principal = principal or Principal.operator()
    if not account and load is None:
        raise invalid("account", "name an account, a load (consumption file), or both")
    if account and not principal.may_act_for(account):
        raise PermissionDenied("a report reads the claims of the operator or the account itself")
    start, end = start // HOUR * HOUR, -(-end // HOUR) * HOUR
    if end <= start:
        raise invalid("to", "must be after from")
    if (end - start) // HOUR > MAX_HOURS:
        raise invalid("to", f"a report covers at most {MAX_HOURS} hours")
    with node.store.read() as conn:
        claims = [
            ClaimedRecord(
                hour=int(h),
                wh=int(wh),
                source=int(src),
                carbon_mg=int(ci),
                zone=z,
                issuer=iss,
                consumption_start=int(cs),
                consumption_end=int(ce),
            )
            for h, wh, src, ci, z, iss, cs, ce in (
                report_repos.consumer_claims(conn, account, start, end) if account else ()
            )
        ]
        if account and claims:  # a consumer's hourly claims: personal, audit-logged
            node.audit_read(conn, principal, "matching", claims, [account])
        if not zone:
            by_zone: dict[str, int] = defaultdict(int)
            for c in claims:
                by_zone[c.zone] += c.wh
            zone = max(by_zone, key=by_zone.__getitem__) if by_zone else node.config.zone
        raw = report_repos.zone_pool(conn, node.node_id, zone, start, end)
    if account and not claims and load is None:
        raise FailedPrecondition(f"account {account} has no claims between those times")
    pool = {
        h: PoolStats(iw, imgwh, max(0, iw - cw), max(0, imgwh - cmgwh))
        for h, (iw, imgwh, cw, cmgwh) in raw.items()
    }
    return compute(
        node_id=node.node_id,
        subject=account or "load file",
        zone=zone,
        start=start,
        end=end,
        load=load,
        claims=claims,
        pool=pool,
    )


def claim_span(node: Any, account: str) -> tuple[int, int] | None:
    """Whole hours covering the claims made for ``account`` (None without any)."""
    from eap.node.store import report_repos

    with node.store.read() as conn:
        span = report_repos.claim_span(conn, account)
    return None if span is None else (span[0] // HOUR * HOUR, -(-span[1] // HOUR) * HOUR)
