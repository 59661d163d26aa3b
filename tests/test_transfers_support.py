"""Helpers of the transfer tests (no tests here): in-process federations of real nodes.

:class:`Federation` holds a few real nodes (each its own database), wires their transfer
engines through an :class:`~eap.node.federation.inprocess.InProcessNetwork`, drives time with
a fake clock, can "restart" a node (drop every in-memory object, reopen its database) and
checks federation-wide conservation.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path

from support import write_csv

from eap.node.config import create_home
from eap.node.domain.node import Node
from eap.node.federation import conservation
from eap.node.federation.inprocess import Faults, InProcessNetwork
from eap.node.federation.peers import TrustList, keys_json
from eap.node.federation.sync import BatchImporter
from eap.node.federation.transfers import FINAL, Transfers, TransferSettings
from eap.node.records.enums import Purpose, Status
from eap.node.store import peer_repos, repos

FAST = TransferSettings(ttl_s=30.0, lease_s=2.0, rpc_timeout_s=1.0, rpc_attempts=1,
                        backoff_base_s=0.2, backoff_cap_s=5.0, inquire_after_s=5.0,
                        inquire_cap_s=20.0, inline_wait_s=0.0)

CITIES = {"a": ("medellin.example", "CO-ANT", 6.2, -75.5),
          "b": ("barcelona.example", "ES", 41.4, 2.2),
          "c": ("amsterdam.example", "NL", 52.4, 4.9),
          "d": ("lisboa.example", "PT", 38.7, -9.1)}


class Clock:
    """A settable wall clock shared by the nodes of a test."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class City:
    key: str
    node_id: str
    home: Path
    node: Node
    engine: Transfers
    account: str
    owner: str = ""
    bundles: list[str] = field(default_factory=list)


class Federation:
    """Real nodes in one process, transfers over an in-process network."""

    def __init__(self, tmp: Path, keys: str = "ab", *, db_urls: dict[str, str] | None = None,
                 settings: TransferSettings = FAST, faults: Faults | None = None,
                 hours: int = 3) -> None:
        self.tmp = tmp
        self.clock = Clock()
        self.settings = settings
        self.net = InProcessNetwork(faults)
        self.cities: dict[str, City] = {}
        for key in keys:
            node_id, zone, lat, lon = CITIES[key]
            home = tmp / key
            db = (db_urls or {}).get(key)
            node = Node.initialise(create_home(home, node_id, zone, db, operator_signed=True))
            account = node.create_account(request_id="acct", label="buyer").account.id
            city = City(key, node_id, home, node, self._engine(node), account)
            self.cities[key] = city
            self.net.attach(city.engine)
            self._issue(city, zone, lat, lon, hours)
        keys = {c.node_id: keys_json(c.node.keys.public_keys()) for c in self.cities.values()}
        for city in self.cities.values():
            with city.node.store.transaction() as conn:
                for other, other_keys in keys.items():
                    if other != city.node_id:
                        peer_repos.insert_peer(conn, {
                            "node_id": other, "endpoint": "in-process:0", "status": "active",
                            "public_keys": other_keys,
                            "added_at_ms": int(self.clock() * 1000)})
        self.sync_all()

    def sync_all(self) -> None:
        """Every node imports every peer's batches it has not yet (what PullBatches would
        give it), verified like a sync."""
        for city in self.cities.values():
            importer = BatchImporter(city.node, TrustList(city.node.store, city.node_id))
            for other in self.cities.values():
                if other is city:
                    continue
                with city.node.store.read() as conn:
                    cursor = peer_repos.get_peer(conn, other.node_id).cursor
                with other.node.store.read() as conn:
                    rows = repos.batches_after(conn, cursor, 10_000)
                for row in rows:
                    importer.import_batch(other.node_id, bytes(row.payload), int(row.seq))

    def _engine(self, node: Node) -> Transfers:
        return Transfers(node, self.net.transport(node.node_id), settings=self.settings,
                         clock=self.clock, sleep=lambda s: self.clock.advance(s))

    def _issue(self, city: City, zone: str, lat: float, lon: float, hours: int) -> None:
        node = city.node
        city.owner = node.create_account(request_id="owner", label="producer").account.id
        node.register_device(request_id="dev", local_ref="roof", capacity_w=100_000,
                             source="solar", technology="photovoltaic",
                             commissioned_on="2020-01-01", latitude=lat, longitude=lon, zone=zone,
                             owner=city.owner, meter_id=f"m-{city.key}",
                             attestation_evidence="grid connection agreement")
        t0 = dt.datetime(2024, 1, 1)
        rows = [(f"{t0 + dt.timedelta(hours=h):%Y-%m-%d %H:%M:%S}",
                 f"{t0 + dt.timedelta(hours=h + 1):%Y-%m-%d %H:%M:%S}", f"m-{city.key}",
                 1000 * (h % 24 + 1)) for h in range(hours)]
        node.import_readings(write_csv(self.tmp / f"{city.key}.csv", rows), request_id="imp")
        node.issue(request_id="iss")
        city.bundles = [b.id for b in self.active(city.key, city.owner)]

    # -- access ----------------------------------------------------------------------------------

    def wire(self, key: str, bundle_id: str):
        """What a source announces in a prepare: the bundle (owner hidden, held by the
        source) and its provenance proof."""
        from eap.node.api import convert
        from eap.node.domain import ledger

        city = self.cities[key]
        bundle = self.bundle(key, bundle_id)
        with city.node.store.read() as conn:
            proof, _ = ledger.proof(conn, city.node_id, bundle)
        wire = convert.bundle(bundle)
        wire.held_by, wire.owner = city.node_id, ""
        return wire, proof

    def __getitem__(self, key: str) -> City:
        return self.cities[key]

    def to(self, key: str) -> str:
        """``NODE_ID/ACCOUNT`` of city ``key``'s buyer account."""
        return f"{self.cities[key].node_id}/{self.cities[key].account}"

    def active(self, key: str, owner: str = "") -> list:
        return self.cities[key].node.list_bundles(
            purpose=Purpose.OPERATIONS, owner=owner, status=int(Status.ACTIVE),
            page_size=1000).items

    def bundle(self, key: str, bundle_id: str):
        return self.cities[key].node.get_bundle(bundle_id)

    # -- faults ------------------------------------------------------------------------------------

    def restart(self, key: str) -> City:
        """Drop the node's objects (as a killed process would) and reopen its database."""
        city = self.cities[key]
        city.node.close()
        city.node = Node.open(city.home)
        city.engine = self._engine(city.node)
        self.net.attach(city.engine)
        return city

    def down(self, key: str) -> None:
        self.net.down.add(self.cities[key].node_id)

    # -- driving -----------------------------------------------------------------------------------

    def tick(self, *, force: bool = False) -> int:
        moved = 0
        for city in self.cities.values():
            if city.node_id not in self.net.down:
                moved += city.engine.tick(force=force)
        return moved

    def settle(self, *, rounds: int = 200, step_s: float = 1.0) -> None:
        """Tick every live node, advancing the clock, until every transfer is settled."""
        for _ in range(rounds):
            self.tick()
            if self.unsettled() == []:
                return
            self.clock.advance(step_s)
        raise AssertionError(f"transfers did not settle: {self.unsettled()}")

    def unsettled(self) -> list[tuple[str, str, str, list[str]]]:
        out = []
        for city in self.cities.values():
            for rec in city.engine.list(limit=1000):
                if rec.state not in FINAL or rec.pending:
                    out.append((city.key, rec.id, rec.state, rec.pending))
        return out

    def states(self, transfer_id: str) -> dict[str, str]:
        """The transfer's state on every node that has a record of it."""
        out = {}
        for city in self.cities.values():
            recs = [r for r in city.engine.list(limit=1000) if r.id == transfer_id]
            if recs:
                out[city.key] = recs[0].state
        return out

    def conservation(self) -> conservation.ConservationReport:
        return conservation.check({c.node_id: c.node.store for c in self.cities.values()})

    def assert_conserved(self) -> None:
        report = self.conservation()
        assert report.ok, report.describe()
        for city in self.cities.values():
            st = city.node.status()
            here = report.per_node.get(city.node_id, {})
            live = here.get("active", 0) + here.get("export_pending", 0)
            # Per node: issued + imported - exported = live + retired.
            assert st.wh_issued + st.wh_imported - st.wh_exported == live + st.wh_retired, (
                city.key, st, here)

    def assert_agree(self) -> None:
        """Both sides of every transfer reached the same final state."""
        seen: dict[str, dict[str, str]] = {}
        for city in self.cities.values():
            for rec in city.engine.list(limit=1000):
                seen.setdefault(rec.id, {})[f"{city.key}:{rec.direction}"] = rec.state
        for tid, sides in seen.items():
            finals = set(sides.values())
            assert len(finals) == 1 and finals <= set(FINAL), (tid, sides)

    def close(self) -> None:
        for city in self.cities.values():
            city.node.close()
