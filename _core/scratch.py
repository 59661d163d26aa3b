"""Per-thread scratch memory for the compiled kernels.

Sorting buffers of a batch are taken from a buffer kept per thread between calls instead of
fresh ``malloc`` each time: large fresh allocations are mapped anew by the C library on every
call, and the page faults of touching them cost more than the sort itself at batch sizes of
10,000 records.  Buffers up to :data:`KEEP_BYTES` are kept; larger ones are used once.
"""

from __future__ import annotations

import threading

import numpy as np

#: Largest scratch buffer a thread keeps between calls.
KEEP_BYTES = 16 * 2**20

_local = threading.local()


def scratch(nbytes: int) -> np.ndarray:
    """A uint8 array of at least ``nbytes`` (64-byte aligned start) owned by this thread.

    The content is undefined.  The caller must hold the returned array while it uses it and
    must not call into anything that may use this thread's scratch meanwhile.
    """
    buf = getattr(_local, "buf", None)
    if buf is not None and len(buf) >= nbytes + 64:
        raw = buf
    else:
        raw = np.empty(nbytes + 64, dtype=np.uint8)
        if nbytes + 64 <= KEEP_BYTES:
            _local.buf = raw
    offset = -raw.ctypes.data % 64
    return raw[offset : offset + nbytes]
