"""Built-in anchoring plugin: an append-only, hash-chained log of issuance batch roots.

Each line of ``<home>/anchors.log`` is JSON with the batch's seq, Merkle root, signature and
``prev`` (SHA-256 of the previous line), so rewriting history breaks the chain.  Chain
anchors (a blockchain, a transparency log) implement the same hook.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

from eap.plugins import hookimpl

LOG_NAME = "anchors.log"


def verify_log(path: Path) -> int:
    """Check the hash chain of an anchor log; returns the number of entries.

    Raises:
        ValueError: a line does not chain to the one before it.
    """
    prev = "0" * 64
    n = 0
    for n, line in enumerate(path.read_text().splitlines(), 1):
        entry = json.loads(line)
        if entry["prev"] != prev:
            raise ValueError(f"{path}:{n}: broken chain")
        prev = hashlib.sha256(line.encode()).hexdigest()
    return n


@hookimpl
def eap_batch_issued(node_id, seq, count, wh, merkle_root, signature, key_id, home):
    """Append the batch, once: a seq already in the log (a replay after a crash between the
    append and the queue marking it done) is not appended again."""
    path = Path(home) / LOG_NAME
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # one writer at a time (serve worker, CLI catch-up)
        f.seek(0)
        lines = f.read().splitlines()
        for line in lines:
            entry = json.loads(line)
            if entry["seq"] == seq and entry["node"] == node_id:
                if entry["root"] != merkle_root.hex():
                    raise ValueError(f"{path}: seq {seq} is anchored with another root")
                return
        prev = hashlib.sha256(lines[-1].encode()).hexdigest() if lines else "0" * 64
        line = json.dumps(
            {
                "node": node_id,
                "seq": seq,
                "count": count,
                "wh": wh,
                "root": merkle_root.hex(),
                "key_id": key_id,
                "signature": signature.hex(),
                "prev": prev,
            },
            sort_keys=True,
        )
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def health(home: Path) -> dict:
    """``{"ok", "detail"}`` of the log in ``home``: its hash chain verifies."""
    path = Path(home) / LOG_NAME
    if not path.exists():
        return {"ok": True, "detail": "no batch anchored yet"}
    try:
        return {"ok": True, "detail": f"{verify_log(path)} entries, chain verifies"}
    except (ValueError, KeyError) as exc:
        return {"ok": False, "detail": str(exc)}
