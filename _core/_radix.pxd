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
    RADIX_MAX_BITS = 11           # widest digit: 2048 buckets, whose counts stay in L1
    RADIX_MAX_SIZE = 2048
    PREFETCH_AHEAD = 16           # rows a sweep prefetches ahead of the one it reads


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
    ``idx``.  Only the bits below the highest set bit of any key are sorted on, in as few
    passes of at most 11 bits as cover them, and a digit every key shares is skipped, so
    callers should subtract the minimum key first.  Returns -1 when the counters cannot be
    allocated, else 0.
    """
    cdef uint64_t kor = 0
    cdef uint64_t k, mask
    cdef size_t i, j, total, c
    cdef int p, passes, bits, width, size
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
    bits = bit_length(kor)
    if bits == 0:
        return 0
    passes = (bits + RADIX_MAX_BITS - 1) // RADIX_MAX_BITS
    width = (bits + passes - 1) // passes
    size = 1 << width
    mask = <uint64_t>(size - 1)
    counts = <uint32_t*>calloc(passes * size, sizeof(uint32_t))
    if counts == NULL:
        return -1
    for i in range(n):
        k = keys[i]
        for p in range(passes):
            counts[p * size + ((k >> (p * width)) & mask)] += 1
    for p in range(passes):
        cnt = counts + p * size
        if cnt[(sk[0] >> (p * width)) & mask] == n:
            continue
        total = 0
        for j in range(<size_t>size):
            c = cnt[j]
            cnt[j] = <uint32_t>total
            total += c
        for i in range(n):
            k = sk[i]
            c = (k >> (p * width)) & mask
            j = cnt[c]
            cnt[c] = <uint32_t>(j + 1)
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
