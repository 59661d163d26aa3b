"""A settlement backend that fails transiently, for fault tests of the settlement executor.

:class:`FlakyBackend` raises a transient ``BackendError`` the first ``failures`` times it sees
each idempotency key, then delegates to another backend (default: the built-in co-op ledger,
which then gets the flaky backend's own table ``[settlement.flaky]`` as its settings).

Two ways to use it:

* in-process, through the pytest fixture ``eap_flaky_backend`` (:mod:`eap.plugins.testing`);
* in ``eap-node serve`` processes: ``EAP_TEST_FLAKY_BACKEND=N`` in the environment registers
  this module as plugin ``flaky_backend`` (:func:`eap.plugins.manager.get_plugin_manager`),
  offering one backend ``flaky`` that fails N times per key; select it with
  ``[settlement] backend = "flaky"``.  Unset, the module is never loaded.  A testing aid
  only: the failure counts live in the process, so a restarted process fails N times again.
"""

from __future__ import annotations

import os
import threading
from collections import Counter

from eap.plugins import hookimpl

ENV = "EAP_TEST_FLAKY_BACKEND"


class FlakyBackend:
    """Settlement backend ``name`` that raises a transient ``BackendError`` the first
    ``failures`` times it sees each idempotency key, then delegates to ``delegate`` (default:
    the built-in co-op ledger).  ``calls`` lists every key it was called with, in order."""

    def __init__(self, failures: int = 2, name: str = "flaky", delegate=None) -> None:
        from eap.plugins.coop_ledger import CoopLedger

        self.name = name
        self.failures = failures
        self.delegate = delegate or CoopLedger()
        self.calls: list[str] = []
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()

    def execute(self, ctx, item, idempotency_key):
        from eap.node.errors import BackendError

        with self._lock:
            self.calls.append(idempotency_key)
            self._seen[idempotency_key] += 1
            seen = self._seen[idempotency_key]
        if seen <= self.failures:
            raise BackendError(
                f"{self.name}: simulated outage ({seen} of {self.failures})",
                transient=True,
                backend=self.name,
            )
        return self.delegate.execute(ctx, item, idempotency_key)

    def health(self, ctx):
        return {"ok": True, "detail": f"fails {self.failures} times per key, then posts"}


def failures_from_env() -> int:
    """``EAP_TEST_FLAKY_BACKEND`` as a count of failures per key (ConfigError otherwise)."""
    from eap.node.errors import ConfigError

    raw = os.environ.get(ENV, "").strip()
    if not raw.isdigit():
        raise ConfigError(f"{ENV} must be a number of failures per key, not {raw!r}")
    return int(raw)


_backend: FlakyBackend | None = None
_backend_lock = threading.Lock()


@hookimpl
def eap_settlement_backends():
    """The process's one ``flaky`` backend (one instance, so that its counts persist across
    the calls of the executor)."""
    global _backend
    with _backend_lock:
        if _backend is None:
            _backend = FlakyBackend(failures_from_env())
        return [_backend]
