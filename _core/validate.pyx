"""Batch validation of record columns (compiled kernel; twin: ``eap._core.validate_py``).

One pass checks the per-record rules 1-9; the records that pass are then sorted twice (by
serial start, and by device and interval start: a radix sort in C, skipped when the batch is
already in order) and swept once per order for the cross-record rules 10-12.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

import numpy as np

from eap._core.codes import (
    CARBON_INTENSITY_OUT_OF_RANGE,
    EXCEEDS_CAPACITY,
    EXCEEDS_METERED,
    INTERVAL_EMPTY,
    INTERVAL_MISALIGNED,
    INTERVAL_OVERLAP,
    INTERVAL_TOO_LONG,
    OK,
    RENEWABLE_SHARE_OUT_OF_RANGE,
    RULE_NAMES,
    SERIAL_OVERLAP,
    SERIAL_RANGE_INVALID,
    SOURCE_INVALID,
    TECHNOLOGY_INVALID,
)
from eap._core.columns import record_columns

from _radix cimport bit_length, radix_sort
from _rules cimport *

#: The C enum of this module, for the test that it matches ``eap._core.codes``.
_C_CODES = (
    C_OK, C_INTERVAL_EMPTY, C_INTERVAL_TOO_LONG, C_INTERVAL_MISALIGNED, C_SERIAL_RANGE_INVALID,
    C_SOURCE_INVALID, C_TECHNOLOGY_INVALID, C_RENEWABLE_SHARE_OUT_OF_RANGE,
    C_CARBON_INTENSITY_OUT_OF_RANGE, C_EXCEEDS_CAPACITY, C_INTERVAL_OVERLAP, C_SERIAL_OVERLAP,
    C_EXCEEDS_METERED,
)

cdef uint64_t SUM_CAP = (<uint64_t>1) << 63


cdef inline uint8_t record_code(int64_t ss, int64_t se, int64_t s, int64_t e, uint8_t src,
                                uint8_t tech, uint32_t ren, uint32_t car, int64_t cap) noexcept nogil:
    cdef int64_t dur, wh, limit
    if e <= s:
        return C_INTERVAL_EMPTY
    if <uint64_t>e - <uint64_t>s > 3600:  # exact even when e - s overflows int64
        return C_INTERVAL_TOO_LONG
    dur = e - s
    if 3600 % dur != 0 or s % dur != 0:
        return C_INTERVAL_MISALIGNED
    if ss < 0 or se <= ss:
        return C_SERIAL_RANGE_INVALID
    if src == 0 or src > 12:
        return C_SOURCE_INVALID
    if tech == 0 or tech > 14:
        return C_TECHNOLOGY_INVALID
    if ren > 1000000:
        return C_RENEWABLE_SHARE_OUT_OF_RANGE
    if car > 2000000:
        return C_CARBON_INTENSITY_OUT_OF_RANGE
    if cap < 0:
        return C_EXCEEDS_CAPACITY
    # Wh * 3600 > cap * dur  <=>  Wh > floor(cap * dur / 3600), computed without overflow
    wh = se - ss
    limit = (cap // 3600) * dur + ((cap % 3600) * dur) // 3600
    if wh > limit:
        return C_EXCEEDS_CAPACITY
    return C_OK


cdef void serial_overlaps(const int64_t* ss, const int64_t* se, uint32_t* idx, size_t m,
                          uint8_t* flags) noexcept nogil:
    """Flag every record of ``idx[0:m]`` (sorted by serial start) whose range meets another."""
    cdef size_t k
    cdef uint32_t i, prev
    cdef int64_t maxend = se[idx[0]]
    for k in range(1, m):
        i = idx[k]
        prev = idx[k - 1]
        if maxend > ss[i]:
            flags[i] |= FLAG_SERIAL_OVERLAP
        if se[prev] > ss[i]:
            flags[prev] |= FLAG_SERIAL_OVERLAP
        if se[i] > maxend:
            maxend = se[i]


cdef void device_interval_rules(const int64_t* ss, const int64_t* se, const int32_t* dev,
                                const int64_t* ist, const int64_t* ien, const int64_t* met,
                                uint32_t* idx, size_t m, uint8_t* flags) noexcept nogil:
    """Rules 10 and 12 over ``idx[0:m]`` sorted by (device, interval_start).

    A run of records with one device and one start is a group of identical device-intervals
    when all their ends agree; otherwise its records overlap each other.  A run also overlaps
    an earlier run of its device whose end passes its start, and the next run of its device
    when that starts before its end.
    """
    cdef size_t k = 0, r, q
    cdef uint32_t i, j
    cdef int32_t d, prev_dev = 0
    cdef int64_t s, e0, run_end, prev_end = 0, limit
    cdef uint64_t total
    cdef bint uniform, overlap, have_prev = False, have_limit
    cdef uint8_t flag
    while k < m:
        i = idx[k]
        d = dev[i]
        s = ist[i]
        e0 = ien[i]
        run_end = e0
        uniform = True
        total = <uint64_t>(se[i] - ss[i])
        have_limit = met[i] >= 0
        limit = met[i]
        r = k + 1
        while r < m:
            j = idx[r]
            if dev[j] != d or ist[j] != s:
                break
            if ien[j] != e0:
                uniform = False
                if ien[j] > run_end:
                    run_end = ien[j]
            total += <uint64_t>(se[j] - ss[j])
            if total > SUM_CAP:  # saturate: anything past int64 exceeds every limit
                total = SUM_CAP
            if met[j] >= 0 and (not have_limit or met[j] < limit):
                limit = met[j]
                have_limit = True
            r += 1
        overlap = not uniform
        if have_prev and prev_dev == d and prev_end > s:
            overlap = True
        if r < m and dev[idx[r]] == d and ist[idx[r]] < run_end:
            overlap = True
        flag = 0
        if overlap:
            flag = FLAG_INTERVAL_OVERLAP
        elif have_limit and total > <uint64_t>limit:
            flag = FLAG_EXCEEDS_METERED
        if flag:
            for q in range(k, r):
                flags[idx[q]] |= flag
        if have_prev and prev_dev == d:
            if run_end > prev_end:
                prev_end = run_end
        else:
            prev_end = run_end
        prev_dev = d
        have_prev = True
        k = r


cdef int sort_by_serial(const int64_t* ss, uint32_t* idx, uint64_t* keys, uint32_t* ibuf,
                        uint64_t* kbuf, size_t m) noexcept nogil:
    cdef size_t k
    cdef int64_t lo
    for k in range(1, m):
        if ss[idx[k]] < ss[idx[k - 1]]:
            break
    else:
        return 0
    lo = ss[idx[0]]
    for k in range(1, m):
        if ss[idx[k]] < lo:
            lo = ss[idx[k]]
    for k in range(m):
        keys[k] = <uint64_t>ss[idx[k]] - <uint64_t>lo
    return radix_sort(keys, idx, kbuf, ibuf, m)


cdef int sort_by_device_interval(const int32_t* dev, const int64_t* ist, uint32_t* idx,
                                 uint64_t* keys, uint32_t* ibuf, uint64_t* kbuf,
                                 size_t m) noexcept nogil:
    cdef size_t k
    cdef uint32_t i, p
    cdef int32_t dlo, dhi
    cdef int64_t slo, shi
    cdef int sbits, dbits
    for k in range(1, m):
        i = idx[k]
        p = idx[k - 1]
        if dev[i] < dev[p] or (dev[i] == dev[p] and ist[i] < ist[p]):
            break
    else:
        return 0
    dlo = dhi = dev[idx[0]]
    slo = shi = ist[idx[0]]
    for k in range(1, m):
        i = idx[k]
        if dev[i] < dlo:
            dlo = dev[i]
        elif dev[i] > dhi:
            dhi = dev[i]
        if ist[i] < slo:
            slo = ist[i]
        elif ist[i] > shi:
            shi = ist[i]
    dbits = bit_length(<uint64_t>(<int64_t>dhi - <int64_t>dlo))
    sbits = bit_length(<uint64_t>shi - <uint64_t>slo)
    if dbits + sbits <= 64:
        for k in range(m):
            i = idx[k]
            keys[k] = ((<uint64_t>(<int64_t>dev[i] - <int64_t>dlo)) << sbits) | (
                <uint64_t>ist[i] - <uint64_t>slo)
        return radix_sort(keys, idx, kbuf, ibuf, m)
    # the key needs more than 64 bits: sort by start, then stably by device
    for k in range(m):
        keys[k] = <uint64_t>ist[idx[k]] - <uint64_t>slo
    if radix_sort(keys, idx, kbuf, ibuf, m) < 0:
        return -1
    for k in range(m):
        keys[k] = <uint64_t>(<int64_t>dev[idx[k]] - <int64_t>dlo)
    return radix_sort(keys, idx, kbuf, ibuf, m)


cdef int cross_record(size_t n, const int64_t* ss, const int64_t* se, const int32_t* dev,
                      const int64_t* ist, const int64_t* ien, const int64_t* met, uint8_t* out,
                      size_t m, uint32_t* idx, uint32_t* ibuf, uint64_t* keys, uint64_t* kbuf,
                      uint8_t* flags) noexcept nogil:
    """Rules 10-12 over the ``m`` records whose code is still OK."""
    cdef size_t i, k
    cdef uint8_t f
    memset(flags, 0, n)
    k = 0
    for i in range(n):
        if out[i] == C_OK:
            idx[k] = <uint32_t>i
            k += 1
    if sort_by_serial(ss, idx, keys, ibuf, kbuf, m) < 0:
        return -1
    serial_overlaps(ss, se, idx, m, flags)
    k = 0
    for i in range(n):
        if out[i] == C_OK:
            idx[k] = <uint32_t>i
            k += 1
    if sort_by_device_interval(dev, ist, idx, keys, ibuf, kbuf, m) < 0:
        return -1
    device_interval_rules(ss, se, dev, ist, ien, met, idx, m, flags)
    for i in range(n):
        f = flags[i]
        if f:
            if f & FLAG_INTERVAL_OVERLAP:
                out[i] = C_INTERVAL_OVERLAP
            elif f & FLAG_SERIAL_OVERLAP:
                out[i] = C_SERIAL_OVERLAP
            else:
                out[i] = C_EXCEEDS_METERED
    return 0


cdef int validate_columns(size_t n, const int64_t* ss, const int64_t* se, const int32_t* dev,
                          const int64_t* ist, const int64_t* ien, const uint8_t* src,
                          const uint8_t* tech, const uint32_t* ren, const uint32_t* car,
                          const int64_t* cap, const int64_t* met, uint8_t* out) noexcept nogil:
    """Fill ``out`` with the code of every record; -1 when memory runs out."""
    cdef size_t i, m = 0
    cdef int rc = -1
    for i in range(n):
        out[i] = record_code(ss[i], se[i], ist[i], ien[i], src[i], tech[i], ren[i], car[i], cap[i])
        m += out[i] == C_OK
    if m == 0:
        return 0
    cdef uint32_t* idx = <uint32_t*>malloc(m * sizeof(uint32_t))
    cdef uint32_t* ibuf = <uint32_t*>malloc(m * sizeof(uint32_t))
    cdef uint64_t* keys = <uint64_t*>malloc(m * sizeof(uint64_t))
    cdef uint64_t* kbuf = <uint64_t*>malloc(m * sizeof(uint64_t))
    cdef uint8_t* flags = <uint8_t*>malloc(n)
    if idx != NULL and ibuf != NULL and keys != NULL and kbuf != NULL and flags != NULL:
        rc = cross_record(n, ss, se, dev, ist, ien, met, out, m, idx, ibuf, keys, kbuf, flags)
    free(idx)
    free(ibuf)
    free(keys)
    free(kbuf)
    free(flags)
    return rc


def validate(serial_start, serial_end, device, interval_start, interval_end, source, technology,
             renewable_ppm, carbon_mg, capacity_w, metered_wh):
    """Validate a batch of records; returns one uint8 code per record (0 = OK).

    See ``eap._core.validate_py.validate`` (the reference twin) for the rules.
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
    cdef size_t count = n
    out = np.zeros(count, dtype=np.uint8)
    if count == 0:
        return out
    cdef const int64_t[::1] ss = cols[0]
    cdef const int64_t[::1] se = cols[1]
    cdef const int32_t[::1] dev = cols[2]
    cdef const int64_t[::1] ist = cols[3]
    cdef const int64_t[::1] ien = cols[4]
    cdef const uint8_t[::1] src = cols[5]
    cdef const uint8_t[::1] tech = cols[6]
    cdef const uint32_t[::1] ren = cols[7]
    cdef const uint32_t[::1] car = cols[8]
    cdef const int64_t[::1] cap = cols[9]
    cdef const int64_t[::1] met = cols[10]
    cdef uint8_t[::1] o = out
    cdef int rc
    with nogil:
        rc = validate_columns(count, &ss[0], &se[0], &dev[0], &ist[0], &ien[0], &src[0], &tech[0],
                              &ren[0], &car[0], &cap[0], &met[0], &o[0])
    if rc < 0:
        raise MemoryError("validate: cannot allocate sort buffers")
    return out
