# Stable LSD radix sort of 64-bit keys carrying 32-bit row indices, shared by the kernels that
# group rows (validation, bilateral netting), and a portable prefetch hint for the gathers that
# follow a sort.  Header-like: everything is ``inline``, nothing is exported at run time.

from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define EAP_PREFETCH(p) __builtin_prefetch(p)
    #else
    #define EAP_PREFETCH(p) ((void)0)
    #endif
    """
    void EAP_PREFETCH(const void* p) noexcept nogil

cdef enum:
    # Widest digit: 8192 buckets while the rows fit in cache, 2048 beyond (the scatter of a
    # pass then has fewer pages to write to at once).
    RADIX_SMALL_N = 65536
    RADIX_SMALL_BITS = 13
    RADIX_LARGE_BITS = 11
    PREFETCH_AHEAD = 16  # rows a sweep prefetches ahead of the one it reads


cdef inline int bit_length(uint64_t x) noexcept nogil:
    cdef int b = 0
    while x:
        b += 1
        x >>= 1
    return b


cdef inline int radix_digits(size_t n, int bits, int* width) noexcept nogil:
    """Passes needed to sort ``n`` keys on ``bits`` bits (digits of at most 13 bits, 11 for
    more than 65536 keys); sets ``width`` to the bits of one digit."""
    cdef int max_bits = RADIX_SMALL_BITS if n <= RADIX_SMALL_N else RADIX_LARGE_BITS
    cdef int passes
    if bits <= 0:
        width[0] = 0
        return 0
    passes = (bits + max_bits - 1) // max_bits
    width[0] = (bits + passes - 1) // passes
    return passes


cdef inline uint64_t* radix_scatter(uint64_t* keys, uint64_t* kbuf, size_t n, int lo, int width,
                                    int passes, uint32_t* counts) noexcept nogil:
    """The scatter passes of an LSD sort of ``keys[0:n]`` on digits of ``width`` bits from bit
    ``lo`` up, whose histograms the caller has already counted: ``counts[p << width | d]`` is
    the number of keys whose digit ``p`` is ``d``.  No index moves alongside (pack it into the
    low bits).  A pass whose digit every key shares is skipped.  Returns the buffer holding the
    sorted keys, ``keys`` or ``kbuf``."""
    cdef size_t size = (<size_t>1) << width
    cdef uint64_t mask = size - 1
    cdef uint64_t k
    cdef size_t i, j, c, total
    cdef int p, shift
    cdef uint32_t* cnt
    cdef uint64_t* sk = keys
    cdef uint64_t* dk = kbuf
    cdef uint64_t* tk
    for p in range(passes):
        shift = lo + p * width
        cnt = counts + p * size
        if cnt[(sk[0] >> shift) & mask] == n:
            continue
        total = 0
        for j in range(size):
            c = cnt[j]
            cnt[j] = <uint32_t>total
            total += c
        for i in range(n):
            k = sk[i]
            c = (k >> shift) & mask
            dk[cnt[c]] = k
            cnt[c] += 1
        tk = sk
        sk = dk
        dk = tk
    return sk


cdef inline void radix_passes(uint64_t* keys, uint64_t* kbuf, uint32_t* idx, uint32_t* ibuf,
                              size_t n, int lo, int bits, int passes,
                              uint32_t* counts) noexcept nogil:
    """``passes`` LSD passes over bits ``[lo, lo + bits)`` of ``keys``; ``idx`` moves alongside
    unless NULL.  ``counts`` holds ``passes << width`` zeroed counters (``width`` the bits of
    one digit); the result ends in ``keys``."""
    cdef int width = (bits + passes - 1) // passes
    cdef size_t size = (<size_t>1) << width
    cdef uint64_t mask = size - 1
    cdef uint64_t k
    cdef size_t i, j, c, total
    cdef int p, shift
    cdef uint32_t* cnt
    cdef uint64_t* sk = keys
    cdef uint64_t* dk = kbuf
    cdef uint32_t* si = idx
    cdef uint32_t* di = ibuf
    cdef uint64_t* tk
    cdef uint32_t* ti
    for i in range(n):
        k = keys[i] >> lo
        for p in range(passes):
            counts[p * size + ((k >> (p * width)) & mask)] += 1
    if si == NULL:
        sk = radix_scatter(keys, kbuf, n, lo, width, passes, counts)
        if sk != keys:
            memcpy(keys, sk, n * sizeof(uint64_t))
        return
    for p in range(passes):
        shift = lo + p * width
        cnt = counts + p * size
        if cnt[(sk[0] >> shift) & mask] == n:
            continue
        total = 0
        for j in range(size):
            c = cnt[j]
            cnt[j] = <uint32_t>total
            total += c
        for i in range(n):
            k = sk[i]
            c = (k >> shift) & mask
            j = cnt[c]
            cnt[c] = <uint32_t>(j + 1)
            dk[j] = k
            di[j] = si[i]
        ti = si
        si = di
        di = ti
        tk = sk
        sk = dk
        dk = tk
    if sk != keys:
        memcpy(keys, sk, n * sizeof(uint64_t))
        memcpy(idx, si, n * sizeof(uint32_t))


cdef inline int radix_sort(uint64_t* keys, uint32_t* idx, uint64_t* kbuf, uint32_t* ibuf,
                           size_t n) noexcept nogil:
    """Sort ``keys[0:n]`` ascending, stably, permuting ``idx`` alongside.

    ``kbuf`` and ``ibuf`` are scratch space of ``n`` entries; the result is left in ``keys`` and
    ``idx``.  Only the bits below the highest set bit of any key are sorted on, in as few
    passes of at most 13 bits (11 for more than 65536 keys) as cover them, and a digit every
    key shares is skipped, so callers should subtract the minimum key first.  When key and
    index fit one 64-bit word together they are sorted as one (half the memory traffic).
    Returns -1 when the counters cannot be allocated, else 0.
    """
    cdef uint64_t kor = 0
    cdef size_t i
    cdef int bits, ibits, passes, width
    cdef uint32_t* counts
    if n < 2:
        return 0
    for i in range(n):
        kor |= keys[i]
    bits = bit_length(kor)
    if bits == 0:
        return 0
    passes = radix_digits(n, bits, &width)
    counts = <uint32_t*>calloc(<size_t>passes << width, sizeof(uint32_t))
    if counts == NULL:
        return -1
    ibits = bit_length(n - 1)
    if bits + ibits <= 64:
        for i in range(n):
            keys[i] = (keys[i] << ibits) | idx[i]
        radix_passes(keys, kbuf, NULL, NULL, n, ibits, bits, passes, counts)
        for i in range(n):
            idx[i] = <uint32_t>(keys[i] & (((<uint64_t>1) << ibits) - 1))
            keys[i] >>= ibits
    else:
        radix_passes(keys, kbuf, idx, ibuf, n, 0, bits, passes, counts)
    free(counts)
    return 0
