"""Type stub of the compiled ``eap._core.merkle`` (twin: ``eap._core.merkle_py``)."""

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

LEAF_PREFIX: int
NODE_PREFIX: int
STRING_PREFIX: int
LEAF_SIZE: int

def _sha256_impl(
    force: Literal["portable", "auto"] | None = None,
) -> Literal["sha-ni", "portable"]:
    """The SHA-256 code in use; ``force`` switches it (tests)."""

def dictionary_digests(entries: Iterable[str | bytes]) -> npt.NDArray[np.uint8]:
    """``SHA256(0x02 || utf8(s))`` per entry: ``(m, 32)`` uint8."""

def leaf_hashes(
    serial_start: npt.ArrayLike,
    serial_end: npt.ArrayLike,
    device: npt.ArrayLike,
    interval_start: npt.ArrayLike,
    interval_end: npt.ArrayLike,
    source: npt.ArrayLike,
    technology: npt.ArrayLike,
    renewable_ppm: npt.ArrayLike,
    carbon_mg: npt.ArrayLike,
    zone: npt.ArrayLike,
    owner: npt.ArrayLike,
    device_digests: npt.ArrayLike | Sequence[bytes],
    zone_digests: npt.ArrayLike | Sequence[bytes],
    owner_digests: npt.ArrayLike | Sequence[bytes],
) -> npt.NDArray[np.uint8]:
    """Leaf hash of every record: ``(n, 32)`` uint8."""

def merkle_root(leaves: npt.ArrayLike | Sequence[bytes]) -> bytes:
    """RFC 6962 tree hash; ``SHA256(b"")`` for no leaves."""

def inclusion_proof(leaves: npt.ArrayLike | Sequence[bytes], index: int) -> list[bytes]:
    """Audit path of leaf ``index``, leaf to root."""

def verify_inclusion(leaf_hash: Any, index: Any, n: Any, proof: Iterable[Any], root: Any) -> bool:
    """RFC 9162 inclusion check; malformed input is False."""

LINEAGE_PREFIX: int

def lineage_hashes(parents: npt.ArrayLike, ids: Iterable[str]) -> list[str]:
    """``hex(SHA256(0x03 || parent || utf8(id)))`` per row; a list of ``str``."""

def issued_lineages(
    parents: npt.ArrayLike, issuer: str, serial_start: npt.ArrayLike, serial_end: npt.ArrayLike
) -> npt.NDArray[np.uint8]:
    """``SHA256(0x03 || parent || utf8(issuer/start-end))`` per row, ``(n, 32)`` uint8."""
