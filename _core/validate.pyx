"""Batch validation of record columns (compiled kernel; twin: ``eap._core.validate_py``).

One pass checks the per-record rules 1-9; the records that pass are then sorted twice (by
serial start, and by device and interval start: a radix sort in C, skipped when the batch is
already in order) and swept once per order for the cross-record rules 10-12.
"""

from libc.stdint cimport INT64_MAX, int32_t, int64_t, uint8_t, uint32_t, uint64_t

import numpy as np

from eap._core.columns import record_columns
from eap._core.scratch import scratch

from _radix cimport EAP_PREFETCH, PREFETCH_AHEAD, bit_length, radix_sort
from _rules cimport *

#: The C enum of rule codes, for the test that it matches ``eap._core.codes``.
_C_CODES = (
    C_OK, C_INTERVAL_EMPTY, C_INTERVAL_TOO_LONG, C_INTERVAL_MISALIGNED, C_SERIAL_RANGE_INVALID,
    C_SOURCE_INVALID, C_TECHNOLOGY_INVALID, C_RENEWABLE_SHARE_OUT_OF_RANGE,
    C_CARBON_INTENSITY_OUT_OF_RANGE, C_EXCEEDS_CAPACITY, C_INTERVAL_OVERLAP, C_SERIAL_OVERLAP,
    C_EXCEEDS_METERED,
)
#: The C bounds of the per-record rules, for the test that they match ``eap._core.codes``.
_C_LIMITS = {
    "MAX_INTERVAL_S": C_MAX_INTERVAL_S,
    "SOURCE_MAX": C_SOURCE_MAX,
    "TECHNOLOGY_MAX": C_TECHNOLOGY_MAX,
    "RENEWABLE_PPM_MAX": C_RENEWABLE_PPM_MAX,
    "CARBON_MG_MAX": C_CARBON_MG_MAX,
}

cdef uint64_t SUM_CAP = (<uint64_t>1) << 63


cdef inline uint8_t record_code(int64_t ss, int64_t se, int64_t s, int64_t e, uint8_t src,
                                uint8_t tech, uint32_t ren, uint32_t car, int64_t cap) noexcept nogil:
    """Rules 1-9 for one record: the first one it breaks, or C_OK."""
    cdef int64_t dur, wh, limit, offset
    if e <= s:
        return C_INTERVAL_EMPTY
    if <uint64_t>e - <uint64_t>s > C_MAX_INTERVAL_S:  # exact even when e - s overflows int64
        return C_INTERVAL_TOO_LONG
    dur = e - s
    if C_MAX_INTERVAL_S % <uint32_t>dur != 0:
        return C_INTERVAL_MISALIGNED
    # dur divides 3600, so s is a multiple of dur iff its offset in the hour is (a division
    # by a constant and a 32-bit one instead of a 64-bit division)
    offset = s % C_MAX_INTERVAL_S
    if offset < 0:
        offset += C_MAX_INTERVAL_S
    if <uint32_t>offset % <uint32_t>dur != 0:
        return C_INTERVAL_MISALIGNED
    if ss < 0 or se <= ss:
        return C_SERIAL_RANGE_INVALID
    if src == 0 or src > C_SOURCE_MAX:
        return C_SOURCE_INVALID
    if tech == 0 or tech > C_TECHNOLOGY_MAX:
        return C_TECHNOLOGY_INVALID
    if ren > C_RENEWABLE_PPM_MAX:
        return C_RENEWABLE_SHARE_OUT_OF_RANGE
    if car > C_CARBON_MG_MAX:
        return C_CARBON_INTENSITY_OUT_OF_RANGE
    if cap < 0:
        return C_EXCEEDS_CAPACITY
    # Wh * 3600 > cap * dur  <=>  Wh > floor(cap * dur / 3600), computed without overflow
    wh = se - ss
    limit = (cap // C_MAX_INTERVAL_S) * dur + ((cap % C_MAX_INTERVAL_S) * dur) // C_MAX_INTERVAL_S
    if wh > limit:
        return C_EXCEEDS_CAPACITY
    return C_OK


cdef int serial_overlaps(uint64_t* keys, int64_t lo, const int64_t* ends, uint32_t* idx,
                         size_t m, uint8_t* flags, uint64_t* kbuf, uint32_t* ibuf) noexcept nogil:
    """Rule 11 over the valid records: ``keys[k] + lo`` is the serial start of valid record
    ``k``, ``ends[k]`` its serial end; flags every record whose range meets another one."""
    cdef size_t k
    cdef uint32_t i, prev
    cdef int64_t s, e, prev_end, maxend
    for k in range(1, m):
        if keys[k] < keys[k - 1]:
            if radix_sort(keys, idx, kbuf, ibuf, m) < 0:
                return -1
            break
    prev = idx[0]
    prev_end = maxend = ends[prev]
    for k in range(1, m):
        if k + PREFETCH_AHEAD < m:
            EAP_PREFETCH(&ends[idx[k + PREFETCH_AHEAD]])
        i = idx[k]
        s = <int64_t>(keys[k] + <uint64_t>lo)
        e = ends[i]
        if maxend > s:
            flags[i] |= FLAG_SERIAL_OVERLAP
        if prev_end > s:
            flags[prev] |= FLAG_SERIAL_OVERLAP
        if e > maxend:
            maxend = e
        prev = i
        prev_end = e
    return 0


cdef int sort_by_device_interval(const DevRec* recs, uint32_t* idx, uint64_t* keys,
                                 uint32_t* ibuf, uint64_t* kbuf, size_t m) noexcept nogil:
    """Order ``idx`` by (device, interval start); a no-op when the records are in that order.

    The key packs device, the hour of the start and the second within that hour, each minus
    its minimum and in as few bits as its range needs, so that usual batches sort in two or
    three passes; a key wider than 64 bits falls back to two stable sorts.
    """
    cdef size_t k
    cdef int32_t dlo, dhi
    cdef int64_t h, off, hlo, hhi, slo
    cdef uint64_t offs = 0
    cdef int dbits, hbits, obits
    for k in range(1, m):
        if recs[k].device < recs[k - 1].device or (
                recs[k].device == recs[k - 1].device and recs[k].start < recs[k - 1].start):
            break
    else:
        return 0
    dlo = dhi = recs[0].device
    hlo = hhi = recs[0].start // 3600 - (recs[0].start % 3600 < 0)
    slo = recs[0].start
    for k in range(m):
        if recs[k].device < dlo:
            dlo = recs[k].device
        elif recs[k].device > dhi:
            dhi = recs[k].device
        if recs[k].start < slo:
            slo = recs[k].start
        h = recs[k].start // 3600 - (recs[k].start % 3600 < 0)   # floor division
        offs |= <uint64_t>(recs[k].start - h * 3600)
        if h < hlo:
            hlo = h
        elif h > hhi:
            hhi = h
    dbits = bit_length(<uint64_t>(<int64_t>dhi - <int64_t>dlo))
    hbits = bit_length(<uint64_t>(hhi - hlo))
    obits = bit_length(offs)
    if dbits + hbits + obits <= 64:
        for k in range(m):
            h = recs[k].start // 3600 - (recs[k].start % 3600 < 0)
            off = recs[k].start - h * 3600
            keys[k] = ((<uint64_t>(<int64_t>recs[k].device - <int64_t>dlo)) << (hbits + obits)) | (
                (<uint64_t>(h - hlo)) << obits) | <uint64_t>off
        return radix_sort(keys, idx, kbuf, ibuf, m)
    for k in range(m):
        keys[k] = <uint64_t>recs[k].start - <uint64_t>slo
    if radix_sort(keys, idx, kbuf, ibuf, m) < 0:
        return -1
    for k in range(m):
        keys[k] = <uint64_t>(<int64_t>recs[idx[k]].device - <int64_t>dlo)
    return radix_sort(keys, idx, kbuf, ibuf, m)


cdef void device_interval_rules(const DevRec* recs, const uint32_t* idx, size_t m,
                                uint8_t* flags) noexcept nogil:
    """Rules 10 and 12 over valid records ordered by (device, interval start) through ``idx``.

    A run of records with one device and one start is a group of identical device-intervals
    when all their ends agree; otherwise its records overlap each other.  A run also overlaps
    an earlier run of its device whose end passes its start, and the next run of its device
    when that starts before its end.
    """
    cdef size_t k = 0, r, q
    cdef const DevRec* a
    cdef const DevRec* b
    cdef int64_t run_end, prev_end = 0, limit
    cdef uint64_t total
    cdef bint uniform, overlap, have_prev = False, have_limit
    cdef uint8_t flag
    while k < m:
        a = &recs[idx[k]]
        run_end = a.start + a.duration
        uniform = True
        total = <uint64_t>a.wh
        have_limit = a.metered >= 0
        limit = a.metered
        r = k + 1
        while r < m:
            if r + PREFETCH_AHEAD < m:
                EAP_PREFETCH(&recs[idx[r + PREFETCH_AHEAD]])
            b = &recs[idx[r]]
            if b.device != a.device or b.start != a.start:
                break
            if b.duration != a.duration:
                uniform = False
                if b.start + b.duration > run_end:
                    run_end = b.start + b.duration
            total += <uint64_t>b.wh
            if total > SUM_CAP:  # saturate: anything past int64 exceeds every limit
                total = SUM_CAP
            if b.metered >= 0 and (not have_limit or b.metered < limit):
                limit = b.metered
                have_limit = True
            r += 1
        overlap = not uniform
        if have_prev and prev_end > a.start:
            overlap = True
        if r < m and recs[idx[r]].device == a.device and recs[idx[r]].start < run_end:
            overlap = True
        flag = 0
        if overlap:
            flag = FLAG_INTERVAL_OVERLAP
        elif have_limit and total > <uint64_t>limit:
            flag = FLAG_EXCEEDS_METERED
        if flag:
            for q in range(k, r):
                flags[idx[q]] |= flag
        if r < m and recs[idx[r]].device == a.device:
            if not have_prev or run_end > prev_end:
                prev_end = run_end
            have_prev = True
        else:
            have_prev = False
        k = r


cdef int cross_record(size_t n, const int64_t* ss, const int64_t* se, const int32_t* dev,
                      const int64_t* ist, const int64_t* ien, const int64_t* met, uint8_t* out,
                      size_t m, uint32_t* idx, uint32_t* ibuf, uint64_t* keys, uint64_t* kbuf,
                      int64_t* ends, DevRec* recs, uint8_t* flags) noexcept nogil:
    """Rules 10-12 over the ``m`` records whose code is still OK.

    The valid records are first copied, in order, into compact arrays (serial keys and ends,
    ``DevRec``s) so that the sweeps after each sort gather one cache line per record.
    """
    cdef size_t i, k = 0
    cdef int64_t lo = INT64_MAX
    cdef uint8_t f
    for i in range(n):
        if out[i] == C_OK:
            keys[k] = <uint64_t>ss[i]
            ends[k] = se[i]
            recs[k].start = ist[i]
            recs[k].duration = <int32_t>(ien[i] - ist[i])
            recs[k].wh = se[i] - ss[i]
            recs[k].metered = met[i]
            recs[k].device = dev[i]
            flags[k] = 0
            idx[k] = <uint32_t>k
            if ss[i] < lo:
                lo = ss[i]
            k += 1
    for k in range(m):
        keys[k] -= <uint64_t>lo
    if serial_overlaps(keys, lo, ends, idx, m, flags, kbuf, ibuf) < 0:
        return -1
    for k in range(m):
        idx[k] = <uint32_t>k
    if sort_by_device_interval(recs, idx, keys, ibuf, kbuf, m) < 0:
        return -1
    device_interval_rules(recs, idx, m, flags)
    k = 0
    for i in range(n):
        if out[i] == C_OK:
            f = flags[k]
            k += 1
            if f & FLAG_INTERVAL_OVERLAP:
                out[i] = C_INTERVAL_OVERLAP
            elif f & FLAG_SERIAL_OVERLAP:
                out[i] = C_SERIAL_OVERLAP
            elif f & FLAG_EXCEEDS_METERED:
                out[i] = C_EXCEEDS_METERED
    return 0


cdef size_t scratch_bytes(size_t n) noexcept nogil:
    """Scratch a batch of ``n`` records needs (a multiple of 64 per array, 64-byte aligned)."""
    return 64 * (((n * sizeof(DevRec) + 63) // 64) + 3 * ((n * 8 + 63) // 64)
                 + 2 * ((n * 4 + 63) // 64) + (n + 63) // 64)


cdef int validate_columns(size_t n, const int64_t* ss, const int64_t* se, const int32_t* dev,
                          const int64_t* ist, const int64_t* ien, const uint8_t* src,
                          const uint8_t* tech, const uint32_t* ren, const uint32_t* car,
                          const int64_t* cap, const int64_t* met, uint8_t* out,
                          char* buf) noexcept nogil:
    """Fill ``out`` with the code of every record; ``buf`` holds ``scratch_bytes(n)``."""
    cdef size_t i, m = 0
    for i in range(n):
        out[i] = record_code(ss[i], se[i], ist[i], ien[i], src[i], tech[i], ren[i], car[i], cap[i])
        m += out[i] == C_OK
    if m == 0:
        return 0
    cdef DevRec* recs = <DevRec*>buf
    buf += 64 * ((m * sizeof(DevRec) + 63) // 64)
    cdef uint64_t* keys = <uint64_t*>buf
    buf += 64 * ((m * 8 + 63) // 64)
    cdef uint64_t* kbuf = <uint64_t*>buf
    buf += 64 * ((m * 8 + 63) // 64)
    cdef int64_t* ends = <int64_t*>buf
    buf += 64 * ((m * 8 + 63) // 64)
    cdef uint32_t* idx = <uint32_t*>buf
    buf += 64 * ((m * 4 + 63) // 64)
    cdef uint32_t* ibuf = <uint32_t*>buf
    buf += 64 * ((m * 4 + 63) // 64)
    cdef uint8_t* flags = <uint8_t*>buf
    return cross_record(n, ss, se, dev, ist, ien, met, out, m, idx, ibuf, keys, kbuf, ends, recs,
                        flags)


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
    cdef uint8_t[::1] buf = scratch(scratch_bytes(count))
    cdef int rc
    with nogil:
        rc = validate_columns(count, &ss[0], &se[0], &dev[0], &ist[0], &ien[0], &src[0], &tech[0],
                              &ren[0], &car[0], &cap[0], &met[0], &o[0], <char*>&buf[0])
    if rc < 0:
        raise MemoryError("validate: cannot allocate sort buffers")
    return out
