"""The node's metric instruments, defined once over the OpenTelemetry metrics API.

One set of instruments feeds both exports: the Prometheus reader (scraped on ``/metrics``)
and, when configured, the periodic OTLP push.  Labels carry only public, low-cardinality
values (node ids of peers, outcomes, RPC names), never accounts, meters or locations.
Names and labels: ``docs/observability.md``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

#: Buckets of the RPC latency histogram, seconds.
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Buckets of the import duration histogram, seconds.
IMPORT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class NodeMetrics:
    """Counters, histograms and gauges of one node (see the module docstring)."""

    def __init__(self, meter: Meter) -> None:
        self.issued_wh = meter.create_counter(
            "eap.issued.wh", description="Wh issued as bundles by this node"
        )
        self.transferred_wh = meter.create_counter(
            "eap.transferred.wh",
            description="Wh moved between accounts (scope=local) or nodes (scope=cross_node)",
        )
        self.claimed_wh = meter.create_counter(
            "eap.claimed.wh", description="Wh retired (claimed) on this node"
        )
        self.transfers = meter.create_counter(
            "eap.transfers", description="Finished transfers by scope, direction and outcome"
        )
        self.settlement_rounds = meter.create_counter(
            "eap.settlement.rounds", description="Settlement rounds coordinated, by outcome"
        )
        self.synced_batches = meter.create_counter(
            "eap.sync.batches", description="Signed batches imported from peers, by peer"
        )
        self.imported_readings = meter.create_counter(
            "eap.import.readings", description="Meter readings imported (stored)"
        )
        self.import_duration = meter.create_histogram(
            "eap.import.duration",
            unit="s",
            description="Duration of one meter-data import",
            explicit_bucket_boundaries_advisory=IMPORT_BUCKETS,
        )
        self.rpc_duration = meter.create_histogram(
            "eap.rpc.server.duration",
            unit="s",
            description="Server-side latency of NodeApi and Federation RPCs",
            explicit_bucket_boundaries_advisory=RPC_BUCKETS,
        )
        self._lock = threading.Lock()
        self._sources: dict[str, Callable[[], Iterable[tuple[float, dict[str, Any]]]]] = {}
        meter.create_observable_gauge(
            "eap.outbox.depth",
            callbacks=[self._observe("outbox")],
            description="Unacknowledged federation outbox messages, by kind",
        )
        meter.create_observable_gauge(
            "eap.sync.lag",
            unit="s",
            callbacks=[self._observe("sync_lag")],
            description="Seconds since the last successful sync from each peer",
        )

    def observe(
        self, name: str, source: Callable[[], Iterable[tuple[float, dict[str, Any]]]] | None
    ) -> None:
        """Install (or remove) the source of gauge ``name`` (``outbox`` or ``sync_lag``): a
        callable returning ``(value, labels)`` pairs, read at each collection."""
        with self._lock:
            if source is None:
                self._sources.pop(name, None)
            else:
                self._sources[name] = source

    def _observe(self, name: str):
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                source = self._sources.get(name)
            if source is None:
                return []
            return [Observation(value, labels) for value, labels in source()]

        return callback


def sync_lag(trust: Any, clock: Callable[[], float] = time.time):
    """A gauge source: seconds since each peer's last successful sync (-1: never synced)."""

    def source() -> list[tuple[float, dict[str, Any]]]:
        trust.reload()
        now_ms = clock() * 1000
        return [
            ((now_ms - p.last_sync_ms) / 1000 if p.last_sync_ms else -1.0, {"peer": p.node_id})
            for p in trust.all()
        ]

    return source


def outbox_depth(transfers: Any):
    """A gauge source: the transfer engine's unacknowledged outbox messages by kind."""

    def source() -> list[tuple[float, dict[str, Any]]]:
        backlog = transfers.backlog()
        return [(float(n), {"kind": kind}) for kind, n in sorted(backlog.items())] or [
            (0.0, {"kind": "all"})
        ]

    return source
