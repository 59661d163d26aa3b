"""An anchoring plugin that takes its time, for fault tests of replicas draining the anchor queue.

``EAP_TEST_SLOW_ANCHOR=<seconds>:<folder>`` in a process's environment registers this module
as plugin ``slow_anchor`` (:func:`eap.plugins.manager.get_plugin_manager`).  Each call of
``eap_batch_issued`` appends ``<pid> <seq>`` to ``<folder>/calls.log`` (every attempt, so a test
can see who sent what), waits ``<seconds>``, then records the batch in ``<folder>/anchors.log``
once per ``(node, seq)``, like a real anchor would: idempotent, as the hook must be.  The
folder is shared by every process of a test (replicas of one node), unlike the node home.
Unset, the module is never loaded.  A testing aid only.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from eap.plugins import hookimpl

ENV = "EAP_TEST_SLOW_ANCHOR"


def settings() -> tuple[float, Path]:
    """``(seconds, folder)`` of :data:`ENV`.

    Raises:
        ValueError: the variable is not ``<seconds>:<folder>``.
    """
    seconds, sep, folder = os.environ.get(ENV, "").partition(":")
    if not sep or not folder:
        raise ValueError(f"{ENV} must be <seconds>:<folder>")
    return float(seconds), Path(folder)


def _append(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@hookimpl
def eap_batch_issued(node_id, seq, count, wh, merkle_root, signature, key_id, home):
    """Log the attempt, wait, then anchor the batch once."""
    delay, folder = settings()
    folder.mkdir(parents=True, exist_ok=True)
    _append(folder / "calls.log", f"{os.getpid()} {seq}")
    time.sleep(delay)
    path = folder / "anchors.log"
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        for line in f.read().splitlines():
            entry = json.loads(line)
            if entry["node"] == node_id and entry["seq"] == seq:
                return
        f.write(
            json.dumps(
                {"node": node_id, "seq": seq, "root": merkle_root.hex(), "pid": os.getpid()},
                sort_keys=True,
            )
            + "\n"
        )
        f.flush()
        os.fsync(f.fileno())
