"""Batch validation of record columns (compiled kernel; twin: ``eap._core.validate_py``).

One pass over the columns checks the per-record rules 1-9, notes how the valid records are
ordered and what ranges their fields span, and sweeps rule 11 while their serial starts ascend.
Valid intervals never cross a clock hour, so rules 10 and 12 only concern records of one device
in one hour: the kernel finds those in a table of one slot per device and hour (per device and
duration when all durations are equal), or, when that table would be sparse or crowded, by a
sweep in (device, interval start) order (the batch's own, or an LSD radix sort in C).  When the
serials did not ascend as given, the table walk (or the sweep) checks whether they ascend
without overlaps in device order, the order nodes issue them in; only if not are the records
sorted by serial start.
"""

from libc.stdint cimport (
    INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, int32_t, int64_t, uint8_t, uint32_t, uint64_t,
)
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset

import numpy as np

from eap._core.columns import record_columns
from eap._core.scratch import scratch

from _radix cimport (
    EAP_PREFETCH, PREFETCH_AHEAD, bit_length, radix_digits, radix_scatter, radix_sort,
)
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

cdef enum:
    # How an order of the valid records is given to a sweep.
    ORDER_ROWS = 0     # the batch's own order (invalid records skipped)
    ORDER_PACKED = 1   # sorted 64-bit keys: fields above the row index, see device_order
    ORDER_INDEXED = 2  # a list of rows
    # Slots of the (device, period) table per valid record, at most: when it also holds the
    # serial ranges for the walk (8 bytes a slot), and when it is only two bitmaps.
    SLOTS_PER_RECORD = 2
    SLOTS_PER_RECORD_BITS = 16
    # Share of the records that may join another one's slot before the table is left for a
    # sweep in (device, interval start) order (slots of several records cost more one by one):
    # 1/8 when the batch is in that order (the sweep is then one pass), 1/2 when it would have
    # to be sorted.
    MULTI_SHARE_IN_ORDER = 8
    MULTI_SHARE_SORTED = 2

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define EAP_CTZ64(x) __builtin_ctzll(x)
    #else
    static int EAP_CTZ64(unsigned long long x) {  /* x != 0 */
        int n = 0;
        while (!(x & 1)) { x >>= 1; n++; }
        return n;
    }
    #endif
    """
    # index of the lowest set bit of a nonzero word
    int ctz64 "EAP_CTZ64"(uint64_t x) noexcept nogil


ctypedef struct Batch:
    size_t n
    const int64_t* ss
    const int64_t* se
    const int32_t* dev
    const int64_t* ist
    const int64_t* ien
    const int64_t* met
    uint8_t* out           # codes; flags above CODE_MASK for valid records until the end
    uint64_t* keys         # scratch of n keys ...
    uint64_t* kbuf         # ... and n more, right after
    # what the first pass finds out about the m valid records
    size_t m
    int32_t dlo, dhi       # device range
    int64_t hlo, hhi       # range of the hour of the interval start, floor(start / 3600)
    uint64_t offs          # OR of the starts' offsets in their hour
    int64_t ulo, uhi       # duration range
    int64_t slo, shi       # serial start range
    uint64_t whmax         # largest Wh
    bint device_order      # in (device, interval start) order as given
    bint serial_order      # serial starts ascend as given (rule 11 then done)
    bint serial_flags      # the first pass set FLAG_SERIAL_OVERLAP somewhere
    bint flagged           # some flag is set


cdef inline void floor_hour(int64_t s, int64_t* h, int64_t* off) noexcept nogil:
    """``h = floor(s / 3600)``, ``off = s - 3600 h`` in ``[0, 3600)``."""
    cdef int64_t q = s // C_MAX_INTERVAL_S  # cdivision: truncates toward zero
    cdef int64_t r = s - q * C_MAX_INTERVAL_S
    cdef int64_t neg = r >> 63  # -1 when r < 0 (no branch: signs may come in any order)
    h[0] = q + neg
    off[0] = r + (neg & C_MAX_INTERVAL_S)


cdef void first_pass(Batch* b, const uint8_t* src, const uint8_t* tech, const uint32_t* ren,
                     const uint32_t* car, const int64_t* cap) noexcept nogil:
    """Rules 1-9 for every record into ``b.out`` (the first one it breaks, or 0), and what the
    cross-record rules need to know of the valid records.

    A valid record that alone passes its metered Wh gets FLAG_EXCEEDS_METERED: the verdict of
    rule 12 unless it shares its device-interval with another record.  While the serial starts
    ascend, rule 11 is swept here too (``b.serial_order`` says whether that held to the end).
    """
    cdef const int64_t* ss = b.ss
    cdef const int64_t* se = b.se
    cdef const int32_t* dev = b.dev
    cdef const int64_t* ist = b.ist
    cdef const int64_t* ien = b.ien
    cdef const int64_t* met = b.met
    cdef uint8_t* out = b.out
    cdef size_t i, m = 0, prev = 0
    cdef int64_t s, e, dur, h, off, a, z, wh, c, limit, mt
    cdef int32_t d, dlo = INT32_MAX, dhi = INT32_MIN, pd = INT32_MIN
    cdef int64_t hlo = INT64_MAX, hhi = INT64_MIN, ulo = INT64_MAX, uhi = INT64_MIN
    cdef int64_t slo = INT64_MAX, shi = INT64_MIN, ps = INT64_MIN
    cdef int64_t prev_ss = INT64_MIN, prev_end = INT64_MIN, maxend = INT64_MIN
    cdef uint64_t offs = 0, whmax = 0
    cdef bint dev_ord = True, ser_ord = True, ser_flags = False, flagged = False, back
    cdef uint8_t code
    for i in range(b.n):
        s = ist[i]
        e = ien[i]
        if e <= s:
            out[i] = C_INTERVAL_EMPTY
            continue
        if <uint64_t>e - <uint64_t>s > C_MAX_INTERVAL_S:  # exact even when e - s overflows
            out[i] = C_INTERVAL_TOO_LONG
            continue
        dur = e - s
        floor_hour(s, &h, &off)
        # dur divides 3600, so s is a multiple of dur iff its offset in the hour is (whole
        # hours, the usual case, need no division)
        if dur == C_MAX_INTERVAL_S:
            if off != 0:
                out[i] = C_INTERVAL_MISALIGNED
                continue
        elif C_MAX_INTERVAL_S % <uint32_t>dur != 0 or <uint32_t>off % <uint32_t>dur != 0:
            out[i] = C_INTERVAL_MISALIGNED
            continue
        a = ss[i]
        z = se[i]
        if a < 0 or z <= a:
            out[i] = C_SERIAL_RANGE_INVALID
            continue
        if src[i] == 0 or src[i] > C_SOURCE_MAX:
            out[i] = C_SOURCE_INVALID
            continue
        if tech[i] == 0 or tech[i] > C_TECHNOLOGY_MAX:
            out[i] = C_TECHNOLOGY_INVALID
            continue
        if ren[i] > C_RENEWABLE_PPM_MAX:
            out[i] = C_RENEWABLE_SHARE_OUT_OF_RANGE
            continue
        if car[i] > C_CARBON_MG_MAX:
            out[i] = C_CARBON_INTENSITY_OUT_OF_RANGE
            continue
        c = cap[i]
        wh = z - a
        # Wh * 3600 > cap * dur  <=>  Wh > floor(cap * dur / 3600), computed without overflow
        if dur == C_MAX_INTERVAL_S:
            limit = c
        else:
            limit = ((c // C_MAX_INTERVAL_S) * dur
                     + ((c % C_MAX_INTERVAL_S) * dur) // C_MAX_INTERVAL_S)
        if c < 0 or wh > limit:
            out[i] = C_EXCEEDS_CAPACITY
            continue
        # valid: rule 12 for the record alone, and the ranges and orders of the valid records
        code = C_OK
        mt = met[i]
        if mt >= 0 and wh > mt:
            code = FLAG_EXCEEDS_METERED
            flagged = True
        d = dev[i]
        if d < dlo:
            dlo = d
        if d > dhi:
            dhi = d
        if h < hlo:
            hlo = h
        if h > hhi:
            hhi = h
        if dur < ulo:
            ulo = dur
        if dur > uhi:
            uhi = dur
        if a < slo:
            slo = a
        if a > shi:
            shi = a
        if <uint64_t>wh > whmax:
            whmax = <uint64_t>wh
        offs |= <uint64_t>off
        back = (d < pd) | ((d == pd) & (s < ps))  # no branch: shuffled batches would mispredict
        dev_ord &= not back
        pd = d
        ps = s
        if ser_ord:
            if a < prev_ss:
                ser_ord = False
            else:
                if maxend > a:
                    code |= FLAG_SERIAL_OVERLAP
                    ser_flags = True
                if prev_end > a:
                    out[prev] |= FLAG_SERIAL_OVERLAP
                    ser_flags = True
                if z > maxend:
                    maxend = z
                prev_end = z
                prev_ss = a
                prev = i
        out[i] = code
        m += 1
    b.m = m
    b.dlo = dlo
    b.dhi = dhi
    b.hlo = hlo
    b.hhi = hhi
    b.offs = offs
    b.ulo = ulo
    b.uhi = uhi
    b.slo = slo
    b.shi = shi
    b.whmax = whmax
    b.device_order = dev_ord
    b.serial_order = ser_ord
    b.serial_flags = ser_flags
    b.flagged = flagged or ser_flags


cdef void clear_flag(Batch* b, uint8_t flag) noexcept nogil:
    """Clear ``flag`` on every record."""
    cdef size_t i
    cdef uint8_t keep = <uint8_t>~flag
    for i in range(b.n):
        b.out[i] &= keep


# --- rule 11 along another order -------------------------------------------------------------

ctypedef struct SerialCheck:
    # Whether the serial ranges of the valid records, taken in some order, ascend without
    # overlapping: then no record breaks rule 11.  It flags nothing; when ``on`` goes False,
    # rule 11 is left to serial_rule.
    bint on
    int64_t prev_end


cdef inline void serial_check_start(SerialCheck* t, bint on) noexcept nogil:
    t.on = on
    t.prev_end = INT64_MIN


cdef inline void serial_check(SerialCheck* t, int64_t start, int64_t end) noexcept nogil:
    """The next range of the order: it must start at or after the end of the one before it
    (so starts and ends both ascend, and no two ranges meet)."""
    if start < t.prev_end:
        t.on = False
    t.prev_end = end


# --- rules 10 and 12 along (device, interval start) order ------------------------------------

ctypedef struct Order:
    int mode
    size_t count           # positions: n for ORDER_ROWS, m otherwise
    const uint64_t* keys   # ORDER_PACKED
    const uint32_t* rows   # ORDER_INDEXED
    # ORDER_PACKED key, from the low bits up: row (rbits), duration - ulo (ubits), offset in
    # the hour (obits), hour - hlo (hbits), device - dlo
    int rbits, ubits, obits, hbits
    int64_t ulo, hlo
    int32_t dlo


cdef inline bint fetch(const Batch* b, const Order* o, size_t k, size_t* row, int32_t* d,
                       int64_t* s, int64_t* u) noexcept nogil:
    """Row, device, interval start and duration of position ``k`` of the order ``o``; False
    for a record that broke a per-record rule (only ORDER_ROWS has those)."""
    cdef uint64_t key
    cdef size_t i
    cdef int64_t h, off
    if o.mode == ORDER_PACKED:
        key = o.keys[k]
        row[0] = <size_t>(key & (((<uint64_t>1) << o.rbits) - 1))
        key >>= o.rbits
        u[0] = <int64_t>(key & (((<uint64_t>1) << o.ubits) - 1)) + o.ulo
        key >>= o.ubits
        off = <int64_t>(key & (((<uint64_t>1) << o.obits) - 1))
        key >>= o.obits
        h = <int64_t>(key & (((<uint64_t>1) << o.hbits) - 1))
        key >>= o.hbits
        d[0] = <int32_t>(<int64_t>key + o.dlo)
        # h * 3600 + off in uint64 arithmetic: exact modulo 2**64, and the start fits int64
        s[0] = <int64_t>((<uint64_t>h + <uint64_t>o.hlo) * C_MAX_INTERVAL_S + <uint64_t>off)
        return True
    if o.mode == ORDER_ROWS:
        i = k
        if b.out[i] & CODE_MASK:
            return False
    else:
        i = o.rows[k]
    row[0] = i
    d[0] = b.dev[i]
    s[0] = b.ist[i]
    u[0] = b.ien[i] - s[0]
    return True


cdef int sort_rows(const int64_t* col, uint32_t* rows, size_t g) noexcept nogil:
    """Sort ``rows[0:g]`` stably by ``col[row]``.  Returns -1 when memory runs out."""
    cdef size_t k, j
    cdef uint32_t x
    cdef int64_t lo
    cdef uint64_t* keys
    cdef uint32_t* idx
    cdef int rc
    if g <= 32:
        for k in range(1, g):
            x = rows[k]
            j = k
            while j > 0 and col[x] < col[rows[j - 1]]:
                rows[j] = rows[j - 1]
                j -= 1
            rows[j] = x
        return 0
    keys = <uint64_t*>malloc(g * (2 * sizeof(uint64_t) + 3 * sizeof(uint32_t)))
    if keys == NULL:
        return -1
    idx = <uint32_t*>(keys + 2 * g)
    lo = col[rows[0]]
    for k in range(g):
        if col[rows[k]] < lo:
            lo = col[rows[k]]
    for k in range(g):
        keys[k] = <uint64_t>col[rows[k]] - <uint64_t>lo
        idx[k] = <uint32_t>k
    rc = radix_sort(keys, idx, keys + g, idx + g, g)
    if rc == 0:
        for k in range(g):
            idx[2 * g + k] = rows[idx[k]]
        for k in range(g):
            rows[k] = idx[2 * g + k]
    free(keys)
    return rc


ctypedef struct Run:
    # a run of valid records with one device and one interval start, in (device, start) order
    size_t first           # its first position in the order
    size_t row             # the row of that position
    int32_t device
    int64_t start, duration, end   # end: the latest end in the run
    bint uniform           # all its durations agree
    bint single            # one record so far (total and limit not gathered yet)
    uint64_t total         # Wh sum, saturated at 2**63
    bint have_limit
    int64_t limit          # smallest non-negative metered Wh
    bint have_prev         # an earlier run of the device ...
    int64_t prev_end       # ... whose latest end is this


cdef inline void add_metered(const Batch* b, Run* r, size_t row) noexcept nogil:
    cdef int64_t mt = b.met[row]
    r.total += <uint64_t>(b.se[row] - b.ss[row])
    if r.total > SUM_CAP:  # saturate: anything past int64 exceeds every limit
        r.total = SUM_CAP
    if mt >= 0 and (not r.have_limit or mt < r.limit):
        r.limit = mt
        r.have_limit = True


cdef int serial_check_run(Batch* b, const Order* o, Run* r, size_t end,
                          SerialCheck* t) noexcept nogil:
    """The serial ranges of a run of several records to ``t``, in serial order (the order of
    records of one device-interval says nothing of their serials).  Returns -1 when memory
    runs out."""
    cdef uint32_t local[64]
    cdef uint32_t* rows = local
    cdef size_t k, g = 0, row
    cdef int32_t d
    cdef int64_t s, u
    cdef int rc
    if end - r.first > 64:
        rows = <uint32_t*>malloc((end - r.first) * sizeof(uint32_t))
        if rows == NULL:
            return -1
    for k in range(r.first, end):
        if fetch(b, o, k, &row, &d, &s, &u):
            rows[g] = <uint32_t>row
            g += 1
    rc = sort_rows(b.ss, rows, g)
    if rc == 0:
        for k in range(g):
            serial_check(t, b.ss[rows[k]], b.se[rows[k]])
    if rows != local:
        free(rows)
    return rc


cdef inline void close_run(Batch* b, const Order* o, Run* r, size_t end, bint has_next,
                           int32_t next_device, int64_t next_start) noexcept nogil:
    """Rules 10 and 12 for the run ``r`` (positions ``r.first`` to ``end``), given the run that
    follows it (if any).  A run overlaps when its durations differ, when an earlier run of its
    device ends after its start, or when the next run of its device starts before its end."""
    cdef bint same_next = has_next and next_device == r.device
    cdef bint overlap = (not r.uniform or (r.have_prev and r.prev_end > r.start)
                         or (same_next and next_start < r.end))
    cdef uint8_t set_flags
    cdef size_t k, row
    cdef int32_t d
    cdef int64_t s, u
    if r.single:
        # rule 12 alone was settled by the first pass
        if overlap:
            b.out[r.row] |= FLAG_INTERVAL_OVERLAP
            b.flagged = True
    else:
        set_flags = 0
        if overlap:
            set_flags = FLAG_INTERVAL_OVERLAP
        if r.have_limit and r.total > <uint64_t>r.limit:
            set_flags |= FLAG_EXCEEDS_METERED
        if set_flags:
            b.flagged = True
        for k in range(r.first, end):
            if fetch(b, o, k, &row, &d, &s, &u):
                b.out[row] = (b.out[row] & <uint8_t>~FLAG_EXCEEDS_METERED) | set_flags
    if same_next:
        if not r.have_prev or r.end > r.prev_end:
            r.prev_end = r.end
        r.have_prev = True
    else:
        r.have_prev = False


cdef int device_interval_rules(Batch* b, const Order* o, SerialCheck* t) noexcept nogil:
    """Rules 10 and 12 over the valid records in (device, interval start) order ``o``.

    A run of records with one device and one start is a group of identical device-intervals
    when all their durations agree; otherwise its records overlap each other.  While ``t`` is
    on, the serial ranges are checked along, run by run.  Returns -1 when memory runs out.
    """
    cdef size_t k, row, ahead
    cdef int32_t d
    cdef int64_t s, u
    cdef bint have_run = False
    cdef Run r
    memset(&r, 0, sizeof(Run))
    for k in range(o.count):
        if t.on and o.mode == ORDER_PACKED and k + PREFETCH_AHEAD < o.count:
            ahead = <size_t>(o.keys[k + PREFETCH_AHEAD] & (((<uint64_t>1) << o.rbits) - 1))
            EAP_PREFETCH(&b.ss[ahead])
            EAP_PREFETCH(&b.se[ahead])
        if not fetch(b, o, k, &row, &d, &s, &u):
            continue
        if have_run and d == r.device and s == r.start:
            if r.single:
                r.single = False
                r.total = 0
                r.have_limit = False
                r.limit = 0
                add_metered(b, &r, r.row)
            add_metered(b, &r, row)
            if u != r.duration:
                r.uniform = False
                if s + u > r.end:
                    r.end = s + u
            continue
        if have_run:
            if t.on:
                if r.single:
                    serial_check(t, b.ss[r.row], b.se[r.row])
                elif serial_check_run(b, o, &r, k, t) < 0:
                    return -1
            close_run(b, o, &r, k, True, d, s)
        r.first = k
        r.row = row
        r.device = d
        r.start = s
        r.duration = u
        r.end = s + u
        r.uniform = True
        r.single = True
        have_run = True
    if have_run:
        if t.on:
            if r.single:
                serial_check(t, b.ss[r.row], b.se[r.row])
            elif serial_check_run(b, o, &r, o.count, t) < 0:
                return -1
        close_run(b, o, &r, o.count, False, 0, 0)
    return 0


# --- the (device, period) table --------------------------------------------------------------

cdef int group_rules(Batch* b, uint32_t* rows, size_t g, SerialCheck* t) noexcept nogil:
    """Rules 10 and 12 for the ``g`` records of one slot of the (device, period) table
    (``rows``, reordered); their serial ranges go to ``t`` in serial order."""
    cdef Order o
    cdef SerialCheck none
    cdef Run r
    cdef size_t k
    cdef uint8_t flag = 0
    cdef int64_t s = b.ist[rows[0]], e = b.ien[rows[0]]
    cdef bint identical = True
    for k in range(1, g):
        if b.ist[rows[k]] != s or b.ien[rows[k]] != e:
            identical = False
            break
    if identical:
        # several bundles of one device-interval: rule 12 over their sum
        r.total = 0
        r.have_limit = False
        r.limit = 0
        for k in range(g):
            add_metered(b, &r, rows[k])
        if r.have_limit and r.total > <uint64_t>r.limit:
            flag = FLAG_EXCEEDS_METERED
            b.flagged = True
        for k in range(g):
            b.out[rows[k]] = (b.out[rows[k]] & <uint8_t>~FLAG_EXCEEDS_METERED) | flag
    else:
        if sort_rows(b.ist, rows, g) < 0:
            return -1
        memset(&o, 0, sizeof(Order))
        o.mode = ORDER_INDEXED
        o.count = g
        o.rows = rows
        serial_check_start(&none, False)
        if device_interval_rules(b, &o, &none) < 0:
            return -1
    if t.on:
        if sort_rows(b.ss, rows, g) < 0:
            return -1
        for k in range(g):
            serial_check(t, b.ss[rows[k]], b.se[rows[k]])
    return 0


ctypedef struct Slots:
    # One slot per device and period: the hour, or the duration when all are equal.  No valid
    # interval crosses a period boundary (a duration divides 3600 and the start).
    size_t count           # devices x periods
    int32_t dlo
    int64_t hlo
    uint64_t periods       # per device: hours x per_hour
    uint64_t per_hour      # 3600 / period
    uint64_t recip         # ceil(2**32 / period): off // period == (off * recip) >> 32
    size_t words           # of each bitmap
    uint64_t* used         # a record in the slot
    uint64_t* multi        # more than one
    uint64_t* ranges       # serial range of the slot's first record, packed (or NULL)
    int wbits              # Wh bits of a packed range, below the serial start - slo


cdef inline size_t slot_of(const Batch* b, const Slots* sl, size_t i) noexcept nogil:
    cdef int64_t h, off
    floor_hour(b.ist[i], &h, &off)
    return <size_t>((<uint64_t>(<int64_t>b.dev[i] - <int64_t>sl.dlo)) * sl.periods
                    + (<uint64_t>h - <uint64_t>sl.hlo) * sl.per_hour
                    + ((<uint64_t>off * sl.recip) >> 32))


cdef bint slot_table(const Batch* b, bint ranges, Slots* sl) noexcept nogil:
    """Lay out the (device, period) table in the scratch, if it fits there and is dense enough
    (devices are dictionary indices, so usually dense, and a batch spans a limited time).
    With ``ranges``, it also holds each slot's packed serial range for the walk."""
    cdef uint64_t per = SLOTS_PER_RECORD if ranges else SLOTS_PER_RECORD_BITS
    cdef uint64_t limit = per * <uint64_t>b.m
    cdef uint64_t period = <uint64_t>b.ulo if b.ulo == b.uhi else C_MAX_INTERVAL_S
    cdef uint64_t r = C_MAX_INTERVAL_S // period
    cdef uint64_t d = <uint64_t>(<int64_t>b.dhi - <int64_t>b.dlo) + 1
    cdef uint64_t h = <uint64_t>b.hhi - <uint64_t>b.hlo + 1
    cdef uint64_t count, words
    if d > limit or h == 0 or h > limit or h * r > limit or d * (h * r) > limit:
        return False
    count = d * h * r
    if bit_length(count - 1) + bit_length(b.n - 1) > 64:  # (slot, row) keys of slot_groups
        return False
    words = (count + 63) // 64
    # scratch: 2 n words
    if 2 * words + (count if ranges else 0) > 2 * <uint64_t>b.n:
        return False
    sl.count = <size_t>count
    sl.dlo = b.dlo
    sl.hlo = b.hlo
    sl.periods = h * r
    sl.per_hour = r
    sl.recip = (((<uint64_t>1) << 32) + period - 1) // period
    sl.words = <size_t>words
    sl.used = b.keys
    sl.multi = b.keys + words
    sl.ranges = b.keys + 2 * words if ranges else NULL
    sl.wbits = bit_length(b.whmax)
    return True


cdef int slot_groups(Batch* b, const Slots* sl, size_t extra, SerialCheck* t) noexcept nogil:
    """Rules 10 and 12 for the slots of several records (``extra``: records beyond the first
    of each), and the serial walk of the table in slot order while ``t`` is on."""
    cdef size_t i, k = 0, q, slot, count = 0, w
    cdef int rbits = bit_length(b.n - 1), sbits = bit_length(sl.count - 1), passes, width, p
    cdef uint64_t* keys = NULL
    cdef uint64_t* kbuf
    cdef const uint64_t* sorted_keys = NULL
    cdef uint32_t* rows = NULL
    cdef uint32_t* counts
    cdef uint64_t rmask = ((<uint64_t>1) << rbits) - 1, mask, bits, e
    cdef int64_t base = b.slo
    cdef uint64_t wmask = ((<uint64_t>1) << sl.wbits) - 1
    cdef int rc = 0
    if extra:
        # the rows of slots with several records, sorted by slot
        count = 2 * extra  # at most: a slot of c records has c - 1 beyond the first
        keys = <uint64_t*>malloc(count * (2 * sizeof(uint64_t) + sizeof(uint32_t)))
        if keys == NULL:
            return -1
        kbuf = keys + count
        rows = <uint32_t*>(kbuf + count)
        for i in range(b.n):
            if b.out[i] & CODE_MASK == 0:
                slot = slot_of(b, sl, i)
                if (sl.multi[slot >> 6] >> (slot & 63)) & 1:
                    keys[k] = (<uint64_t>slot << rbits) | i
                    k += 1
        count = k
        passes = radix_digits(count, sbits, &width)
        counts = <uint32_t*>calloc((<size_t>passes << width) + 1, sizeof(uint32_t))
        if counts == NULL:
            free(keys)
            return -1
        mask = ((<uint64_t>1) << width) - 1
        for k in range(count):
            for p in range(passes):
                counts[(<size_t>p << width) + ((keys[k] >> (rbits + p * width)) & mask)] += 1
        sorted_keys = radix_scatter(keys, kbuf, count, rbits, width, passes, counts)
        free(counts)
    k = 0
    if t.on:
        # every used slot in order: a slot of one record by its packed range, a slot of
        # several by its group (its records in serial order)
        for w in range(sl.words):
            bits = sl.used[w]
            while bits:
                slot = (w << 6) + <size_t>ctz64(bits)
                bits &= bits - 1
                if (sl.multi[w] >> (slot & 63)) & 1:
                    q = k
                    while k < count and (sorted_keys[k] >> rbits) == slot:
                        rows[k - q] = <uint32_t>(sorted_keys[k] & rmask)
                        k += 1
                    rc = group_rules(b, rows, k - q, t)
                    if rc < 0:
                        break
                else:
                    e = sl.ranges[slot]
                    serial_check(t, <int64_t>((e >> sl.wbits) + <uint64_t>base),
                                 <int64_t>((e >> sl.wbits) + (e & wmask) + <uint64_t>base))
                if not t.on:
                    break
            if rc < 0 or not t.on:
                break
    if rc == 0 and k < count:
        # the groups the walk did not reach
        while k < count:
            slot = <size_t>(sorted_keys[k] >> rbits)
            q = k
            while k < count and (sorted_keys[k] >> rbits) == slot:
                rows[k - q] = <uint32_t>(sorted_keys[k] & rmask)
                k += 1
            rc = group_rules(b, rows, k - q, t)
            if rc < 0:
                break
    if extra:
        free(keys)
    return rc


cdef int slot_rules(Batch* b, Slots* sl, SerialCheck* t) noexcept nogil:
    """Rules 10 and 12 through the table of one slot per (device, period).

    No valid interval crosses a period boundary, so records of one device in different periods
    never overlap: a record alone in its slot breaks neither rule 10 nor, beyond what the first
    pass found, rule 12, and only slots of several records need a closer look.  The table's
    slots are in (device, start) order, along which ``t`` checks the serial ranges while it is
    on.  Returns 1, having flagged nothing, when too many slots hold several records; -1 when
    memory runs out.
    """
    cdef const uint8_t* out = b.out
    cdef const int64_t* ss = b.ss
    cdef const int64_t* se = b.se
    cdef uint64_t* used = sl.used
    cdef uint64_t* multi = sl.multi
    cdef uint64_t* ranges = sl.ranges
    cdef uint64_t bit, slo = <uint64_t>b.slo
    cdef size_t i, slot, extra = 0
    cdef int wbits = sl.wbits
    cdef Slots geometry = sl[0]  # in registers: the stores below may alias *sl
    cdef size_t share = MULTI_SHARE_IN_ORDER if b.device_order else MULTI_SHARE_SORTED
    memset(used, 0, 2 * sl.words * sizeof(uint64_t))
    for i in range(b.n):
        if out[i] & CODE_MASK:
            continue
        slot = slot_of(b, &geometry, i)
        bit = (<uint64_t>1) << (slot & 63)
        if used[slot >> 6] & bit:
            multi[slot >> 6] |= bit
            extra += 1
            if extra * share > b.m:
                return 1
        else:
            used[slot >> 6] |= bit
            if ranges != NULL:
                ranges[slot] = ((<uint64_t>ss[i] - slo) << wbits) | <uint64_t>(se[i] - ss[i])
    if extra == 0 and not t.on:
        return 0
    return slot_groups(b, sl, extra, t)


# --- sorting: sparse tables and serial order --------------------------------------------------

cdef int device_order(Batch* b, Order* o, uint32_t** idx_out) noexcept nogil:
    """Sort the valid records by (device, interval start) into ``o``.

    Usually one 64-bit key per record packs device, hour of the start, second in that hour
    (each minus its minimum, in the bits its range needs), duration and row; it is built with
    the digit histograms in one pass and sorted on the bits above duration and row.  A key
    that does not fit 64 bits falls back to sorting row indices (``idx_out`` then owns them).
    Returns -1 when memory runs out.
    """
    cdef size_t i, k = 0, n = b.n, m = b.m
    cdef int dbits = bit_length(<uint64_t>(<int64_t>b.dhi - <int64_t>b.dlo))
    cdef int hbits = bit_length(<uint64_t>b.hhi - <uint64_t>b.hlo)
    cdef int obits = bit_length(b.offs)
    cdef int ubits = bit_length(<uint64_t>(b.uhi - b.ulo))
    cdef int rbits = bit_length(n - 1)
    cdef int lo = rbits + ubits, kbits = dbits + hbits + obits, passes, width, p
    cdef uint64_t key, mask
    cdef uint32_t valid
    cdef int64_t s, h, off
    cdef uint32_t* counts
    cdef uint32_t* idx
    cdef uint32_t* ibuf
    cdef uint32_t* rows
    cdef uint64_t* keys = b.keys
    cdef const int32_t* dev = b.dev
    cdef const int64_t* ist = b.ist
    cdef const int64_t* ien = b.ien
    cdef const uint8_t* out = b.out
    o.count = m
    if kbits + lo <= 64:
        passes = radix_digits(m, kbits, &width)
        counts = <uint32_t*>calloc((<size_t>passes << width) + 1, sizeof(uint32_t))
        if counts == NULL:
            return -1
        mask = ((<uint64_t>1) << width) - 1
        for i in range(n):
            # every row makes a key, only valid ones are kept (no branch to mispredict)
            valid = (out[i] & CODE_MASK) == 0
            s = ist[i]
            floor_hour(s, &h, &off)
            key = ((((((<uint64_t>(<int64_t>dev[i] - <int64_t>b.dlo)) << hbits)
                      | (<uint64_t>h - <uint64_t>b.hlo)) << obits) | <uint64_t>off) << ubits
                   | (<uint64_t>ien[i] - <uint64_t>s - <uint64_t>b.ulo)) << rbits | i
            keys[k] = key  # k <= i < n
            k += valid
            for p in range(passes):
                counts[(<size_t>p << width) + ((key >> (lo + p * width)) & mask)] += valid
        o.mode = ORDER_PACKED
        o.keys = radix_scatter(keys, b.kbuf, m, lo, width, passes, counts)
        o.rbits = rbits
        o.ubits = ubits
        o.obits = obits
        o.hbits = hbits
        o.ulo = b.ulo
        o.hlo = b.hlo
        o.dlo = b.dlo
        free(counts)
        return 0
    # rare: extreme ranges; sort positions in a list of the valid rows, on one key when
    # device, hour and offset fit one, else by start and then (stably) by device
    idx = <uint32_t*>malloc((3 * m + 1) * sizeof(uint32_t))
    if idx == NULL:
        return -1
    idx_out[0] = idx
    ibuf = idx + m
    rows = idx + 2 * m  # m + 1 entries: the loop below writes one past the last valid row
    for i in range(n):
        rows[k] = <uint32_t>i  # kept when valid
        k += (out[i] & CODE_MASK) == 0
    for k in range(m):
        idx[k] = <uint32_t>k
    if kbits <= 64:
        for k in range(m):
            floor_hour(ist[rows[k]], &h, &off)
            keys[k] = ((((<uint64_t>(<int64_t>dev[rows[k]] - <int64_t>b.dlo)) << hbits)
                        | (<uint64_t>h - <uint64_t>b.hlo)) << obits) | <uint64_t>off
    else:
        for k in range(m):
            keys[k] = <uint64_t>ist[rows[k]] ^ ((<uint64_t>1) << 63)  # order-preserving
        if radix_sort(keys, idx, b.kbuf, ibuf, m) < 0:
            return -1
        for k in range(m):
            keys[k] = <uint64_t>(<int64_t>dev[rows[idx[k]]] - <int64_t>b.dlo)
    if radix_sort(keys, idx, b.kbuf, ibuf, m) < 0:
        return -1
    for k in range(m):
        ibuf[k] = rows[idx[k]]
    o.mode = ORDER_INDEXED
    o.rows = ibuf
    return 0


cdef int serial_rule(Batch* b) noexcept nogil:
    """Rule 11 by sorting the valid records by serial start (for batches whose serial ranges
    neither ascend as given nor ascend without overlaps in device-interval order).  Returns -1
    when memory runs out."""
    cdef size_t i, k = 0, n = b.n, m = b.m, row, prev_row = 0, ahead
    cdef int sbits = bit_length(<uint64_t>b.shi - <uint64_t>b.slo)
    cdef int rbits = bit_length(n - 1)
    cdef int passes, width, p
    cdef uint32_t valid
    cdef uint64_t key, mask, rmask = ((<uint64_t>1) << rbits) - 1
    cdef int64_t a, z, prev_end = INT64_MIN, maxend = INT64_MIN
    cdef uint32_t* counts
    cdef uint32_t* idx = NULL
    cdef uint32_t* rows = NULL
    cdef uint64_t* keys = b.keys
    cdef const uint64_t* sorted_keys
    cdef const int64_t* ss = b.ss
    cdef const int64_t* se = b.se
    cdef uint8_t* out = b.out
    cdef bint packed = sbits + rbits <= 64
    if packed:
        passes = radix_digits(m, sbits, &width)
        counts = <uint32_t*>calloc((<size_t>passes << width) + 1, sizeof(uint32_t))
        if counts == NULL:
            return -1
        mask = ((<uint64_t>1) << width) - 1
        for i in range(n):
            # every row makes a key, only valid ones are kept (no branch to mispredict)
            valid = (out[i] & CODE_MASK) == 0
            key = ((<uint64_t>ss[i] - <uint64_t>b.slo) << rbits) | i
            keys[k] = key  # k <= i < n
            k += valid
            for p in range(passes):
                counts[(<size_t>p << width) + ((key >> (rbits + p * width)) & mask)] += valid
        sorted_keys = radix_scatter(keys, b.kbuf, m, rbits, width, passes, counts)
        free(counts)
    else:
        # rare: serial and row do not fit one word; sort positions in a list of valid rows
        idx = <uint32_t*>malloc(3 * m * sizeof(uint32_t))
        if idx == NULL:
            return -1
        rows = idx + 2 * m
        for i in range(n):
            if out[i] & CODE_MASK == 0:
                keys[k] = <uint64_t>ss[i] - <uint64_t>b.slo
                idx[k] = <uint32_t>k
                rows[k] = <uint32_t>i
                k += 1
        if radix_sort(keys, idx, b.kbuf, idx + m, m) < 0:
            free(idx)
            return -1
        for k in range(m):
            idx[m + k] = rows[idx[k]]
        rows = idx + m
        sorted_keys = keys
    for k in range(m):
        if k + PREFETCH_AHEAD < m:
            ahead = (<size_t>(sorted_keys[k + PREFETCH_AHEAD] & rmask) if packed
                     else rows[k + PREFETCH_AHEAD])
            EAP_PREFETCH(&se[ahead])
        if packed:
            row = <size_t>(sorted_keys[k] & rmask)
            a = <int64_t>((sorted_keys[k] >> rbits) + <uint64_t>b.slo)
        else:
            row = rows[k]
            a = ss[row]
        z = se[row]
        if maxend > a:
            out[row] |= FLAG_SERIAL_OVERLAP
            b.flagged = True
        if prev_end > a:
            out[prev_row] |= FLAG_SERIAL_OVERLAP
            b.flagged = True
        if z > maxend:
            maxend = z
        prev_end = z
        prev_row = row
    free(idx)
    return 0


cdef void final_codes(Batch* b) noexcept nogil:
    """Turn the flags of the valid records into the code of the first rule they break."""
    cdef size_t i
    cdef uint8_t code[128]
    cdef uint8_t* out = b.out
    for i in range(128):
        code[i] = <uint8_t>i
        if i & FLAG_INTERVAL_OVERLAP:
            code[i] = C_INTERVAL_OVERLAP
        elif i & FLAG_SERIAL_OVERLAP:
            code[i] = C_SERIAL_OVERLAP
        elif i & FLAG_EXCEEDS_METERED:
            code[i] = C_EXCEEDS_METERED
    for i in range(b.n):
        out[i] = code[out[i] & 127]  # a table, not branches: flags may come in any order


cdef size_t scratch_bytes(size_t n) noexcept nogil:
    """Scratch a batch of ``n`` records needs: two arrays of ``n`` keys, 64-byte aligned."""
    return 2 * 64 * ((n * sizeof(uint64_t) + 63) // 64)


cdef int validate_columns(Batch* b, const uint8_t* src, const uint8_t* tech, const uint32_t* ren,
                          const uint32_t* car, const int64_t* cap) noexcept nogil:
    """Fill ``b.out`` with the code of every record.  Returns -1 when memory runs out."""
    cdef Order o
    cdef SerialCheck t
    cdef Slots sl
    cdef uint32_t* idx = NULL
    cdef bint check
    cdef int rc = 0
    first_pass(b, src, tech, ren, car, cap)
    if b.m == 0:
        return 0
    if not b.serial_order and b.serial_flags:
        clear_flag(b, FLAG_SERIAL_OVERLAP)  # swept before the serials stopped ascending
    memset(&o, 0, sizeof(Order))
    # serials that did not ascend as given may ascend in (device, hour) order (the order of
    # issue); the walk needs a slot's serial range packed in one word
    check = (not b.serial_order and not b.device_order
             and bit_length(<uint64_t>b.shi - <uint64_t>b.slo) + bit_length(b.whmax) <= 64)
    serial_check_start(&t, check)
    rc = 1
    if slot_table(b, check, &sl):
        rc = slot_rules(b, &sl, &t)
    if rc == 1 and b.device_order:
        o.mode = ORDER_ROWS
        o.count = b.n
        rc = device_interval_rules(b, &o, &t)
    elif rc == 1:
        rc = device_order(b, &o, &idx)
        if rc == 0:
            rc = device_interval_rules(b, &o, &t)
        free(idx)
    if rc < 0:
        return -1
    if not b.serial_order and not t.on:
        if serial_rule(b) < 0:
            return -1
    if b.flagged:
        final_codes(b)
    return 0


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
    out = np.empty(count, dtype=np.uint8)
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
    cdef Batch b
    cdef int rc
    b.n = count
    b.ss = &ss[0]
    b.se = &se[0]
    b.dev = &dev[0]
    b.ist = &ist[0]
    b.ien = &ien[0]
    b.met = &met[0]
    b.out = &o[0]
    b.keys = <uint64_t*>&buf[0]
    b.kbuf = b.keys + scratch_bytes(count) // (2 * sizeof(uint64_t))
    with nogil:
        rc = validate_columns(&b, &src[0], &tech[0], &ren[0], &car[0], &cap[0])
    if rc < 0:
        raise MemoryError("validate: cannot allocate sort buffers")
    return out
