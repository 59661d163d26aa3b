"""Public coarse location of a device: an H3 cell, never finer than :data:`MAX_PUBLIC_RESOLUTION`.

A device's exact coordinates stay in the node (OPERATIONS reads only). What leaves the node
(bundles, federation announcements, custody records, proofs, exports) carries only the cell
:func:`public_cell` computes at the operator's ``[privacy] h3_resolution``. Resolution 7 cells
average about 5 km² (edge ~1.2 km): several hundred households in a city, so one cell does not
point at one roof. Finer resolutions are refused by the configuration and by :func:`cell_problem`
on everything that arrives from a peer.

Nodes that registered devices before H3 cells carry the earlier 1-degree cells (``N06W076``);
:func:`cell_problem` still accepts them, they are coarser than any H3 cell allowed.
"""

from __future__ import annotations

import math
import re

import h3

#: Finest H3 resolution allowed in anything that leaves the node.
MAX_PUBLIC_RESOLUTION = 7
#: Default ``[privacy] h3_resolution``.
DEFAULT_RESOLUTION = 7
#: The earlier 1-degree cells, named by their south-west corner.
LEGACY_CELL_RE = re.compile(r"^[NS]\d{2}[EW]\d{3}$")


def public_cell(lat: float, lon: float, resolution: int = DEFAULT_RESOLUTION) -> str:
    """The H3 cell (hex string) containing ``lat``/``lon`` at ``resolution`` (0..7)."""
    if not 0 <= resolution <= MAX_PUBLIC_RESOLUTION:
        raise ValueError(f"H3 resolution {resolution} is finer than {MAX_PUBLIC_RESOLUTION}")
    return h3.latlng_to_cell(float(lat), float(lon), resolution)


def legacy_cell(lat: float, lon: float) -> str:
    """The earlier 1-degree cell named by its south-west corner, e.g. ``N06W076``."""
    south, west = math.floor(lat), math.floor(lon)
    return f"{'N' if south >= 0 else 'S'}{abs(south):02d}{'E' if west >= 0 else 'W'}{abs(west):03d}"


def resolution_of(cell: str) -> int | None:
    """H3 resolution of ``cell``; None when it is not a valid H3 cell."""
    try:
        if not h3.is_valid_cell(cell):
            return None
        return h3.get_resolution(cell)
    except (TypeError, ValueError):
        return None


def cell_problem(cell: str) -> str | None:
    """Why ``cell`` may not be a public cell, or None (empty, legacy 1-degree, or H3 <= 7)."""
    if not cell or LEGACY_CELL_RE.match(cell):
        return None
    res = resolution_of(cell)
    if res is None:
        return "cell must be an H3 cell (hex) or a 1-degree cell like N06W076"
    if res > MAX_PUBLIC_RESOLUTION:
        return f"cell resolution {res} is finer than the public maximum {MAX_PUBLIC_RESOLUTION}"
    return None
