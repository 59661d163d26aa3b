/*
 * eap_sha256.h: self-contained SHA-256 (FIPS 180-4) for the eap._core kernels.
 *
 * Header-only, every function static.  Two block-compression functions share one state layout:
 * a portable C one and, on x86/x86-64 with GCC or Clang, one using the SHA extensions
 * (SHA-NI), chosen once at run time by CPUID.  eap_sha256_select() must be called once before
 * hashing (the Cython module does it at import); eap_sha256_use_portable() forces the portable
 * code (tests use it to check both paths against each other).
 *
 * Callers that hash many messages of one fixed length pre-pad a buffer once with
 * eap_sha256_pad() and then call eap_sha256_blocks() per message, which is the hot path of
 * leaf and inner-node hashing.
 */
#ifndef EAP_SHA256_H
#define EAP_SHA256_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static const uint32_t eap_sha256_k[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u,
    0xab1c5ed5u, 0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu,
    0x9bdc06a7u, 0xc19bf174u, 0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu,
    0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau, 0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u,
    0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u, 0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu,
    0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u, 0xa2bfe8a1u, 0xa81a664bu,
    0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u, 0x19a4c116u,
    0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u,
    0xc67178f2u};

static const uint32_t eap_sha256_iv[8] = {0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
                                          0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u};

#define EAP_ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void eap_sha256_compress_portable(uint32_t st[8], const uint8_t *p, size_t nblocks) {
    uint32_t w[64];
    while (nblocks--) {
        uint32_t a = st[0], b = st[1], c = st[2], d = st[3];
        uint32_t e = st[4], f = st[5], g = st[6], h = st[7];
        int t;
        for (t = 0; t < 16; t++) {
            w[t] = ((uint32_t)p[4 * t] << 24) | ((uint32_t)p[4 * t + 1] << 16) |
                   ((uint32_t)p[4 * t + 2] << 8) | (uint32_t)p[4 * t + 3];
        }
        for (t = 16; t < 64; t++) {
            uint32_t s0 = EAP_ROTR(w[t - 15], 7) ^ EAP_ROTR(w[t - 15], 18) ^ (w[t - 15] >> 3);
            uint32_t s1 = EAP_ROTR(w[t - 2], 17) ^ EAP_ROTR(w[t - 2], 19) ^ (w[t - 2] >> 10);
            w[t] = w[t - 16] + s0 + w[t - 7] + s1;
        }
        for (t = 0; t < 64; t++) {
            uint32_t s1 = EAP_ROTR(e, 6) ^ EAP_ROTR(e, 11) ^ EAP_ROTR(e, 25);
            uint32_t ch = (e & f) ^ (~e & g);
            uint32_t t1 = h + s1 + ch + eap_sha256_k[t] + w[t];
            uint32_t s0 = EAP_ROTR(a, 2) ^ EAP_ROTR(a, 13) ^ EAP_ROTR(a, 22);
            uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
            uint32_t t2 = s0 + maj;
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        st[0] += a;
        st[1] += b;
        st[2] += c;
        st[3] += d;
        st[4] += e;
        st[5] += f;
        st[6] += g;
        st[7] += h;
        p += 64;
    }
}

#undef EAP_ROTR

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define EAP_SHA256_HAVE_SHANI 1
#include <cpuid.h>
#include <immintrin.h>

__attribute__((target("sha,sse4.1,ssse3"))) static void
eap_sha256_compress_shani(uint32_t st[8], const uint8_t *p, size_t nblocks) {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)&st[0]);
    __m128i s1 = _mm_loadu_si128((const __m128i *)&st[4]);
    __m128i s0;
    tmp = _mm_shuffle_epi32(tmp, 0xB1);  /* CDAB */
    s1 = _mm_shuffle_epi32(s1, 0x1B);    /* EFGH */
    s0 = _mm_alignr_epi8(tmp, s1, 8);    /* ABEF */
    s1 = _mm_blend_epi16(s1, tmp, 0xF0); /* CDGH */
    while (nblocks--) {
        const __m128i abef = s0, cdgh = s1;
        __m128i m0 = _mm_setzero_si128(), m1 = m0, m2 = m0, m3 = m0;
        int g;
        for (g = 0; g < 16; g++) {
            __m128i w, msg;
            if (g < 4) {
                w = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * g)), bswap);
            } else {
                /* W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16], four words at a time */
                w = _mm_sha256msg1_epu32(m0, m1);
                w = _mm_add_epi32(w, _mm_alignr_epi8(m3, m2, 4));
                w = _mm_sha256msg2_epu32(w, m3);
            }
            m0 = m1;
            m1 = m2;
            m2 = m3;
            m3 = w;
            msg = _mm_add_epi32(w, _mm_loadu_si128((const __m128i *)&eap_sha256_k[4 * g]));
            s1 = _mm_sha256rnds2_epu32(s1, s0, msg);
            msg = _mm_shuffle_epi32(msg, 0x0E);
            s0 = _mm_sha256rnds2_epu32(s0, s1, msg);
        }
        s0 = _mm_add_epi32(s0, abef);
        s1 = _mm_add_epi32(s1, cdgh);
        p += 64;
    }
    tmp = _mm_shuffle_epi32(s0, 0x1B);   /* FEBA */
    s1 = _mm_shuffle_epi32(s1, 0xB1);    /* DCHG */
    s0 = _mm_blend_epi16(tmp, s1, 0xF0); /* DCBA */
    s1 = _mm_alignr_epi8(s1, tmp, 8);    /* HGFE */
    _mm_storeu_si128((__m128i *)&st[0], s0);
    _mm_storeu_si128((__m128i *)&st[4], s1);
}

static int eap_sha256_cpu_has_shani(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    if (!(c & (1u << 19)) || !(c & (1u << 9))) return 0; /* SSE4.1, SSSE3 */
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 29) & 1u; /* SHA */
}
#else
#define EAP_SHA256_HAVE_SHANI 0
#endif

typedef void (*eap_sha256_compress_fn)(uint32_t st[8], const uint8_t *p, size_t nblocks);

static eap_sha256_compress_fn eap_sha256_compress = eap_sha256_compress_portable;

/* Pick the fastest compression function this CPU runs; returns 1 for SHA-NI, 0 portable. */
static int eap_sha256_select(void) {
#if EAP_SHA256_HAVE_SHANI
    if (eap_sha256_cpu_has_shani()) {
        eap_sha256_compress = eap_sha256_compress_shani;
        return 1;
    }
#endif
    eap_sha256_compress = eap_sha256_compress_portable;
    return 0;
}

static void eap_sha256_use_portable(void) { eap_sha256_compress = eap_sha256_compress_portable; }

static int eap_sha256_is_shani(void) {
#if EAP_SHA256_HAVE_SHANI
    return eap_sha256_compress == eap_sha256_compress_shani;
#else
    return 0;
#endif
}

/* Number of 64-byte blocks a message of len bytes occupies once padded. */
static size_t eap_sha256_padded_blocks(size_t len) { return (len + 9 + 63) / 64; }

/* Write the padding of a len-byte message into buf (eap_sha256_padded_blocks(len) * 64 bytes);
 * bytes [0, len) are left for the message. */
static void eap_sha256_pad(uint8_t *buf, size_t len) {
    size_t total = eap_sha256_padded_blocks(len) * 64;
    uint64_t bits = (uint64_t)len * 8u;
    int i;
    memset(buf + len, 0, total - len);
    buf[len] = 0x80;
    for (i = 0; i < 8; i++) buf[total - 1 - i] = (uint8_t)(bits >> (8 * i));
}

/* Hash whole pre-padded blocks and write the big-endian digest. */
static void eap_sha256_blocks(const uint8_t *buf, size_t nblocks, uint8_t out[32]) {
    uint32_t st[8];
    int i;
    memcpy(st, eap_sha256_iv, sizeof st);
    eap_sha256_compress(st, buf, nblocks);
    for (i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(st[i] >> 24);
        out[4 * i + 1] = (uint8_t)(st[i] >> 16);
        out[4 * i + 2] = (uint8_t)(st[i] >> 8);
        out[4 * i + 3] = (uint8_t)st[i];
    }
}

/* SHA-256 of (prefix byte || msg[0:len]); prefix < 0 means no prefix byte. */
static void eap_sha256_prefixed(int prefix, const uint8_t *msg, size_t len, uint8_t out[32]) {
    uint32_t st[8];
    uint8_t tail[128];
    uint64_t bits = ((uint64_t)len + (prefix >= 0 ? 1u : 0u)) * 8u;
    size_t n = 0, full, end;
    int i;
    memcpy(st, eap_sha256_iv, sizeof st);
    if (prefix >= 0) {
        tail[n++] = (uint8_t)prefix;
        if (len >= 63) { /* first block: the prefix byte and 63 message bytes */
            memcpy(tail + 1, msg, 63);
            eap_sha256_compress(st, tail, 1);
            msg += 63;
            len -= 63;
            n = 0;
        }
    }
    full = (n == 0) ? len / 64 : 0; /* n > 0 only when the whole message fits in the tail */
    if (full) eap_sha256_compress(st, msg, full);
    msg += full * 64;
    len -= full * 64;
    memcpy(tail + n, msg, len);
    n += len;
    tail[n++] = 0x80;
    end = (n + 8 <= 64) ? 64 : 128;
    memset(tail + n, 0, end - n);
    for (i = 0; i < 8; i++) tail[end - 1 - i] = (uint8_t)(bits >> (8 * i));
    eap_sha256_compress(st, tail, end / 64);
    for (i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(st[i] >> 24);
        out[4 * i + 1] = (uint8_t)(st[i] >> 16);
        out[4 * i + 2] = (uint8_t)(st[i] >> 8);
        out[4 * i + 3] = (uint8_t)st[i];
    }
}

#endif /* EAP_SHA256_H */
