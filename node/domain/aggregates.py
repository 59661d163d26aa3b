"""Regulator aggregates: Wh issued, transferred and claimed per zone, hour and source.

Who: the operator, and the regulator principal (``<home>/regulator-token``), with the
REGULATION purpose.  What comes out never isolates one household:

* **k-anonymity.** A cell (metric, hour, source) is published only when at least ``k`` distinct
  devices contributed to it and, for transferred and claimed Wh, at least ``k`` distinct senders
  (claimers) and ``k`` distinct receivers (transfers).  Other cells are listed with
  ``suppressed`` set and no Wh.  ``k`` defaults to ``[privacy] k_anonymity`` and may be raised per
  query, never lowered.  Totals add published cells only, so a suppressed cell cannot be
  recovered as a total minus the published cells.  Cells are fixed (whole hours, one zone, one
  source), so two queries over overlapping windows differ by whole cells, each either
  suppressed or made of ``k`` or more contributors.
* **Differential privacy (optional, ``epsilon`` > 0).** Each device-hour's contribution to a
  metric is clamped to ``min(capacity, bound_wh)`` (``bound_wh`` public, default
  :data:`DEFAULT_BOUND_WH`), so one device-hour changes one cell of each metric by at most
  ``bound_wh`` (L1 sensitivity).  Each metric's vector of published cells gets OpenDP's
  discrete Laplace noise (``make_laplace`` over integers) with scale ``bound_wh / (epsilon /
  3)``: the three metrics together are ``epsilon``-DP for one device-hour (basic
  composition).  The suppression decision is made on exact counts, as in most released
  statistics; see ``docs/aggregates.md`` for what that leaves.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from eap.node.domain.rules import ZONE_RE, Checker
from eap.node.errors import FailedPrecondition
from eap.node.records.enums import Source
from eap.node.store import Store
from eap.node.store import aggregate_repos as ag

METRICS = ("issued", "transferred", "claimed")
#: Default public bound of one device-hour's contribution under DP (a 10 kW installation).
DEFAULT_BOUND_WH = 10_000
#: Longest window one query may cover (a leap year of hours).
MAX_WINDOW_S = 366 * 24 * 3600
MIN_EPSILON, MAX_EPSILON = 0.01, 10.0
MECHANISM = "discrete Laplace (OpenDP make_laplace), L1 sensitivity bound_wh per metric"


@dataclass(frozen=True)
class Cell:
    """One published or suppressed cell."""

    metric: str
    hour: int
    source: int
    wh: int | None  # None when suppressed
    suppressed: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "hour_start_unix": self.hour,
            "source": Source(self.source).name.lower(),
            "wh": self.wh,
            "suppressed": self.suppressed,
        }


@dataclass
class Report:
    """Aggregates of one zone and window."""

    zone: str
    start: int
    end: int
    k: int
    epsilon: float
    bound_wh: int
    mechanism: str
    noise_scale: float
    cells: list[Cell] = field(default_factory=list)

    @property
    def suppressed(self) -> int:
        return sum(c.suppressed for c in self.cells)

    def totals(self) -> dict[str, int]:
        """Wh per metric over published cells only."""
        out = dict.fromkeys(METRICS, 0)
        for c in self.cells:
            if not c.suppressed:
                out[c.metric] += c.wh or 0
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "zone": self.zone,
            "from_unix": self.start,
            "to_unix": self.end,
            "k": self.k,
            "epsilon": self.epsilon,
            "bound_wh": self.bound_wh,
            "mechanism": self.mechanism,
            "noise_scale": self.noise_scale,
            "suppressed_cells": self.suppressed,
            "totals_published_wh": self.totals(),
            "cells": [c.as_dict() for c in self.cells],
        }


def check_query(
    zone: str, start: int, end: int, k: int, epsilon: float, bound_wh: int, k_min: int
) -> None:
    """Refuse a malformed query with field violations (InvalidArgument)."""
    check = Checker("invalid aggregates query")
    check.text(zone, "zone", max_len=32, pattern=ZONE_RE, hint="like CO-ANT, ES or NL")
    check.require(
        isinstance(start, int) and start >= 0 and start % 3600 == 0,
        "from",
        "must be a whole UTC hour (unix seconds divisible by 3600)",
    )
    check.require(
        isinstance(end, int) and end % 3600 == 0 and end > start,
        "to",
        "must be a whole UTC hour after `from`",
    )
    check.require(end - start <= MAX_WINDOW_S, "to", "the window may cover at most 366 days")
    check.require(
        isinstance(k, int) and k_min <= k <= 1000,
        "k",
        f"must be {k_min}..1000 (the node's [privacy] k_anonymity is the minimum)",
    )
    check.require(
        epsilon == 0 or MIN_EPSILON <= epsilon <= MAX_EPSILON,
        "epsilon",
        f"must be 0 (no noise) or {MIN_EPSILON}..{MAX_EPSILON}",
    )
    check.require(
        isinstance(bound_wh, int) and 1 <= bound_wh <= 10**9,
        "bound_wh",
        "must be 1..1000000000 Wh per device-hour",
    )
    check.done()


def compute(
    store: Store,
    issuer: str,
    *,
    zone: str,
    start: int,
    end: int,
    k: int,
    k_min: int,
    epsilon: float = 0.0,
    bound_wh: int = DEFAULT_BOUND_WH,
) -> Report:
    """Aggregates of ``zone`` over ``[start, end)`` (see the module docstring)."""
    k = k or k_min
    check_query(zone, start, end, k, epsilon, bound_wh, k_min)
    with store.read() as conn:
        rows = {
            "issued": ag.issued(conn, issuer, zone, start, end),
            "transferred": ag.moved(conn, ag.TRANSFER_ACTIONS, zone, start, end),
            "claimed": ag.moved(conn, ag.CLAIM_ACTIONS, zone, start, end),
        }
        caps = ag.capacities(conn, {r.device_id for rs in rows.values() for r in rs})
    noisy = epsilon > 0
    scale = bound_wh / (epsilon / len(METRICS)) if noisy else 0.0
    report = Report(zone, start, end, k, epsilon, bound_wh, MECHANISM if noisy else "none", scale)
    for metric in METRICS:
        cells = _cells(metric, rows[metric], k, caps, bound_wh if noisy else None)
        published = [key for key, (wh, ok) in cells.items() if ok]
        noise = laplace_noise(len(published), scale) if noisy and published else []
        shift = dict(zip(published, noise, strict=True)) if noise else {}
        for key in sorted(cells):
            wh, ok = cells[key]
            value = max(0, wh + shift.get(key, 0)) if ok else None
            report.cells.append(Cell(metric, key[0], key[1], value, not ok))
    return report


def _cells(
    metric: str,
    rows: list[ag.DeviceHour],
    k: int,
    caps: dict[str, int],
    bound: int | None,
) -> dict[tuple[int, int], tuple[int, bool]]:
    """(hour, source) -> (Wh, publishable): per-device-hour contributions clamped under DP."""
    per_device: dict[tuple[int, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    senders: dict[tuple[int, int], set[str]] = defaultdict(set)
    receivers: dict[tuple[int, int], set[str]] = defaultdict(set)
    for r in rows:
        key = (r.hour, r.source)
        per_device[key][r.device_id] += r.wh
        senders[key].add(r.sender)
        receivers[key].add(r.receiver)
    out = {}
    for key, devices in per_device.items():
        contributors = len(devices)
        if metric == "transferred":
            contributors = min(contributors, len(senders[key]), len(receivers[key]))
        elif metric == "claimed":
            contributors = min(contributors, len(senders[key]))
        if bound is None:
            wh = sum(devices.values())
        else:
            wh = sum(min(v, bound, caps.get(d, bound)) for d, v in devices.items())
        out[key] = (wh, contributors >= k)
    return out


def laplace_noise(n: int, scale: float) -> list[int]:
    """``n`` draws of discrete Laplace noise of ``scale`` from OpenDP (its own secure RNG)."""
    measurement = _laplace(n, scale)
    return [int(v) for v in measurement([0] * n)]


def privacy_loss(scale: float, sensitivity: int) -> float:
    """Epsilon OpenDP's privacy map gives one metric's release at ``scale`` for ``sensitivity``."""
    return float(_laplace(1, scale).map(sensitivity))


def _laplace(n: int, scale: float):
    try:
        import opendp.prelude as dp
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise FailedPrecondition("differential privacy needs the opendp package") from exc
    dp.enable_features("contrib")
    return dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T="i64"), size=n)
        if n
        else dp.vector_domain(dp.atom_domain(T="i64")),
        dp.l1_distance(T="i64"),
        scale=float(scale),
    )
