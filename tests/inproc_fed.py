"""Real nodes in this process, each with its federation runtime on a real loopback socket
(mutual TLS from a demo CA), and a recorder of every federation message in both directions.

Usage::

    fed = InProcFed(tmp_path, ["a.example", "b.example"], capture=True, monkeypatch=mp)
    fed["a.example"].node.register_device(...)
    fed.wire                     # [(rpc, "request" | "response", bytes)]
    fed.close()
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import grpc

from eap.node.domain.node import Node
from eap.node.federation import client as fed_client
from eap.node.federation.localnet import LocalFederation
from eap.node.federation.runtime import FederationRuntime

ZONES = {"a.example": "CO-ANT", "b.example": "ES", "c.example": "NL"}


class _Capture(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Records the serialised request and every response of each call."""

    def __init__(self, wire: list) -> None:
        self.wire = wire

    @staticmethod
    def _bytes(msg) -> bytes:
        return msg if isinstance(msg, bytes) else msg.SerializeToString()

    def intercept_unary_unary(self, continuation, details, request):
        rpc = details.method.rsplit("/", 1)[-1]
        self.wire.append((rpc, "request", self._bytes(request)))
        outcome = continuation(details, request)
        with contextlib.suppress(grpc.RpcError):
            self.wire.append((rpc, "response", self._bytes(outcome.result())))
        return outcome

    def intercept_unary_stream(self, continuation, details, request):
        rpc = details.method.rsplit("/", 1)[-1]
        self.wire.append((rpc, "request", self._bytes(request)))
        stream = continuation(details, request)
        wire = self.wire

        class _Tap:
            def __iter__(self):
                for item in stream:
                    wire.append((rpc, "response", _Capture._bytes(item)))
                    yield item

            def cancel(self):
                return stream.cancel()

            def __getattr__(self, name):
                return getattr(stream, name)

        return _Tap()


class InProcFed:
    """Nodes by id: ``fed[node_id].node`` (the Node) and ``.runtime`` (its FederationRuntime)."""

    def __init__(
        self, root: Path, node_ids: list[str], *, monkeypatch=None, federation: dict | None = None
    ) -> None:
        self.wire: list[tuple[str, str, bytes]] = []
        if monkeypatch is not None:
            real = grpc.secure_channel
            cap = _Capture(self.wire)
            monkeypatch.setattr(
                fed_client.grpc,
                "secure_channel",
                lambda *a, **k: grpc.intercept_channel(real(*a, **k), cap),
                raising=True,
            )
        settings = {"sync_interval_s": 0, **(federation or {})}
        self.local = LocalFederation.create(
            root, [(n, ZONES[n]) for n in node_ids], federation=settings
        )
        self.members: dict[str, _Member] = {}
        for n in self.local:
            node = Node.open(n.home)
            runtime = FederationRuntime(node, listen=f"127.0.0.1:{n.fed_port}")
            runtime.start()
            self.members[n.node_id] = _Member(n.node_id, n.home, node, runtime)
        for a in self.members.values():
            for b in self.members:
                if b != a.node_id:
                    a.runtime.client.hello(b, timeout=10)

    def __getitem__(self, node_id: str) -> _Member:
        return self.members[node_id]

    def __iter__(self):
        return iter(self.members.values())

    def close(self) -> None:
        for m in self.members.values():
            m.runtime.stop(grace=0.5)
            m.node.close()


class _Member:
    def __init__(self, node_id: str, home: Path, node: Node, runtime: FederationRuntime) -> None:
        self.node_id, self.home, self.node, self.runtime = node_id, home, node, runtime
        self._n = 0

    def account(self, label: str = "owner") -> str:
        self._n += 1
        return self.node.create_account(
            request_id=f"acct-{label}-{self._n}", label=label
        ).account.id

    def device(
        self, owner: str, meter_id: str, ref: str, *, lat: float = 6.2442, lon: float = -75.5812
    ):
        self._n += 1
        return self.node.register_device(
            request_id=f"dev-{ref}-{self._n}",
            local_ref=ref,
            capacity_w=250,
            source="solar",
            technology="photovoltaic",
            commissioned_on="2020-05-01",
            latitude=lat,
            longitude=lon,
            zone=self.node.config.zone,
            owner=owner,
            meter_id=meter_id,
            attestation_evidence="grid-connection-agreement 2020/117",
        )
