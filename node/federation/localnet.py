"""A federation of node processes on this machine: for demos, tests and trying EAP out.

:class:`LocalFederation` sets up what operators do by hand in ``docs/federation.md`` §1, in
process and in about a second, then runs every node as its own ``eap-node serve`` process on
loopback:

1. a demo federation CA (``<root>/ca``; a real federation brings its own PKI);
2. per node a home (``<root>/<first label of the node id>``) with its key ring, embedded SQLite
   database, operator API token, free loopback ports for the local API and the federation
   server, and a TLS certificate from the CA;
3. signed descriptors (``<root>/descriptors/<node id>.json``), each added to every other node's
   trust list with the signer's key fingerprint checked (``eap-node peer add FILE
   --fingerprint ...``);
4. the ``eap-node serve`` processes (output in ``<home>/serve.log``), started together and
   awaited until their local API answers the gRPC health check; they handshake and sync by
   themselves (``[federation] sync_interval_s``).

A node process exits with the process that started it (Linux: parent-death signal), so an
interrupted demo leaves no servers behind.  Usage::

    with LocalFederation.create(root, [("a.example", "ES"), ("b.example", "NL")]) as net:
        net.start()
        stub = net["a.example"].api()              # eap.v1.NodeApi, operator token attached
        stub.GetStatus(api.GetStatusRequest())
        net.wait_for_handshakes()
    # every process stopped here
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import tomli_w

from eap.node.config import CONFIG_NAME, NodeConfig, create_home
from eap.node.errors import EapError, Unavailable

#: Seconds a node process may take to serve after start (imports, migrations, TLS).
READY_TIMEOUT_S = 60.0
#: Seconds a node gets to stop after SIGTERM before it is killed.
STOP_TIMEOUT_S = 15.0

# Runs ``eap-node ARGS`` in the child, after asking Linux to SIGTERM it when its parent dies
# (and exiting at once if the parent is gone already).  argv: [-c, parent pid, ARGS...]
_BOOT = """\
import os, sys
if sys.platform.startswith("linux"):
    try:
        import ctypes, signal
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except Exception:
        pass
    if os.getppid() != int(sys.argv[1]):
        sys.exit(0)
from eap.node.cli import main
main(sys.argv[2:], prog_name="eap-node")
"""


class LocalNetError(EapError):
    """A node process failed to start or to serve (its log tail is in the message)."""

    status = Unavailable.status
    exit_code = Unavailable.exit_code


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct free TCP ports (all held open while choosing, so none repeats)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(n):
            s = stack.enter_context(socket.socket())
            s.bind((host, 0))
            ports.append(s.getsockname()[1])
        return ports


def merge_settings(home: Path, section: str, values: Mapping[str, Any]) -> None:
    """Merge ``values`` into the ``[section]`` table of ``<home>/eap-node.toml``."""
    path = Path(home) / CONFIG_NAME
    data = tomllib.loads(path.read_text())
    data.setdefault(section, {}).update(values)
    path.write_text(tomli_w.dumps(data))


@dataclass
class LocalNode:
    """One node of a :class:`LocalFederation`: its home and its ``eap-node serve`` process."""

    node_id: str
    zone: str
    home: Path
    api_port: int
    fed_port: int
    host: str = "127.0.0.1"
    proc: subprocess.Popen | None = field(default=None, repr=False)
    _channel: grpc.Channel | None = field(default=None, repr=False)
    _store: Any = field(default=None, repr=False)
    _log_offset: int = field(default=0, repr=False)

    @classmethod
    def from_home(cls, home: Path) -> LocalNode:
        """A node for an existing home, with the ports its configuration listens on."""
        cfg = NodeConfig.load(home)
        host, api = cfg.api_listen.rsplit(":", 1)
        fed = cfg.federation_listen.rsplit(":", 1)[1]
        return cls(cfg.node_id, cfg.zone, Path(home), int(api), int(fed), host)

    @property
    def api_address(self) -> str:
        return f"{self.host}:{self.api_port}"

    @property
    def endpoint(self) -> str:
        """The federation endpoint peers dial."""
        return f"{self.host}:{self.fed_port}"

    @property
    def log_path(self) -> Path:
        return self.home / "serve.log"

    @property
    def config(self) -> NodeConfig:
        return NodeConfig.load(self.home)

    # -- local API --------------------------------------------------------------------------------

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """``authorization: Bearer <operator token>`` (the home's ``api-token``)."""
        return (("authorization", f"Bearer {self.config.api_token()}"),)

    def channel(self) -> grpc.Channel:
        """A channel to the local API as the home's ``[api]`` serves it (plaintext on
        loopback by default; TLS with the CA beside the API certificate when configured)."""
        if self._channel is None:
            from eap.node.api.tls import local_api_channel, probe_address

            self._channel = local_api_channel(
                self.config, address=probe_address(self.api_address)
            )
        return self._channel

    def api(self, timeout: float = 30.0) -> _AuthorizedStub:
        """The node's ``eap.v1.NodeApi`` with the operator token and a default deadline."""
        from eap.v1 import node_api_pb2_grpc

        return _AuthorizedStub(
            node_api_pb2_grpc.NodeApiStub(self.channel()), self.metadata, timeout
        )

    def healthy(self, timeout: float = 1.0) -> bool:
        """Whether the local API answers the gRPC health check with SERVING."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            reply = health_pb2_grpc.HealthStub(self.channel()).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    # -- database (read-only use by the orchestrator: checks and statistics) ----------------------

    def store(self):
        """The node's database, opened in this process (no migration)."""
        if self._store is None:
            from eap.node.store import open_store

            self._store = open_store(self.config.database, migrate=False)
        return self._store

    # -- process ----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, env: Mapping[str, str] | None = None) -> LocalNode:
        """Start ``eap-node serve`` for this home (does not wait: see :meth:`wait_ready`).

        The child runs in its own session (a Ctrl-C at the terminal reaches the orchestrator,
        which stops it in order) and is signalled when the process that started it dies.
        """
        if self.running:
            raise LocalNetError(f"{self.node_id} is running already")
        self.log_path.touch()
        self._log_offset = self.log_path.stat().st_size
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(os.getpid()), "serve", "--home", str(self.home)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                start_new_session=True,
            )
        return self

    def log(self, *, since_start: bool = False) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return text[self._log_offset :] if since_start else text

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until the process has started its servers and its local API answers health checks.

        Raises:
            LocalNetError: the process exited, or did not serve within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise LocalNetError(
                    f"{self.node_id}: `eap-node serve` exited with {code}:\n"
                    f"{_tail(self.log(since_start=True))}"
                )
            if "serving eap.v1.NodeApi" in self.log(since_start=True) and self.healthy():
                return
            time.sleep(0.05)
        raise LocalNetError(
            f"{self.node_id}: not serving after {timeout:.0f} s:\n"
            f"{_tail(self.log(since_start=True))}"
        )

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (graceful: the node finishes its current work), SIGKILL after ``timeout``."""
        self._close_channel()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return self.kill()
        return self.proc.returncode

    def kill(self) -> int | None:
        """SIGKILL: no cleanup at all."""
        self._close_channel()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        return self.proc.wait(10)

    def close(self) -> None:
        """Release this process's handles on the node (channel, database)."""
        self._close_channel()
        if self._store is not None:
            self._store.dispose()
            self._store = None

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


class _AuthorizedStub:
    """A ``NodeApiStub`` whose calls carry the operator token and a default deadline."""

    def __init__(self, stub: Any, metadata: tuple, timeout: float) -> None:
        self._stub, self._metadata, self._timeout = stub, metadata, timeout

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._stub, name)

        def call(request: Any, *, timeout: float | None = None) -> Any:
            return method(request, metadata=self._metadata, timeout=timeout or self._timeout)

        return call


class LocalFederation:
    """Node homes sharing a demo CA, trusting each other, served by local processes."""

    def __init__(self, root: Path, nodes: dict[str, LocalNode]) -> None:
        self.root = Path(root)
        self.nodes = nodes

    @classmethod
    def create(
        cls,
        root: Path,
        nodes: Sequence[tuple[str, str]],
        *,
        federation: Mapping[str, Any] | None = None,
        transfers: Mapping[str, Any] | None = None,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        host: str = "127.0.0.1",
        connect: bool = True,
    ) -> LocalFederation:
        """Create the CA, the homes and their certificates under ``root`` (must not hold homes).

        Args:
            nodes: ``(node id, zone)`` pairs.
            federation: ``[federation]`` settings of every home (e.g. ``sync_interval_s``).
            transfers: ``[transfers]`` settings of every home (see ``TransferSettings``).
            settings: more tables of every home by section (e.g. ``{"settlement": {...}}``).
            connect: exchange descriptors so that every node trusts every other one.
        """
        from eap.node.crypto import create_ca, issue_node_cert
        from eap.node.domain.node import Node

        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        ca_dir = root / "ca"
        create_ca(ca_dir, name="EAP local federation CA")
        ports = iter(free_ports(2 * len(nodes), host))
        made: dict[str, LocalNode] = {}
        for node_id, zone in nodes:
            home = root / node_id.split(".")[0]
            api_port, fed_port = next(ports), next(ports)
            cfg = create_home(home, node_id, zone, None, f"{host}:{api_port}", f"{host}:{fed_port}",
                              operator_signed=True)  # the demo's devices are operator-signed
            Node.initialise(cfg).close()
            issue_node_cert(ca_dir, node_id, home / "tls", ["localhost", host])
            if federation:
                merge_settings(home, "federation", federation)
            if transfers:
                merge_settings(home, "transfers", transfers)
            for section, values in (settings or {}).items():
                merge_settings(home, section, values)
            made[node_id] = LocalNode(node_id, zone, home, api_port, fed_port, host)
        net = cls(root, made)
        if connect:
            net.connect_all()
        return net

    def __getitem__(self, node_id: str) -> LocalNode:
        return self.nodes[node_id]

    def __iter__(self) -> Iterator[LocalNode]:
        return iter(self.nodes.values())

    def __len__(self) -> int:
        return len(self.nodes)

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- trust ------------------------------------------------------------------------------------

    def write_descriptors(self) -> dict[str, tuple[Path, str]]:
        """Each node's signed descriptor file and its signing key fingerprint (what an operator
        sends to peers, and reads to them over the phone)."""
        from eap.node.domain.node import Node
        from eap.node.federation.descriptor import describe

        out_dir = self.root / "descriptors"
        out_dir.mkdir(exist_ok=True)
        files = {}
        for n in self:
            node = Node.open(n.home, migrate=False)
            try:
                path = out_dir / f"{n.node_id}.json"
                path.write_text(describe(node).to_json())
                files[n.node_id] = (path, node.keys.fingerprint())
            finally:
                node.close()
        return files

    def connect_all(self) -> None:
        """Every node adds every other node's descriptor (``peer add FILE --fingerprint``)."""
        from eap.node.federation.descriptor import NodeDescriptor
        from eap.node.federation.peers import TrustList

        files = self.write_descriptors()
        for n in self:
            trust = TrustList(n.store(), n.node_id, cache_s=0)
            for other, (path, fingerprint) in files.items():
                if other != n.node_id:
                    trust.add_descriptor(
                        NodeDescriptor.from_json(path.read_bytes()), fingerprint=fingerprint
                    )

    def peers(self, node_id: str) -> list[Any]:
        """The trust list of ``node_id`` as stored (status, protocol, cursor...)."""
        from eap.node.federation.peers import TrustList

        return TrustList(self[node_id].store(), node_id, cache_s=0).all()

    def wait_for_handshakes(self, timeout: float = 30.0) -> None:
        """Until every node has completed a handshake with every peer it trusts."""
        from eap.node.federation.peers import ACTIVE

        def done() -> bool:
            return all(p.status == ACTIVE for n in self for p in self.peers(n.node_id))

        self.wait_until(done, timeout, "handshakes between all nodes")

    def wait_until(
        self, predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
    ) -> None:
        """Poll ``predicate`` until true; raises :class:`LocalNetError` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            if predicate():
                return
            if time.monotonic() > deadline:
                raise LocalNetError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(interval)

    # -- processes --------------------------------------------------------------------------------

    def start(
        self, *, env: Mapping[str, str] | None = None, timeout: float = READY_TIMEOUT_S
    ) -> None:
        """Start every node process, then wait until all serve (stops them all on failure)."""
        try:
            for n in self:
                n.start(env=env)
            for n in self:
                n.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def check_alive(self) -> None:
        """Raise :class:`LocalNetError` if a started node process has exited."""
        for n in self:
            if n.proc is not None and n.proc.poll() is not None:
                raise LocalNetError(
                    f"{n.node_id}: `eap-node serve` exited with "
                    f"{n.proc.returncode}:\n{_tail(n.log(since_start=True))}"
                )

    def stop(self) -> None:
        """Stop every node process (SIGTERM to all, then wait) and release local handles."""
        for n in self:
            n._close_channel()
            if n.running:
                with contextlib.suppress(ProcessLookupError):
                    n.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for n in self:
            with contextlib.suppress(Exception):
                n.stop()
            n.close()


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


__all__ = ["LocalFederation", "LocalNetError", "LocalNode", "free_ports", "merge_settings"]
