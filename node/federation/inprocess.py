"""Peers in one process: a transport that hands payloads straight to another engine's handlers.

For tests of the transfer state machine (with injected message loss, duplication and crashes)
and as the no-network baseline of ``bench/bench_transfer_latency.py``.  Envelopes are not
sealed: the caller's node id is taken as the authenticated origin, as the federation server
would after verifying one.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from eap.node.crypto import VerifiedEnvelope
from eap.node.errors import Unavailable, invalid
from eap.node.federation.crashpoints import SimulatedCrash

#: Federation RPC → handler method of the transfer engine.
HANDLERS = {"PrepareTransfer": "on_prepare", "DecideTransfer": "on_decision",
            "GetTransferStatus": "on_status", "MoveCustody": "on_move_custody",
            "ReportRetirement": "on_report_retirement", "GetHoldings": "on_get_holdings",
            "GetSettlementView": "on_get_settlement_view",
            "SignSettlement": "on_sign_settlement",
            "FinalizeSettlement": "on_finalize_settlement"}


@dataclass
class Faults:
    """Seeded message faults: each call may lose its request or its answer, or be delivered
    twice (the duplicate's answer is the one returned)."""

    drop_request: float = 0.0
    drop_reply: float = 0.0
    duplicate: float = 0.0
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def roll(self, p: float) -> bool:
        return p > 0 and self.rng.random() < p


class InProcessNetwork:
    """Engines by node id; a peer can be marked down (calls to it fail as unreachable)."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.engines: dict[str, Any] = {}
        self.down: set[str] = set()
        self.crashed: list[tuple[str, str]] = []
        self.faults = faults or Faults()
        self.calls = 0
        self._lock = threading.Lock()

    def attach(self, engine: Any) -> None:
        """(Re)connect an engine, e.g. after its node was reopened."""
        self.engines[engine.me] = engine
        self.down.discard(engine.me)

    def transport(self, me: str) -> InProcessTransport:
        return InProcessTransport(self, me)


class InProcessTransport:
    """``PeerClient.call`` look-alike for one node of an :class:`InProcessNetwork`."""

    def __init__(self, net: InProcessNetwork, me: str) -> None:
        self.net = net
        self.me = me

    def call(self, peer_id: str, rpc_name: str, payload_type: str, payload_bytes: bytes, *,
             timeout: float | None = None, attempts: int | None = None) -> tuple[str, bytes]:
        net = self.net
        with net._lock:
            net.calls += 1
            lose_request = net.faults.roll(net.faults.drop_request)
            lose_reply = net.faults.roll(net.faults.drop_reply)
            twice = net.faults.roll(net.faults.duplicate)
        if lose_request:
            raise Unavailable(f"{peer_id} {rpc_name}: request lost")
        answer = self._deliver(peer_id, rpc_name, payload_type, payload_bytes)
        if twice:
            answer = self._deliver(peer_id, rpc_name, payload_type, payload_bytes)
        if lose_reply:
            raise Unavailable(f"{peer_id} {rpc_name}: answer lost")
        return answer

    def _deliver(self, peer_id: str, rpc_name: str, payload_type: str,
                 payload: bytes) -> tuple[str, bytes]:
        engine = self.net.engines.get(peer_id)
        if engine is None or peer_id in self.net.down:
            raise Unavailable(f"{peer_id} {rpc_name}: unreachable")
        handler = HANDLERS.get(rpc_name)
        if handler is None:
            raise invalid("rpc", f"unknown RPC {rpc_name}")
        expected = engine.payload_types.get(handler)
        if expected and payload_type != expected:
            raise invalid("payload_type", f"expected {expected!r}, got {payload_type!r}",
                          "wrong payload")
        env = VerifiedEnvelope(payload=bytes(payload), payload_type=payload_type,
                               origin=self.me, key_id="in-process", nonce=secrets.token_bytes(16),
                               expires_at_ms=int(time.time() * 1000) + 60_000)
        try:
            return getattr(engine, handler)(env)
        except SimulatedCrash as crash:  # the peer died while handling it
            self.net.down.add(peer_id)
            self.net.crashed.append((peer_id, crash.point))
            raise Unavailable(f"{peer_id} {rpc_name}: connection reset") from None
