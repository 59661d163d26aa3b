"""What ``eap-node serve`` runs besides the local API: the federation server and a worker.

:func:`start_federation` is called by ``serve``: when the node home has TLS material
(``<home>/tls/node.crt``), it starts the mutual-TLS federation server on
``federation_listen`` and a background :class:`Worker` that syncs every peer periodically
(``[federation] sync_interval_s``).

Other federation parts hook into the same runtime through **extensions**: for each
``"module:function"`` in :data:`EXTENSIONS` whose module exists, ``function(runtime)`` is called
before the server starts.  An extension may install the transfer handler
(``runtime.servicer.set_transfers(handler)``) and register periodic tasks
(``runtime.worker.every("outbox", 0.5, dispatcher.run_once)``); it may use
``runtime.client`` (a :class:`~eap.node.federation.client.PeerClient`) to call peers.
"""

from __future__ import annotations

import importlib
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eap.node import telemetry
from eap.node.federation.client import PeerClient
from eap.node.federation.peers import TrustList
from eap.node.federation.server import build_server
from eap.node.federation.settings import FederationSettings
from eap.node.federation.sync import Syncer
from eap.node.telemetry.metrics import sync_lag

log = logging.getLogger(__name__)

#: ``module:function`` hooks called with the runtime before it starts (missing modules skipped).
EXTENSIONS: tuple[str, ...] = ("eap.node.federation.transfers:install",
                               "eap.node.federation.settlement:install",
                               "eap.node.federation.device_check:install")


@dataclass
class PeriodicTask:
    """One task of the worker: ``fn()`` every ``interval_s`` seconds (± jitter), or when woken."""

    name: str
    interval_s: float
    fn: Callable[[], Any]
    jitter: float = 0.1
    initial_delay_s: float = 0.0
    runs: int = 0
    failures: int = 0
    #: Rounds left to another replica (it held the task's lock).
    skipped: int = 0
    _wake: threading.Event = field(default_factory=threading.Event, repr=False)

    def wake(self) -> None:
        """Run as soon as possible (e.g. new work was queued)."""
        self._wake.set()


class Worker:
    """Background threads running periodic tasks until :meth:`stop`; one thread per task, so a
    slow sync never delays, say, a transfer outbox dispatcher.

    With a ``coordinator`` (:class:`eap.node.store.coordination.Coordinator`, what ``serve``
    passes) each round of a task runs under the database-wide lock ``task:<name>``: among
    replicas sharing the database, one runs it and the others skip that round.  A replica
    killed mid-round loses the lock with its connection; the next round elsewhere takes over.
    """

    def __init__(self, coordinator: Any = None) -> None:
        self.coordinator = coordinator
        self._tasks: dict[str, PeriodicTask] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._started = False

    def every(self, name: str, interval_s: float, fn: Callable[[], Any], *,
              jitter: float = 0.1, initial_delay_s: float = 0.0) -> PeriodicTask:
        """Register ``fn`` to run every ``interval_s`` seconds (started with the worker, or at
        once if it runs already).  Exceptions are logged; the task keeps its schedule."""
        if name in self._tasks:
            raise ValueError(f"a task named {name!r} is registered already")
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        task = PeriodicTask(name, interval_s, fn, jitter, initial_delay_s)
        self._tasks[name] = task
        if self._started:
            self._launch(task)
        return task

    def wake(self, name: str) -> None:
        self._tasks[name].wake()

    @property
    def tasks(self) -> dict[str, PeriodicTask]:
        return dict(self._tasks)

    def start(self) -> None:
        self._started = True
        for task in self._tasks.values():
            self._launch(task)

    def _launch(self, task: PeriodicTask) -> None:
        thread = threading.Thread(target=self._loop, args=(task,), name=f"eap-{task.name}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def _loop(self, task: PeriodicTask) -> None:
        delay = task.initial_delay_s
        while not self._stop.is_set():
            if delay > 0:
                task._wake.wait(delay)
                if self._stop.is_set():
                    return
            task._wake.clear()
            try:
                if self.coordinator is None:
                    task.fn()
                    task.runs += 1
                else:
                    ran, _ = self.coordinator.run_exclusive(f"task:{task.name}", task.fn)
                    if ran:
                        task.runs += 1
                    else:
                        task.skipped += 1
            except Exception:
                task.failures += 1
                log.exception("periodic task %s failed", task.name)
            spread = task.interval_s * task.jitter
            delay = task.interval_s + random.uniform(-spread, spread)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for task in self._tasks.values():
            task._wake.set()
        for thread in self._threads:
            thread.join(timeout)


class FederationRuntime:
    """The federation server, a peer client, the syncer and the worker of one node."""

    def __init__(self, node: Any, *, settings: FederationSettings | None = None,
                 listen: str | None = None, extensions: tuple[str, ...] = EXTENSIONS) -> None:
        self.node = node
        self.settings = settings or FederationSettings.load(node.config)
        self.trust = TrustList(node.store, node.node_id, cache_s=self.settings.trust_cache_s)
        self.server, self.port, self.servicer = build_server(
            node, settings=self.settings, trust=self.trust, listen=listen)
        self.client = PeerClient(node, trust=self.trust, settings=self.settings)
        self.syncer = Syncer(node, self.client, trust=self.trust,
                             pull_batches=self.settings.max_batches_per_pull)
        self.worker = Worker(node.store.coordinator)
        #: The transfer engine, once an extension installed one.
        self.transfers: Any = None
        if self.settings.sync_interval_s > 0:
            self.worker.every("sync", self.settings.sync_interval_s, self.syncer.sync_all,
                              initial_delay_s=min(1.0, self.settings.sync_interval_s))
        telemetry.of(node).metrics.observe("sync_lag", sync_lag(self.trust))
        for spec in extensions:
            _load_extension(spec, self)

    def start(self) -> None:
        self.server.start()
        self.worker.start()

    def stop(self, grace: float = 5.0) -> None:
        self.worker.stop()
        self.server.stop(grace).wait()
        self.client.close()


def _load_extension(spec: str, runtime: FederationRuntime) -> None:
    module_name, _, func = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        log.debug("federation extension %s not present", module_name)
        return
    hook = getattr(module, func, None)
    if hook is None:
        log.debug("federation extension %s: %s has no %s()", spec, module_name, func)
        return
    hook(runtime)
    log.info("federation extension %s installed", spec)


def tls_configured(node: Any, settings: FederationSettings | None = None) -> bool:
    settings = settings or FederationSettings.load(node.config)
    return (settings.tls_dir / "node.crt").exists()


def start_federation(node: Any, *, listen: str | None = None) -> FederationRuntime | None:
    """Start federation for ``serve`` if the home has TLS material; None otherwise."""
    settings = FederationSettings.load(node.config)
    if not tls_configured(node, settings):
        log.info("no TLS material in %s: federation server not started", settings.tls_dir)
        return None
    runtime = FederationRuntime(node, settings=settings, listen=listen)
    runtime.start()
    host = (listen or settings.listen).rsplit(":", 1)[0]
    print(f"eap-node {node.node_id} serving eap.v1.Federation (mutual TLS) on "
          f"{host}:{runtime.port}", flush=True)
    return runtime
