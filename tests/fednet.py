"""A federation of real node processes for tests: homes, a demo CA, trust, start/stop/kill -9.

Usage::

    net = FedNet(tmp_path, [("a.example", "CO-ANT"), ("b.example", "ES")])
    net.connect_all()              # every node trusts every other (signed descriptors)
    net.start_all()                # `eap-node serve` subprocesses, waits until they serve
    net["a.example"].issue_hours(24)                 # in-process issuance on a's database
    net["b.example"].js("sync", "--peer", "a.example")  # the CLI against b's home
    net["a.example"].kill()        # SIGKILL; .restart() / .start() again
    net.stop_all()

Homes are created in-process (fast); servers always run as separate ``eap-node serve``
processes on 127.0.0.1 with free ports and mutual TLS from a demo CA.  A process's output
goes to ``<home>/serve.log`` (see :meth:`NodeProc.log`).  ``env`` passed to :meth:`start`
reaches the process (e.g. ``EAP_CRASH_AT`` for crash tests).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

CLI = [sys.executable, "-m", "eap.node"]
READY_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_settings(home: Path, section: str, **values: Any) -> None:
    """Merge ``values`` into the ``[section]`` table of a home's ``eap-node.toml``."""
    path = home / "eap-node.toml"
    data = tomllib.loads(path.read_text())
    data.setdefault(section, {}).update(values)
    path.write_text(tomli_w.dumps(data))


@dataclass
class NodeProc:
    """One node: its home and (when started) its ``eap-node serve`` process."""

    node_id: str
    zone: str
    home: Path
    api_port: int
    fed_port: int
    proc: subprocess.Popen | None = None
    _node: Any = field(default=None, repr=False)
    _meter: int = 0
    _log_offset: int = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.fed_port}"

    @property
    def tls_dir(self) -> Path:
        return self.home / "tls"

    # -- CLI --------------------------------------------------------------------------------------

    def cli(self, *args: str, ok: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``eap-node ARGS --home HOME``; asserts success (unless ``ok=False``) and no
        traceback."""
        proc = subprocess.run([*CLI, *args, "--home", str(self.home)], capture_output=True,
                              text=True, timeout=timeout)
        if ok:
            assert proc.returncode == 0, f"eap-node {' '.join(args)}: {proc.stderr}"
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def js(self, *args: str, ok: bool = True) -> Any:
        out = self.cli(*args, "--json", ok=ok).stdout
        if args[0] in ("accounts", "devices", "bundles", "claims", "transfers"):
            return [json.loads(line) for line in out.splitlines()]  # JSON Lines listings
        return json.loads(out)

    # -- in-process access -------------------------------------------------------------------------

    @property
    def node(self):
        """A :class:`~eap.node.domain.node.Node` on this home, opened in the test process."""
        if self._node is None:
            from eap.node.domain.node import Node

            self._node = Node.open(self.home)
        return self._node

    def close(self) -> None:
        if self._node is not None:
            self._node.close()
            self._node = None

    def issue_hours(self, hours: int, *, start: str = "2026-01-01 00:00:00", wh: int = 900,
                    capacity_w: int = 5000) -> dict:
        """Register a fresh device, import ``hours`` hourly readings from ``start`` and issue
        them (one batch); returns the issue result as a dict."""
        from support import write_csv

        node = self.node
        self._meter += 1
        tag = f"{self.node_id.split('.')[0]}-{self._meter}"
        owner = node.create_account(request_id=f"acct-{tag}", label=tag).account.id
        node.register_device(
            request_id=f"dev-{tag}", local_ref=f"roof-{tag}", capacity_w=capacity_w,
            source="solar", technology="photovoltaic", commissioned_on="2020-01-01",
            latitude=41.4, longitude=2.17, zone=self.zone, owner=owner, meter_id=f"m-{tag}",
            attestation_evidence=f"grid-connection {tag}")
        t0 = dt.datetime.fromisoformat(start)
        rows = [((t0 + dt.timedelta(hours=h)).strftime("%Y-%m-%d %H:%M:%S"),
                 (t0 + dt.timedelta(hours=h + 1)).strftime("%Y-%m-%d %H:%M:%S"),
                 f"m-{tag}", wh + h % 5) for h in range(hours)]
        path = write_csv(self.home / f"readings-{tag}.csv", rows)
        node.import_readings(path, request_id=f"imp-{tag}")
        return node.issue(request_id=f"iss-{tag}").to_dict()

    # -- process ----------------------------------------------------------------------------------

    def log(self) -> str:
        path = self.home / "serve.log"
        return path.read_text() if path.exists() else ""

    def start(self, *, env: dict[str, str] | None = None, wait: bool = True) -> NodeProc:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        out = open(self.home / "serve.log", "a")  # noqa: SIM115 - handed to the child
        self._log_offset = (self.home / "serve.log").stat().st_size
        self.proc = subprocess.Popen([*CLI, "serve", "--home", str(self.home)], stdout=out,
                                     stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        out.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until the process says it serves both the local API and the federation server."""
        deadline = time.monotonic() + timeout
        want = "serving eap.v1.Federation" if (self.tls_dir / "node.crt").exists() \
            else "serving eap.v1.NodeApi"
        while time.monotonic() < deadline:
            text = self.log()[self._log_offset:]
            if want in text:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.node_id} exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.node_id} not ready after {timeout} s:\n{self.log()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM and wait (graceful)."""
        if not self.running:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int | None:
        """SIGKILL (``kill -9``): no cleanup at all."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait(10)

    def restart(self, *, env: dict[str, str] | None = None) -> NodeProc:
        self.stop()
        return self.start(env=env)


class FedNet:
    """Several node homes sharing one demo CA (see the module docstring)."""

    def __init__(self, root: Path, nodes: list[tuple[str, str]], *, sync_interval_s: float = 0,
                 db_urls: dict[str, str] | None = None, **federation: Any) -> None:
        from eap.node.config import create_home
        from eap.node.crypto import create_ca, issue_node_cert
        from eap.node.domain.node import Node

        self.root = Path(root)
        self.ca_dir = self.root / "ca"
        create_ca(self.ca_dir)
        self.nodes: dict[str, NodeProc] = {}
        for node_id, zone in nodes:
            home = self.root / node_id.split(".")[0]
            api, fedp = free_port(), free_port()
            cfg = create_home(home, node_id, zone, (db_urls or {}).get(node_id),
                              f"127.0.0.1:{api}", f"127.0.0.1:{fedp}", operator_signed=True)
            Node.initialise(cfg).close()
            issue_node_cert(self.ca_dir, node_id, home / "tls")
            write_settings(home, "federation", sync_interval_s=sync_interval_s, **federation)
            self.nodes[node_id] = NodeProc(node_id, zone, home, api, fedp)

    def __getitem__(self, node_id: str) -> NodeProc:
        return self.nodes[node_id]

    def __iter__(self):
        return iter(self.nodes.values())

    def trust(self, a: str, b: str) -> None:
        """``a`` adds ``b`` from ``b``'s signed descriptor (in-process)."""
        from eap.node.federation.descriptor import describe
        from eap.node.federation.peers import TrustList

        desc = describe(self[b].node)
        TrustList(self[a].node.store, a).add_descriptor(desc, fingerprint=desc.signer_fingerprint())

    def connect(self, a: str, b: str) -> None:
        self.trust(a, b)
        self.trust(b, a)

    def connect_all(self) -> None:
        ids = list(self.nodes)
        for i, a in enumerate(ids):
            for b in ids[i + 1:]:
                self.connect(a, b)

    def start_all(self, **kw: Any) -> None:
        for n in self:
            n.start(wait=False, **kw)
        for n in self:
            n.wait_ready()

    def stop_all(self) -> None:
        for n in self:
            with contextlib.suppress(Exception):
                n.stop()
            n.close()
