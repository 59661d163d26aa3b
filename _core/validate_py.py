"""Batch validation of record columns: the pure-Python reference twin of ``validate.pyx``.

Same signature, same results, same errors as the compiled kernel; written for clarity, not
speed.  The rules and their order are in ``docs/core.md``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from eap._core.codes import (
    CARBON_INTENSITY_OUT_OF_RANGE,
    CARBON_MG_MAX,
    EXCEEDS_CAPACITY,
    EXCEEDS_METERED,
    INTERVAL_EMPTY,
    INTERVAL_MISALIGNED,
    INTERVAL_OVERLAP,
    INTERVAL_TOO_LONG,
    MAX_INTERVAL_S,
    OK,
    RENEWABLE_PPM_MAX,
    RENEWABLE_SHARE_OUT_OF_RANGE,
    SERIAL_OVERLAP,
    SERIAL_RANGE_INVALID,
    SOURCE_INVALID,
    SOURCE_MAX,
    TECHNOLOGY_INVALID,
    TECHNOLOGY_MAX,
)
from eap._core.columns import record_columns

__all__ = ["validate"]


def _record_code(
    ss: int, se: int, s: int, e: int, src: int, tech: int, ren: int, car: int, cap: int
) -> int:
    """Rules 1-9 for one record: the first one it breaks, or ``OK``."""
    if e <= s:
        return INTERVAL_EMPTY
    dur = e - s
    if dur > MAX_INTERVAL_S:
        return INTERVAL_TOO_LONG
    if MAX_INTERVAL_S % dur or s % dur:
        return INTERVAL_MISALIGNED
    if ss < 0 or se <= ss:
        return SERIAL_RANGE_INVALID
    if not 1 <= src <= SOURCE_MAX:
        return SOURCE_INVALID
    if not 1 <= tech <= TECHNOLOGY_MAX:
        return TECHNOLOGY_INVALID
    if ren > RENEWABLE_PPM_MAX:
        return RENEWABLE_SHARE_OUT_OF_RANGE
    if car > CARBON_MG_MAX:
        return CARBON_INTENSITY_OUT_OF_RANGE
    if cap < 0 or (se - ss) * MAX_INTERVAL_S > cap * dur:
        return EXCEEDS_CAPACITY
    return OK


def _overlapping(spans: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """The spans ``[start, end)`` of a list of distinct spans that intersect another one."""
    spans = sorted(spans)
    hit: set[tuple[int, int]] = set()
    max_end = None
    for k, (s, e) in enumerate(spans):
        if max_end is not None and max_end > s:
            hit.add((s, e))
        if k + 1 < len(spans) and spans[k + 1][0] < e:
            hit.add((s, e))
        max_end = e if max_end is None else max(max_end, e)
    return hit


def _serial_overlaps(valid: list[int], ss: list[int], se: list[int]) -> set[int]:
    """Rule 11: records whose serial range intersects the range of another record."""
    by_range: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i in valid:
        by_range[(ss[i], se[i])].append(i)
    hit = {i for rows in by_range.values() if len(rows) > 1 for i in rows}
    for span in _overlapping(list(by_range)):
        hit.update(by_range[span])
    return hit


def _interval_overlaps(
    valid: list[int], dev: list[int], ist: list[int], ien: list[int]
) -> set[int]:
    """Rule 10: records whose interval intersects a different interval of the same device."""
    by_device: dict[int, dict[tuple[int, int], list[int]]] = defaultdict(lambda: defaultdict(list))
    for i in valid:
        by_device[dev[i]][(ist[i], ien[i])].append(i)
    hit: set[int] = set()
    for intervals in by_device.values():
        for span in _overlapping(list(intervals)):
            hit.update(intervals[span])
    return hit


def _exceeds_metered(
    valid: list[int], dev: list[int], ist: list[int], ien: list[int], wh: list[int], met: list[int]
) -> set[int]:
    """Rule 12: records of a device-interval whose Wh sum passes its metered Wh.

    The limit of a device-interval is the smallest non-negative ``metered_wh`` among its
    records; a device-interval without one is not checked.
    """
    groups: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    for i in valid:
        groups[(dev[i], ist[i], ien[i])].append(i)
    hit: set[int] = set()
    for rows in groups.values():
        limits = [met[i] for i in rows if met[i] >= 0]
        if limits and sum(wh[i] for i in rows) > min(limits):
            hit.update(rows)
    return hit


def validate(
    serial_start: Any,
    serial_end: Any,
    device: Any,
    interval_start: Any,
    interval_end: Any,
    source: Any,
    technology: Any,
    renewable_ppm: Any,
    carbon_mg: Any,
    capacity_w: Any,
    metered_wh: Any,
) -> np.ndarray:
    """Validate a batch of records; returns one uint8 code per record (0 = ``OK``).

    Each column is a 1-D integer array-like in the canonical dtype or one its values fit
    (``eap._core.columns.RECORD_DTYPES``); ``capacity_w`` is the capacity of each record's
    device in W, ``metered_wh`` the metered Wh of each record's device-interval or a negative
    number (canonically -1) for "not checked".  A record gets the code of the first rule it
    breaks; rules 10-12 consider only records that pass rules 1-9.

    Raises:
        ValueError: columns of different lengths, or values that do not fit a column's dtype.
    """
    cols, n = record_columns(
        serial_start=serial_start,
        serial_end=serial_end,
        device=device,
        interval_start=interval_start,
        interval_end=interval_end,
        source=source,
        technology=technology,
        renewable_ppm=renewable_ppm,
        carbon_mg=carbon_mg,
        capacity_w=capacity_w,
        metered_wh=metered_wh,
    )
    ss, se, dev, ist, ien, src, tech, ren, car, cap, met = (c.tolist() for c in cols)
    codes = [
        _record_code(ss[i], se[i], ist[i], ien[i], src[i], tech[i], ren[i], car[i], cap[i])
        for i in range(n)
    ]
    valid = [i for i in range(n) if codes[i] == OK]
    wh = [se[i] - ss[i] if codes[i] == OK else 0 for i in range(n)]
    interval = _interval_overlaps(valid, dev, ist, ien)
    serial = _serial_overlaps(valid, ss, se)
    metered = _exceeds_metered(valid, dev, ist, ien, wh, met)
    for i in valid:
        if i in interval:
            codes[i] = INTERVAL_OVERLAP
        elif i in serial:
            codes[i] = SERIAL_OVERLAP
        elif i in metered:
            codes[i] = EXCEEDS_METERED
    return np.array(codes, dtype=np.uint8)
