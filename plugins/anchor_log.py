"""Built-in anchoring plugin: an append-only, hash-chained log of issuance batch roots.

Each line of ``<home>/anchors.log`` is JSON with the batch's seq, Merkle root, signature and
``prev`` (SHA-256 of the previous line), so rewriting history breaks the chain.  Chain
anchors (a blockchain, a transparency log) implement the same hook.
"""

from __future__ import annotations

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
    path = Path(home) / LOG_NAME
    prev = "0" * 64
    if path.exists():
        lines = path.read_text().splitlines()
        if lines:
            prev = hashlib.sha256(lines[-1].encode()).hexdigest()
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
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
