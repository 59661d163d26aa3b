# Stable LSD radix sort of 64-bit keys carrying 32-bit row indices, shared by the kernels that
# group rows (validation, bilateral netting).  Header-like: everything is ``inline``, nothing is
# exported at run time.

from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

cdef enum:
    RADIX_BITS = 8
    RADIX_SIZE = 256
    RADIX_MASK = 255
    RADIX_MAX_PASSES = 8


cdef inline int bit_length(uint64_t x) noexcept nogil:
    cdef int b = 0
    while x:
        b += 1
        x >>= 1
    return b


cdef inline int radix_sort(uint64_t* keys, uint32_t* idx, uint64_t* kbuf, uint32_t* ibuf,
                           size_t n) noexcept nogil:
    """Sort ``keys[0:n]`` ascending, stably, permuting ``idx`` alongside.

    ``kbuf`` and ``ibuf`` are scratch space of ``n`` entries; the result is left in ``keys`` and
    ``idx``.  Only the digits below the highest set bit of any key are sorted on, and a digit
    every key shares is skipped, so callers should subtract the minimum key first.  Returns -1
    when scratch memory cannot be allocated, else 0.
    """
    cdef uint64_t kor = 0
    cdef uint64_t k
    cdef size_t i, j, total, c
    cdef int p, passes, shift, b
    cdef uint32_t* counts
    cdef uint32_t* cnt
    cdef uint64_t* sk = keys
    cdef uint64_t* dk = kbuf
    cdef uint32_t* si = idx
    cdef uint32_t* di = ibuf
    cdef uint64_t* tk
    cdef uint32_t* ti
    if n < 2:
        return 0
    for i in range(n):
        kor |= keys[i]
    passes = (bit_length(kor) + RADIX_BITS - 1) // RADIX_BITS
    if passes == 0:
        return 0
    counts = <uint32_t*>calloc(passes * RADIX_SIZE, sizeof(uint32_t))
    if counts == NULL:
        return -1
    for i in range(n):
        k = keys[i]
        for p in range(passes):
            counts[p * RADIX_SIZE + ((k >> (p * RADIX_BITS)) & RADIX_MASK)] += 1
    for p in range(passes):
        shift = p * RADIX_BITS
        cnt = counts + p * RADIX_SIZE
        if cnt[(sk[0] >> shift) & RADIX_MASK] == n:
            continue
        total = 0
        for b in range(RADIX_SIZE):
            c = cnt[b]
            cnt[b] = <uint32_t>total
            total += c
        for i in range(n):
            k = sk[i]
            b = (k >> shift) & RADIX_MASK
            j = cnt[b]
            cnt[b] = <uint32_t>(j + 1)
            dk[j] = k
            di[j] = si[i]
        tk = sk
        sk = dk
        dk = tk
        ti = si
        si = di
        di = ti
    free(counts)
    if sk != keys:
        memcpy(keys, sk, n * sizeof(uint64_t))
        memcpy(idx, si, n * sizeof(uint32_t))
    return 0
