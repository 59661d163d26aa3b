"""Columnar record batches (DESIGN §5): columns ↔ ``eap.v1.RecordBatch``, signing, checking.

A batch carries its records as packed little-endian arrays plus string dictionaries; one
Ed25519 signature covers a canonical header that includes the Merkle root of the record leaf
hashes (computed by the ``_core`` kernels through :mod:`eap.node.kernels`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from eap.node import kernels
from eap.v1 import types_pb2

#: Column name → little-endian dtype on the wire.
COLUMNS: dict[str, str] = {
    "serial_start": "<i8",
    "serial_end": "<i8",
    "interval_start": "<i8",
    "interval_end": "<i8",
    "device": "<i4",
    "source": "u1",
    "technology": "u1",
    "renewable_ppm": "<u4",
    "carbon_mg": "<u4",
    "zone": "<i4",
    "owner": "<i4",
}

HEADER_DOMAIN = b"EAP-BATCH-v1\x00"


@dataclass
class Columns:
    """Records as NumPy columns plus the dictionaries the index columns point into."""

    arrays: dict[str, np.ndarray]
    devices: list[str]
    zones: list[str]
    owners: list[str]

    def __len__(self) -> int:
        return len(self.arrays["serial_start"])

    def leaf_hashes(self) -> np.ndarray:
        return kernels.leaf_hashes(self.arrays, self.devices, self.zones, self.owners)


def encode_dictionary(values) -> tuple[np.ndarray, list[str]]:
    """Dictionary-encode a sequence of strings: (int32 codes, unique values in first-seen order)."""
    table: dict[str, int] = {}
    codes = np.fromiter(
        (table.setdefault(v, len(table)) for v in values), dtype=np.int32, count=len(values)
    )
    return codes, list(table)


def header_bytes(issuer: str, seq: int, count: int, root: bytes) -> bytes:
    """The exact bytes the issuer signs: domain tag, issuer, seq, count and Merkle root."""
    raw = issuer.encode()
    return HEADER_DOMAIN + struct.pack(">H", len(raw)) + raw + struct.pack(">QI", seq, count) + root


def to_proto(
    cols: Columns,
    *,
    issuer: str,
    seq: int,
    root: bytes,
    created_at_ms: int,
    key_id: str,
    signature: bytes,
) -> types_pb2.RecordBatch:
    msg = types_pb2.RecordBatch(
        issuer=issuer,
        seq=seq,
        count=len(cols),
        merkle_root=root,
        created_at_ms=created_at_ms,
        key_id=key_id,
        signature=signature,
    )
    for name, dtype in COLUMNS.items():
        setattr(msg, name, np.ascontiguousarray(cols.arrays[name], dtype=dtype).tobytes())
    msg.devices.extend(cols.devices)
    msg.zones.extend(cols.zones)
    msg.owners.extend(cols.owners)
    return msg


def parse(payload: bytes) -> types_pb2.RecordBatch:
    """Decode a stored or received ``RecordBatch``; raises ValueError on malformed bytes."""
    try:
        return types_pb2.RecordBatch.FromString(payload)
    except Exception as exc:
        raise ValueError(f"malformed RecordBatch: {exc}") from exc


def from_proto(msg: types_pb2.RecordBatch) -> Columns:
    """Decode columns without a Python object per record; raises ValueError on bad shapes."""
    arrays = {}
    for name, dtype in COLUMNS.items():
        raw = getattr(msg, name)
        itemsize = np.dtype(dtype).itemsize
        if len(raw) != itemsize * msg.count:
            raise ValueError(f"column {name}: {len(raw)} bytes for {msg.count} records")
        arrays[name] = np.frombuffer(raw, dtype=dtype).astype(np.dtype(dtype).newbyteorder("="))
    for name, table in (("device", msg.devices), ("zone", msg.zones), ("owner", msg.owners)):
        col = arrays[name]
        if len(col) and (col.min() < 0 or col.max() >= len(table)):
            raise ValueError(f"column {name}: index outside its dictionary of {len(table)}")
    return Columns(arrays, list(msg.devices), list(msg.zones), list(msg.owners))
