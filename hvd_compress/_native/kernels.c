/* hvd_compress native kernels: fused, cache-blocked encode/decode of the CPU codecs.
 *
 * Plain C99 + OpenMP, no torch headers: compiled on first use by hvd_compress/_native/__init__.py
 * (cc -O3 -fopenmp -shared -fPIC -ffp-contract=off) and called through ctypes with raw pointers.
 *
 * Contract (tested in tests/test_native.py and tests/test_payload_pinning.py):
 *  - The wire format is the one hvd_compress/common.py documents; for the same input and, for the
 *    stochastic codecs, the same uniforms (`noise` != NULL), every deterministic code, max-norm
 *    scale and decoded value is bit-identical to the plain torch implementation. The elementwise
 *    float operations are the plain path's operations in the same order (no FMA contraction: the
 *    build passes -ffp-contract=off and never -ffast-math).
 *  - Sums (QSGD's L2 norm, OneBit's means, ScaledSign's mean |x|, TernGrad's std) are accumulated in
 *    double in a fixed order, then rounded to fp32 the way the plain path rounds its fp32 sum; they
 *    can differ from torch's fp32 summation order in the last bits of the fp32 result.
 *  - Nothing depends on the thread count: work is split into fixed tiles, each tile is computed
 *    by one thread, cross-tile sums are combined in tile order, and the stochastic-rounding
 *    uniforms are a pure function of (seed, index of the value).
 *  - Non-finite inputs follow the plain path: a NaN/Inf makes the affected scale the canonical
 *    NaN (0x7fc00000), so the value can never decode to a finite number.
 *
 * Stochastic rounding without `noise`: u_i = 24-bit uniform on {0, 1/2^24, ..., 1 - 1/2^24}
 * (exactly the grid torch.rand uses for float32), from a SplitMix64 stream keyed by the seed:
 * h_j = mix64(key + j * GAMMA) for the pair j = i / 2, value 2j takes bits 40..63, value 2j+1
 * bits 16..39. SplitMix64 passes BigCrush; counter-based, so any tile can be drawn independently.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(HVDC_NO_AVX2)
#include <immintrin.h>
#define HVDC_AVX2 1
#define AVX2 __attribute__((target("avx2")))
#else
#define HVDC_AVX2 0
#endif

#define API __attribute__((visibility("default")))
#define ABI_VERSION 2

/* Function multi-versioning: an AVX2 clone where the CPU has it, the x86-64 baseline elsewhere.
 * The clones compute the very same IEEE operations (no FMA: -ffp-contract=off), only wider. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(HVDC_NO_CLONES)
#define HOT __attribute__((target_clones("avx2", "default")))
#else
#define HOT
#endif

#define TILE 16384     /* values per tile: 64 KiB of fp32, so a tile's temporaries stay in L2 */
#define SUB 512        /* values per inner step: noise and codes live in L1 */
#define TSUB 520       /* TernGrad's inner step: a multiple of 40 (whole base-3 and 2-bit bytes) */
#define GAMMA 0x9E3779B97F4A7C15ULL
#define QNAN 0x7fc00000u

typedef int64_t i64;

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline int finite_f(float f) { return (f2u(f) & 0x7fffffffu) < 0x7f800000u; }
static inline float nan_if_nonfinite(float f) { return finite_f(f) ? f : u2f(QNAN); }
static inline float quiet(float f) { return u2f(f2u(f) | 0x00400000u); }
static inline void put_f32(uint8_t *p, float f) { memcpy(p, &f, 4); }
static inline float get_f32(const uint8_t *p) { float f; memcpy(&f, p, 4); return f; }
static inline i64 imin(i64 a, i64 b) { return a < b ? a : b; }

/* Fixed combination order of the 8 partial sums (value index mod 8) every reduction keeps. */
static inline double sum8(const double a[8]) {
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

static i64 gcd64(i64 a, i64 b) { while (b) { i64 t = a % b; a = b; b = t; } return a; }

/* Tiles of whole `unit`s (buckets, packed bytes) of about TILE values. */
static i64 tile_len(i64 unit) { i64 k = TILE / unit; return unit * (k > 0 ? k : 1); }

static int team(i64 ntiles, int nthreads) {
    if (nthreads < 1) nthreads = 1;
    if (ntiles < 2) return 1;
    return ntiles < nthreads ? (int)ntiles : nthreads;
}

/* Tiles are handed out one at a time from a shared counter, so a thread that the OS preempts (a
 * busy machine) does not hold back a fixed share of the work; results do not depend on who
 * computes which tile. */
static inline i64 next_tile(i64 *counter) { return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED); }

/* Fresh multi-MiB outputs: ask for transparent huge pages before the first touch (512x fewer page
 * faults under THP "madvise" mode). Only a hint; HVD_COMPRESS_THP=0 (read by the loader) disables. */
static int g_thp = 1;
API void hvdc_set_thp(int on) { g_thp = on; }
static void advise_huge(void *p, i64 nbytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = (uintptr_t)2 << 20;
    if (!g_thp || nbytes < (i64)(4 * huge)) return;
    uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1);
    uintptr_t b = ((uintptr_t)p + (uintptr_t)nbytes) & ~(huge - 1);
    if (b > a) madvise((void *)a, b - a, MADV_HUGEPAGE);
#else
    (void)p; (void)nbytes;
#endif
}

API int hvdc_abi_version(void) { return ABI_VERSION; }

/* Hand-written AVX2 loops (the hot elementwise steps) where the CPU has AVX2; the scalar loops are
 * the reference: both compute the same IEEE operations per value and the same fixed partial-sum
 * pattern, so their results are bit-identical (tests/test_native.py compares them). */
static int g_simd = -1;
static int use_avx2(void) {
#if HVDC_AVX2
    if (g_simd < 0) {
        __builtin_cpu_init();
        g_simd = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return g_simd;
#else
    return 0;
#endif
}
/* 1: AVX2 where available, 0: scalar reference. Returns the level now in effect. */
API int hvdc_set_simd(int level) {
    g_simd = -1;
    if (level > 0) return use_avx2();
    g_simd = 0;
    return 0;
}

API int hvdc_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* ------------------------------------------------------------------------------------ noise */
static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t stream_key(uint64_t seed) { return mix64(seed ^ 0x6A09E667F3BCC909ULL); }

/* u[k] = uniform of value index start + k, k < len. */
HOT static void fill_noise(uint64_t key, i64 start, i64 len, float *u) {
    const float scale = 0x1p-24f;
    i64 k = 0;
    if (len <= 0) return;
    if (start & 1) {
        uint64_t h = mix64(key + (uint64_t)(start >> 1) * GAMMA);
        u[0] = (float)(int32_t)((h >> 16) & 0xFFFFFFu) * scale;
        k = 1;
    }
    uint64_t j0 = (uint64_t)((start + k) >> 1);
    i64 npairs = (len - k) >> 1;
    float *v = u + k;
    for (i64 p = 0; p < npairs; p++) {
        uint64_t h = mix64(key + (j0 + (uint64_t)p) * GAMMA);
        v[2 * p] = (float)(int32_t)(h >> 40) * scale;
        v[2 * p + 1] = (float)(int32_t)((h >> 16) & 0xFFFFFFu) * scale;
    }
    if ((len - k) & 1) {
        uint64_t h = mix64(key + (j0 + (uint64_t)npairs) * GAMMA);
        u[len - 1] = (float)(int32_t)(h >> 40) * scale;
    }
}

static inline float uniform_at(uint64_t key, i64 idx) {
    uint64_t h = mix64(key + (uint64_t)(idx >> 1) * GAMMA);
    uint32_t bits = (idx & 1) ? (uint32_t)((h >> 16) & 0xFFFFFFu) : (uint32_t)(h >> 40);
    return (float)(int32_t)bits * 0x1p-24f;
}

#if HVDC_AVX2
AVX2 static inline __m256i mul64c(__m256i a, uint64_t c) {
    const __m256i cl = _mm256_set1_epi64x((long long)(c & 0xFFFFFFFFu));
    const __m256i ch = _mm256_set1_epi64x((long long)(c >> 32));
    __m256i lo = _mm256_mul_epu32(a, cl);
    __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), cl),
                                     _mm256_mul_epu32(a, ch));
    return _mm256_add_epi64(lo, _mm256_slli_epi64(cross, 32));
}
AVX2 static inline __m256i mix64v(__m256i z) {
    z = mul64c(_mm256_xor_si256(z, _mm256_srli_epi64(z, 30)), 0xBF58476D1CE4E5B9ULL);
    z = mul64c(_mm256_xor_si256(z, _mm256_srli_epi64(z, 27)), 0x94D049BB133111EBULL);
    return _mm256_xor_si256(z, _mm256_srli_epi64(z, 31));
}
/* Counter for the pairs j0 .. j0+3, and the 8 uniforms of values 2*j0 .. 2*j0+7 it yields. */
AVX2 static inline __m256i noise_ctr(uint64_t key, uint64_t j0) {
    return _mm256_setr_epi64x((long long)(key + j0 * GAMMA), (long long)(key + (j0 + 1) * GAMMA),
                              (long long)(key + (j0 + 2) * GAMMA), (long long)(key + (j0 + 3) * GAMMA));
}
AVX2 static inline __m256 noise8(__m256i *ctr) {
    __m256i h = mix64v(*ctr);
    *ctr = _mm256_add_epi64(*ctr, _mm256_set1_epi64x((long long)(4 * GAMMA)));
    __m256i even = _mm256_srli_epi64(h, 40);                                      /* lane 2k   */
    __m256i odd = _mm256_slli_epi64(_mm256_and_si256(_mm256_srli_epi64(h, 16),
                                                     _mm256_set1_epi64x(0xFFFFFF)), 32); /* 2k+1 */
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_or_si256(even, odd)), _mm256_set1_ps(0x1p-24f));
}
/* Four vectors of 8 int32 codes (0..255) -> 32 bytes in order. */
AVX2 static inline void store_codes32(uint8_t *dst, __m256i c0, __m256i c1, __m256i c2, __m256i c3) {
    __m256i ab = _mm256_packus_epi32(c0, c1), cd = _mm256_packus_epi32(c2, c3);
    __m256i abcd = _mm256_packus_epi16(ab, cd);
    abcd = _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)dst, abcd);
}
AVX2 static inline __m256i nonfinite8(__m256 v) {
    __m256i a = _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x7fffffff));
    return _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7f7fffff));
}
#endif

/* For tests: the uniforms the kernels draw for values [start, start + len) under `seed`. */
API void hvdc_noise(uint64_t seed, i64 start, i64 len, float *out) {
    uint64_t key = stream_key(seed);
    for (i64 a = 0; a < len; a += SUB) fill_noise(key, start + a, imin(SUB, len - a), out + a);
}

/* ---------------------------------------------------------------------------------- packing */
/* Pack `len` codes (< 2^bits) starting at a byte boundary; the last byte is zero-padded. */
HOT static void pack_codes(const uint8_t *c, i64 len, int bits, uint8_t *out) {
    i64 full, j;
    switch (bits) {
    case 8:
        memcpy(out, c, (size_t)len);
        return;
    case 4:
        full = len >> 1;
        for (j = 0; j < full; j++) out[j] = (uint8_t)(c[2 * j] | (c[2 * j + 1] << 4));
        if (len & 1) out[full] = c[len - 1];
        return;
    case 2:
        full = len >> 2;
        for (j = 0; j < full; j++)
            out[j] = (uint8_t)(c[4 * j] | (c[4 * j + 1] << 2) | (c[4 * j + 2] << 4) | (c[4 * j + 3] << 6));
        if (len & 3) {
            uint8_t b = 0;
            for (i64 i = full * 4; i < len; i++) b |= (uint8_t)(c[i] << (2 * (i - full * 4)));
            out[full] = b;
        }
        return;
    case 1:
        full = len >> 3;
        for (j = 0; j < full; j++) {
            const uint8_t *q = c + 8 * j;
            out[j] = (uint8_t)(q[0] | (q[1] << 1) | (q[2] << 2) | (q[3] << 3) | (q[4] << 4) |
                               (q[5] << 5) | (q[6] << 6) | (q[7] << 7));
        }
        if (len & 7) {
            uint8_t b = 0;
            for (i64 i = full * 8; i < len; i++) b |= (uint8_t)(c[i] << (i - full * 8));
            out[full] = b;
        }
        return;
    }
}

/* Unpack `len` codes starting at a byte boundary. */
HOT static void unpack_codes(const uint8_t *p, i64 len, int bits, uint8_t *c) {
    i64 full, j;
    switch (bits) {
    case 8:
        memcpy(c, p, (size_t)len);
        return;
    case 4:
        full = len >> 1;
        for (j = 0; j < full; j++) { c[2 * j] = p[j] & 15; c[2 * j + 1] = p[j] >> 4; }
        if (len & 1) c[len - 1] = p[full] & 15;
        return;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    case 2: {
        uint32_t lut[256];   /* byte -> its four 2-bit codes as four bytes (little-endian) */
        for (int b = 0; b < 256; b++)
            lut[b] = (uint32_t)(b & 3) | ((uint32_t)((b >> 2) & 3) << 8) | ((uint32_t)((b >> 4) & 3) << 16) |
                     ((uint32_t)(b >> 6) << 24);
        full = len >> 2;
        for (j = 0; j < full; j++) memcpy(c + 4 * j, &lut[p[j]], 4);
        for (i64 i = full * 4; i < len; i++) c[i] = (p[full] >> (2 * (i - full * 4))) & 3;
        return;
    }
#else
    case 2:
        full = len >> 2;
        for (j = 0; j < full; j++) {
            uint8_t b = p[j];
            c[4 * j] = b & 3; c[4 * j + 1] = (b >> 2) & 3; c[4 * j + 2] = (b >> 4) & 3; c[4 * j + 3] = b >> 6;
        }
        for (i64 i = full * 4; i < len; i++) c[i] = (p[full] >> (2 * (i - full * 4))) & 3;
        return;
#endif
    case 1:
        full = len >> 3;
        for (j = 0; j < full; j++) {
            uint8_t b = p[j];
            for (int k = 0; k < 8; k++) c[8 * j + k] = (b >> k) & 1;
        }
        for (i64 i = full * 8; i < len; i++) c[i] = (p[full] >> (i - full * 8)) & 1;
        return;
    }
}

/* Decoded values go to `out` in one of three modes (aggregate = mean of decoded payloads, with the
 * plain path's float operations: total = d0; total += d1; ...; total /= k):
 *   0: out = v;   1: out += v;   2: out = (out + v) / div.  */
static void emit(float *out, const float *v, i64 len, int mode, float div) {
    if (mode == 1) {
        for (i64 i = 0; i < len; i++) out[i] = out[i] + v[i];
    } else if (mode == 2) {
        for (i64 i = 0; i < len; i++) out[i] = (out[i] + v[i]) / div;
    }
}

/* ------------------------------------------------------------------------------------ QSGD */
/* Max-abs scale of a bucket on the fp32 bit patterns (|x| is monotonic as uint32, NaN above Inf). */
HOT static float bucket_max(const float *x, i64 len) {
    uint32_t m = 0;
    const uint32_t *b = (const uint32_t *)x;
    for (i64 i = 0; i < len; i++) {
        uint32_t v = b[i] & 0x7fffffffu;
        m = v > m ? v : m;
    }
    return m >= 0x7f800000u ? u2f(QNAN) : u2f(m);
}

/* L2 norm: sum of squares in double (8 fixed partial sums), rounded to fp32, fp32 sqrt (the plain
 * path's sqrt of its fp32 sum). Non-finite input or an fp32 overflow of the sum: NaN. */
HOT static void sumsq_tail(const float *x, i64 i, i64 len, double acc[8]) {
    for (; i < len; i++) acc[i & 7] += (double)x[i] * (double)x[i];
}

#if HVDC_AVX2
AVX2 static double sumsq_avx2(const float *x, i64 len) {
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    i64 i = 0;
    for (; i + 8 <= len; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        a0 = _mm256_add_pd(a0, _mm256_mul_pd(lo, lo));
        a1 = _mm256_add_pd(a1, _mm256_mul_pd(hi, hi));
    }
    double acc[8];
    _mm256_storeu_pd(acc, a0); _mm256_storeu_pd(acc + 4, a1);
    sumsq_tail(x, i, len, acc);
    return sum8(acc);
}
#endif

static float bucket_l2(const float *x, i64 len) {
    double s;
#if HVDC_AVX2
    if (use_avx2()) s = sumsq_avx2(x, len);
    else
#endif
    {
        double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        sumsq_tail(x, 0, len, acc);
        s = sum8(acc);
    }
    /* sqrt in double, rounded once (== fp32 sqrt of the sum whenever the sum is exact in fp32); an
     * fp32 overflow of the sum of squares gives NaN, as in the plain path. */
    if (!finite_f((float)s)) return u2f(QNAN);
    return nan_if_nonfinite((float)sqrt(s));
}

/* Codes of one run of values inside a bucket: level = floor(y) + (u < y - floor(y)), y = |x| * inv,
 * NaN -> 0, clamp to [0, levels] (+Inf -> levels), code = levels -+ level. */
HOT static void qsgd_quantize(const float *x, i64 len, float inv, int levels, const float *u,
                              uint8_t *codes) {
    for (i64 i = 0; i < len; i++) {
        float xi = x[i];
        float y = fabsf(xi) * inv;
        int small = y < 256.0f;                 /* false for NaN, Inf (and impossible large y) */
        float yc = small ? y : 0.0f;
        int fl = (int)yc;
        float frac = yc - (float)fl;
        int lvl = fl + (u[i] < frac);
        lvl = lvl > levels ? levels : lvl;
        lvl = (!small && y == y) ? levels : lvl;
        codes[i] = (uint8_t)(xi < 0.0f ? levels - lvl : levels + lvl);
    }
}

#if HVDC_AVX2
AVX2 static void qsgd_quantize_avx2(const float *x, i64 len, float inv, int levels,
                                   const float *noise, uint64_t key, i64 start, uint8_t *codes) {
    i64 i = 0;
    float u1[1];
    if (!noise && (start & 1) && len > 0) {   /* the hashed stream is drawn in pairs from even indices */
        u1[0] = uniform_at(key, start);
        qsgd_quantize(x, 1, inv, levels, u1, codes);
        i = 1;
    }
    const __m256 vinv = _mm256_set1_ps(inv), v256 = _mm256_set1_ps(256.0f), zero = _mm256_setzero_ps();
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i vL = _mm256_set1_epi32(levels);
    __m256i ctr = noise_ctr(key, (uint64_t)((start + i) >> 1));
    for (; i + 32 <= len; i += 32) {
        __m256i c[4];
        for (int q = 0; q < 4; q++) {
            const __m256 u = noise ? _mm256_loadu_ps(noise + start + i + 8 * q) : noise8(&ctr);
            const __m256 xv = _mm256_loadu_ps(x + i + 8 * q);
            const __m256 y = _mm256_mul_ps(_mm256_and_ps(xv, absmask), vinv);
            const __m256 yc = _mm256_and_ps(y, _mm256_cmp_ps(y, v256, _CMP_LT_OQ));
            const __m256i fl = _mm256_cvttps_epi32(yc);
            const __m256 frac = _mm256_sub_ps(yc, _mm256_cvtepi32_ps(fl));
            const __m256i hit = _mm256_castps_si256(_mm256_cmp_ps(u, frac, _CMP_LT_OQ));
            __m256i lvl = _mm256_min_epi32(_mm256_sub_epi32(fl, hit), vL);
            lvl = _mm256_blendv_epi8(lvl, vL, _mm256_castps_si256(_mm256_cmp_ps(y, v256, _CMP_GE_OQ)));
            const __m256i neg = _mm256_castps_si256(_mm256_cmp_ps(xv, zero, _CMP_LT_OQ));
            c[q] = _mm256_blendv_epi8(_mm256_add_epi32(vL, lvl), _mm256_sub_epi32(vL, lvl), neg);
        }
        store_codes32(codes + i, c[0], c[1], c[2], c[3]);
    }
    for (; i < len; i++) {
        u1[0] = noise ? noise[start + i] : uniform_at(key, start + i);
        qsgd_quantize(x + i, 1, inv, levels, u1, codes + i);
    }
}
#endif

/* Codes of x[0, len) (value indices start.. for the noise): explicit `noise` (indexed by value
 * index) or the stream `key`. */
static void qsgd_codes(const float *x, i64 len, float inv, int levels, const float *noise,
                       uint64_t key, i64 start, uint8_t *codes) {
#if HVDC_AVX2
    if (use_avx2()) { qsgd_quantize_avx2(x, len, inv, levels, noise, key, start, codes); return; }
#endif
    float ubuf[SUB];
    for (i64 s = 0; s < len; s += SUB) {
        const i64 m = imin(SUB, len - s);
        if (!noise) fill_noise(key, start + s, m, ubuf);
        qsgd_quantize(x + s, m, inv, levels, noise ? noise + start + s : ubuf, codes + s);
    }
}

/* Payload: ceil(n * bits / 8) bytes of codes, then one fp32 scale per bucket. */
API int hvdc_qsgd_encode(const float *x, i64 n, int bits, i64 bucket, int l2, uint64_t seed,
                         const float *noise, uint8_t *out, int nthreads) {
    if (n <= 0) return 0;
    if (!(bits == 2 || bits == 4 || bits == 8) || bucket < 1) return -1;
    const int per = 8 / bits, levels = (1 << (bits - 1)) - 1;
    const i64 ncode = (n + per - 1) / per;
    const i64 unit = bucket / gcd64(bucket, 8) * 8;
    const i64 tl = tile_len(unit);
    const i64 ntiles = (n + tl - 1) / tl;
    const uint64_t key = stream_key(seed);
    int err = 0;
    i64 tctr1 = 0;
#pragma omp parallel num_threads(team(ntiles, nthreads)) reduction(| : err)
    {
        uint8_t *codes = (uint8_t *)malloc((size_t)tl + 8);
        if (!codes) err = 1;
        for (i64 t; codes && (t = next_tile(&tctr1)) < ntiles;) {
            const i64 a = t * tl, b = imin(a + tl, n);
            for (i64 bs = a; bs < b; bs += bucket) {
                const i64 be = imin(bs + bucket, n);
                const float scale = l2 ? bucket_l2(x + bs, be - bs) : bucket_max(x + bs, be - bs);
                put_f32(out + ncode + 4 * (bs / bucket), scale);
                /* torch evaluates `levels / scales` as reciprocal(scales) * levels: two roundings */
                const float inv = scale > 0.0f ? (1.0f / scale) * (float)levels : 0.0f;
                qsgd_codes(x + bs, be - bs, inv, levels, noise, key, bs, codes + (bs - a));
            }
            pack_codes(codes, b - a, bits, out + a / per);
        }
        free(codes);
    }
    return err ? -2 : 0;
}

HOT static void qsgd_values(const uint8_t *c, i64 len, int levels, float step, float *v) {
    for (i64 i = 0; i < len; i++) v[i] = (float)((int)c[i] - levels) * step;
}

API int hvdc_qsgd_decode(const uint8_t *payload, i64 n, int bits, i64 bucket, float *out, int mode,
                         float div, int nthreads) {
    if (n <= 0) return 0;
    if (!(bits == 2 || bits == 4 || bits == 8) || bucket < 1) return -1;
    const int per = 8 / bits, levels = (1 << (bits - 1)) - 1;
    const i64 ncode = (n + per - 1) / per;
    const i64 unit = bucket / gcd64(bucket, 8) * 8;
    const i64 tl = tile_len(unit);
    const i64 ntiles = (n + tl - 1) / tl;
    if (mode == 0) advise_huge(out, n * 4);
    int err = 0;
    i64 tctr2 = 0;
#pragma omp parallel num_threads(team(ntiles, nthreads)) reduction(| : err)
    {
        uint8_t *codes = (uint8_t *)malloc((size_t)tl + 8);   /* a tile's codes, unpacked once */
        float vbuf[SUB];
        if (!codes) err = 1;
        for (i64 t; codes && (t = next_tile(&tctr2)) < ntiles;) {
            const i64 a = t * tl, b = imin(a + tl, n);   /* a: whole buckets and whole bytes */
            unpack_codes(payload + a / per, b - a, bits, codes);
            for (i64 bs = a; bs < b; bs += bucket) {
                const i64 be = imin(bs + bucket, n);
                const float step = get_f32(payload + ncode + 4 * (bs / bucket)) / (float)levels;
                if (mode == 0) {
                    qsgd_values(codes + (bs - a), be - bs, levels, step, out + bs);
                    continue;
                }
                for (i64 s = bs; s < be; s += SUB) {
                    const i64 m = imin(SUB, be - s);
                    qsgd_values(codes + (s - a), m, levels, step, vbuf);
                    emit(out + s, vbuf, m, mode, div);
                }
            }
        }
        free(codes);
    }
    return err ? -2 : 0;
}

/* -------------------------------------------------------------------------------- TernGrad */
/* Per tile (in L2): the sum and max |x| (as bits), then the squared deviations from the tile's own
 * mean; tiles are combined with the exact identity sum (x - c)^2 = sum_t [M2_t + n_t (m_t - c)^2]. */
typedef struct { double sum, m2; uint32_t maxbits; } tile_moments;

HOT static void sum_max_tail(const float *x, i64 i, i64 len, double acc[8], uint32_t *m) {
    const uint32_t *b = (const uint32_t *)x;
    for (; i < len; i++) {
        acc[i & 7] += (double)x[i];
        const uint32_t v = b[i] & 0x7fffffffu;
        *m = v > *m ? v : *m;
    }
}

HOT static void sqdev_tail(const float *x, i64 i, i64 len, double mean, double acc[8]) {
    for (; i < len; i++) {
        const double d = (double)x[i] - mean;
        acc[i & 7] += d * d;
    }
}

#if HVDC_AVX2
AVX2 static tile_moments tile_moments_avx2(const float *x, i64 len) {
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    __m256i mx = _mm256_setzero_si256();
    const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
    i64 i = 0;
    for (; i + 8 <= len; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
        mx = _mm256_max_epu32(mx, _mm256_and_si256(_mm256_castps_si256(v), absmask));
    }
    double acc[8];
    uint32_t lanes[8], m = 0;
    _mm256_storeu_pd(acc, a0); _mm256_storeu_pd(acc + 4, a1);
    _mm256_storeu_si256((__m256i *)lanes, mx);
    for (int k = 0; k < 8; k++) m = lanes[k] > m ? lanes[k] : m;
    sum_max_tail(x, i, len, acc, &m);
    tile_moments r;
    r.sum = sum8(acc);
    r.maxbits = m;
    const double mean = r.sum / (double)len;
    const __m256d vm = _mm256_set1_pd(mean);
    a0 = _mm256_setzero_pd(); a1 = _mm256_setzero_pd();
    for (i = 0; i + 8 <= len; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), vm);
        const __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), vm);
        a0 = _mm256_add_pd(a0, _mm256_mul_pd(d0, d0));
        a1 = _mm256_add_pd(a1, _mm256_mul_pd(d1, d1));
    }
    _mm256_storeu_pd(acc, a0); _mm256_storeu_pd(acc + 4, a1);
    sqdev_tail(x, i, len, mean, acc);
    r.m2 = sum8(acc);
    return r;
}
#endif

static tile_moments tile_moments_of(const float *x, i64 len) {
#if HVDC_AVX2
    if (use_avx2()) return tile_moments_avx2(x, len);
#endif
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    tile_moments r;
    r.maxbits = 0;
    sum_max_tail(x, 0, len, acc, &r.maxbits);
    r.sum = sum8(acc);
    const double mean = r.sum / (double)len;
    double sq[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    sqdev_tail(x, 0, len, mean, sq);
    r.m2 = sum8(sq);
    return r;
}

/* TernGrad's local scale: min(max|x|, clip * std(x)) (clip <= 0: no clipping), the std as torch
 * computes it: sqrt(sum (x - c)^2 / (n - 1)) in double around c = the fp32 mean, rounded to fp32.
 * NaN if any value is non-finite. One pass over x. */
API float hvdc_terngrad_scale(const float *x, i64 n, float clip, int nthreads) {
    if (n <= 0) return 0.0f;
    const i64 tl = TILE, ntiles = (n + tl - 1) / tl;
    tile_moments *tm = (tile_moments *)malloc(sizeof(tile_moments) * (size_t)ntiles);
    if (!tm) return u2f(QNAN);
    i64 tctr3 = 0;
#pragma omp parallel num_threads(team(ntiles, nthreads))
    {
        for (i64 t; (t = next_tile(&tctr3)) < ntiles;) {
            const i64 a = t * tl;
            tm[t] = tile_moments_of(x + a, imin(tl, n - a));
        }
    }
    double total = 0.0;
    uint32_t m = 0;
    for (i64 t = 0; t < ntiles; t++) { total += tm[t].sum; m = tm[t].maxbits > m ? tm[t].maxbits : m; }
    float s;
    if (m >= 0x7f800000u) {
        s = u2f(QNAN);
    } else {
        s = u2f(m);
        if (clip > 0.0f && n > 1) {
            const double c = (double)((float)total / (float)n);   /* torch: the fp32 mean */
            double sq = 0.0;
            for (i64 t = 0; t < ntiles; t++) {   /* in tile order */
                const i64 nt = imin(tl, n - t * tl);
                const double d = tm[t].sum / (double)nt - c;
                sq += tm[t].m2 + (double)nt * d * d;
            }
            const float sd = (float)sqrt(sq / (double)(n - 1));
            const float cs = clip * sd;
            s = cs < s ? cs : s;
            if (cs != cs) s = cs;
        }
        s = nan_if_nonfinite(s);
    }
    free(tm);
    return s;
}

/* codes: 0 (-s), 1 (0), 2 (+s); hit = u < min(|x| / s, 1). Returns 1 when x holds a non-finite. */
HOT static int tern_quantize(const float *x, i64 len, float s, const float *u, uint8_t *codes) {
    int bad = 0;
    for (i64 i = 0; i < len; i++) {
        float xi = x[i];
        float p = fabsf(xi) / s;
        p = p > 1.0f ? 1.0f : p;
        int hit = u[i] < p;
        codes[i] = (uint8_t)(hit ? (xi < 0.0f ? 0 : 2) : 1);
        bad |= !((f2u(xi) & 0x7fffffffu) < 0x7f800000u);
    }
    return bad;
}

#if HVDC_AVX2
AVX2 static int tern_quantize_avx2(const float *x, i64 len, float s, const float *noise,
                                  uint64_t key, i64 start, uint8_t *codes) {
    i64 i = 0;
    int bad = 0;
    float u1[1];
    if (!noise && (start & 1) && len > 0) {
        u1[0] = uniform_at(key, start);
        bad |= tern_quantize(x, 1, s, u1, codes);
        i = 1;
    }
    const __m256 vs = _mm256_set1_ps(s), one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i i1 = _mm256_set1_epi32(1), im1 = _mm256_set1_epi32(-1);
    __m256i badv = _mm256_setzero_si256();
    __m256i ctr = noise_ctr(key, (uint64_t)((start + i) >> 1));
    for (; i + 32 <= len; i += 32) {
        __m256i c[4];
        for (int q = 0; q < 4; q++) {
            const __m256 u = noise ? _mm256_loadu_ps(noise + start + i + 8 * q) : noise8(&ctr);
            const __m256 xv = _mm256_loadu_ps(x + i + 8 * q);
            __m256 p = _mm256_div_ps(_mm256_and_ps(xv, absmask), vs);
            p = _mm256_blendv_ps(p, one, _mm256_cmp_ps(p, one, _CMP_GT_OQ));   /* NaN stays */
            const __m256i hit = _mm256_castps_si256(_mm256_cmp_ps(u, p, _CMP_LT_OQ));
            const __m256i sgn = _mm256_blendv_epi8(i1, im1,
                                                   _mm256_castps_si256(_mm256_cmp_ps(xv, zero, _CMP_LT_OQ)));
            c[q] = _mm256_add_epi32(i1, _mm256_and_si256(hit, sgn));    /* hit ? 1 +- 1 : 1 */
            badv = _mm256_or_si256(badv, nonfinite8(xv));
        }
        store_codes32(codes + i, c[0], c[1], c[2], c[3]);
    }
    bad |= !_mm256_testz_si256(badv, badv);
    for (; i < len; i++) {
        u1[0] = noise ? noise[start + i] : uniform_at(key, start + i);
        bad |= tern_quantize(x + i, 1, s, u1, codes + i);
    }
    return bad;
}
#endif

static int tern_codes(const float *x, i64 len, float s, const float *noise, uint64_t key, i64 start,
                      uint8_t *codes) {
#if HVDC_AVX2
    if (use_avx2()) return tern_quantize_avx2(x, len, s, noise, key, start, codes);
#endif
    float ubuf[SUB];
    int bad = 0;
    for (i64 q = 0; q < len; q += SUB) {
        const i64 m = imin(SUB, len - q);
        if (!noise) fill_noise(key, start + q, m, ubuf);
        bad |= tern_quantize(x + q, m, s, noise ? noise + start + q : ubuf, codes + q);
    }
    return bad;
}

HOT static int all_finite_run(const float *x, i64 len) {
    int bad = 0;
    const uint32_t *b = (const uint32_t *)x;
    for (i64 i = 0; i < len; i++) bad |= !((b[i] & 0x7fffffffu) < 0x7f800000u);
    return !bad;
}

HOT static void pack_base3(const uint8_t *c, i64 len, uint8_t *out) {
    i64 full = len / 5, j;
    for (j = 0; j < full; j++) {
        const uint8_t *q = c + 5 * j;
        out[j] = (uint8_t)(q[0] + 3 * q[1] + 9 * q[2] + 27 * q[3] + 81 * q[4]);
    }
    if (len % 5) {
        static const int pw[5] = {1, 3, 9, 27, 81};
        int b = 0;
        for (i64 i = full * 5; i < len; i++) b += c[i] * pw[i - full * 5];
        out[full] = (uint8_t)b;
    }
}

/* Payload: codes (base-3, five per byte, or 2 bits), then the fp32 scale: `s` as given, or NaN when
 * x holds a non-finite value. With s <= 0 or non-finite every code is 1 (zero). */
API int hvdc_terngrad_encode(const float *x, i64 n, uint32_t s_bits, int base3, uint64_t seed,
                             const float *noise, uint8_t *out, int nthreads) {
    const float s = u2f(s_bits);   /* as bits: the scale goes on the wire exactly as given */
    const i64 ncode = base3 ? (n + 4) / 5 : (n + 3) / 4;
    int bad = 0;
    if (n > 0) {
        const int valid = s > 0.0f && finite_f(s);
        const i64 tl = tile_len(40);
        const i64 ntiles = (n + tl - 1) / tl;
        const uint64_t key = stream_key(seed);
        int err = 0;
    i64 tctr4 = 0;
#pragma omp parallel num_threads(team(ntiles, nthreads)) reduction(| : bad, err)
        {
            uint8_t *codes = (uint8_t *)malloc((size_t)tl + 8);
            if (!codes) err = 1;
            for (i64 t; codes && (t = next_tile(&tctr4)) < ntiles;) {
                const i64 a = t * tl, b = imin(a + tl, n);
                if (valid) {
                    bad |= tern_codes(x + a, b - a, s, noise, key, a, codes);
                } else {
                    memset(codes, 1, (size_t)(b - a));
                    bad |= !all_finite_run(x + a, b - a);
                }
                if (base3) pack_base3(codes, b - a, out + a / 5);
                else pack_codes(codes, b - a, 2, out + a / 4);
            }
            free(codes);
        }
        if (err) return -2;
    }
    put_f32(out + ncode, bad ? u2f(QNAN) : s);
    return bad;
}

/* value = (code - 1) * s, with torch's IEEE results (a NaN scale propagates as itself, quieted). */
static void tern_lut(float s, float lut[3]) {
    if (s != s) { lut[0] = lut[1] = lut[2] = quiet(s); return; }
    volatile float m1 = -1.0f, z = 0.0f;   /* keep (-1)*s, 0*s as run-time IEEE products */
    lut[0] = m1 * s;
    lut[1] = z * s;
    lut[2] = s;
}

API int hvdc_terngrad_decode(const uint8_t *payload, i64 n, int base3, float *out, int mode,
                             float div, int nthreads) {
    if (n <= 0) return 0;
    const i64 ncode = base3 ? (n + 4) / 5 : (n + 3) / 4;
    float lut3[3];
    tern_lut(get_f32(payload + ncode), lut3);
    float table[256 * 5];   /* base3: byte -> five values; 2bit: byte -> four values */
    int bad = 0;
    if (base3) {
        for (int byte = 0; byte < 256; byte++) {
            int v = byte;
            for (int k = 0; k < 5; k++) { table[byte * 5 + k] = lut3[v % 3]; v /= 3; }
        }
    } else {
        float lut4[4];
        lut4[0] = lut3[0]; lut4[1] = lut3[1]; lut4[2] = lut3[2];
        {
            float s = get_f32(payload + ncode);
            volatile float two = 2.0f;
            lut4[3] = (s != s) ? quiet(s) : two * s;   /* code 3 never sent; plain gives (3-1)*s */
        }
        for (int byte = 0; byte < 256; byte++)
            for (int k = 0; k < 4; k++) table[byte * 4 + k] = lut4[(byte >> (2 * k)) & 3];
    }
    const i64 per = base3 ? 5 : 4;
    const i64 tl = tile_len(40);
    const i64 ntiles = (n + tl - 1) / tl;
    if (mode == 0) advise_huge(out, n * 4);
    i64 tctr5 = 0;
#pragma omp parallel num_threads(team(ntiles, nthreads)) reduction(| : bad)
    {
        float vbuf[TSUB + 8];
        for (i64 t; (t = next_tile(&tctr5)) < ntiles;) {
            const i64 a = t * tl, b = imin(a + tl, n);
            for (i64 q = a; q < b; q += TSUB) {   /* TSUB and tl are multiples of 40 */
                const i64 len = imin(TSUB, b - q);
                const uint8_t *p = payload + q / per;
                const i64 nbytes = (len + per - 1) / per, full = len / per;
                float *v = (mode == 0 && len == full * per) ? out + q : vbuf;
                for (i64 j = 0; j < nbytes; j++) bad |= base3 && p[j] >= 243;
                if (per == 5) {
                    for (i64 j = 0; j < nbytes; j++) memcpy(v + 5 * j, table + 5 * p[j], 20);
                } else {
                    for (i64 j = 0; j < nbytes; j++) memcpy(v + 4 * j, table + 4 * p[j], 16);
                }
                if (v == vbuf && mode == 0) memcpy(out + q, vbuf, (size_t)len * 4);
                else emit(out + q, vbuf, len, mode, div);
            }
        }
    }
    return bad ? -3 : 0;
}

/* ---------------------------------------------------------------------------------- OneBit */
/* Statistics of one bucket of p: sign bits, count of p >= 0, the sums of p >= 0 and of p < 0 (in
 * double, partial sums by value index mod 8, combined in a fixed order), non-finite flag. */
typedef struct { double psum, nsum; i64 cnt; int bad; } onebit_stats;

HOT static onebit_stats onebit_scan(const float *src, i64 len, uint8_t *bits_out) {
    double ps[8] = {0, 0, 0, 0, 0, 0, 0, 0}, ns[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    onebit_stats st = {0, 0, 0, 0};
    for (i64 i = 0; i < len; i++) {
        const float v = src[i];
        const int pos = v >= 0.0f;
        st.cnt += pos;
        ps[i & 7] += pos ? (double)v : 0.0;
        ns[i & 7] += pos ? 0.0 : (double)v;
        st.bad |= !finite_f(v);
        if ((i & 7) == 0) bits_out[i >> 3] = 0;
        bits_out[i >> 3] |= (uint8_t)(pos << (i & 7));
    }
    st.psum = sum8(ps);
    st.nsum = sum8(ns);
    return st;
}

#if HVDC_AVX2
AVX2 static onebit_stats onebit_scan_avx2(const float *src, i64 len, uint8_t *bits_out) {
    __m256d ps0 = _mm256_setzero_pd(), ps1 = _mm256_setzero_pd();
    __m256d ns0 = _mm256_setzero_pd(), ns1 = _mm256_setzero_pd();
    __m256i badv = _mm256_setzero_si256();
    const __m256 zero = _mm256_setzero_ps();
    i64 cnt = 0, i = 0;
    for (; i + 8 <= len; i += 8) {
        const __m256 v = _mm256_loadu_ps(src + i);
        const __m256 m = _mm256_cmp_ps(v, zero, _CMP_GE_OQ);
        const int mask = _mm256_movemask_ps(m);
        bits_out[i >> 3] = (uint8_t)mask;
        cnt += __builtin_popcount((unsigned)mask);
        const __m256 vp = _mm256_and_ps(m, v), vn = _mm256_andnot_ps(m, v);
        ps0 = _mm256_add_pd(ps0, _mm256_cvtps_pd(_mm256_castps256_ps128(vp)));
        ps1 = _mm256_add_pd(ps1, _mm256_cvtps_pd(_mm256_extractf128_ps(vp, 1)));
        ns0 = _mm256_add_pd(ns0, _mm256_cvtps_pd(_mm256_castps256_ps128(vn)));
        ns1 = _mm256_add_pd(ns1, _mm256_cvtps_pd(_mm256_extractf128_ps(vn, 1)));
        badv = _mm256_or_si256(badv, nonfinite8(v));
    }
    double ps[8], ns[8];
    _mm256_storeu_pd(ps, ps0); _mm256_storeu_pd(ps + 4, ps1);
    _mm256_storeu_pd(ns, ns0); _mm256_storeu_pd(ns + 4, ns1);
    int bad = !_mm256_testz_si256(badv, badv);
    for (; i < len; i++) {   /* same lanes (i mod 8) as the scalar loop */
        const float v = src[i];
        const int pos = v >= 0.0f;
        cnt += pos;
        ps[i & 7] += pos ? (double)v : 0.0;
        ns[i & 7] += pos ? 0.0 : (double)v;
        bad |= !finite_f(v);
        if ((i & 7) == 0) bits_out[i >> 3] = 0;
        bits_out[i >> 3] |= (uint8_t)(pos << (i & 7));
    }
    onebit_stats st = {sum8(ps), sum8(ns), cnt, bad};
    return st;
}
#endif

/* p[i] -= (p[i] >= 0 ? hi : lo): the error-feedback residual p - decode(p). Returns 1 if the
 * result holds a non-finite value. */
HOT static int residual_update(float *p, i64 len, float hi, float lo) {
    int bad = 0;
    for (i64 k = 0; k < len; k++) {
        const float v = p[k];
        const float r = v - (v >= 0.0f ? hi : lo);
        p[k] = r;
        bad |= !finite_f(r);
    }
    return bad;
}

#if HVDC_AVX2
AVX2 static int residual_update_avx2(float *p, i64 len, float hi, float lo) {
    const __m256 vh = _mm256_set1_ps(hi), vl = _mm256_set1_ps(lo), zero = _mm256_setzero_ps();
    __m256i badv = _mm256_setzero_si256();
    i64 i = 0;
    for (; i + 8 <= len; i += 8) {
        const __m256 v = _mm256_loadu_ps(p + i);
        const __m256 d = _mm256_blendv_ps(vl, vh, _mm256_cmp_ps(v, zero, _CMP_GE_OQ));
        const __m256 r = _mm256_sub_ps(v, d);
        _mm256_storeu_ps(p + i, r);
        badv = _mm256_or_si256(badv, nonfinite8(r));
    }
    return (!_mm256_testz_si256(badv, badv)) | residual_update(p + i, len - i, hi, lo);
}
#endif

static int residual_of(float *p, i64 len, float hi, float lo) {
#if HVDC_AVX2
    if (use_avx2()) return residual_update_avx2(p, len, hi, lo);
#endif
    return residual_update(p, len, hi, lo);
}

/* p = g + e (or g) into dst; dst may be e. */
HOT static void add_into(const float *g, const float *e, float *dst, i64 len) {
    if (e) {
        for (i64 i = 0; i < len; i++) dst[i] = g[i] + e[i];
    } else if (dst != g) {
        memcpy(dst, g, (size_t)len * 4);
    }
}

/* One bucket, optionally with error feedback (p = g + e_in; e_out = p - decode(p); e_in may equal
 * e_out). Writes the bits (from a byte boundary) and the (mean of p >= 0, mean of p < 0) pair. */
static int onebit_bucket(const float *g, const float *e_in, float *e_out, i64 len,
                         uint8_t *bits_out, uint8_t *means_out) {
    const float *src = g;
    if (e_out) {
        add_into(g, e_in, e_out, len);
        src = e_out;
    }
    onebit_stats st;
#if HVDC_AVX2
    if (use_avx2()) st = onebit_scan_avx2(src, len, bits_out);
    else
#endif
        st = onebit_scan(src, len, bits_out);
    const i64 ncnt = len - st.cnt;
    /* The plain path: pos_mean = sum(p >= 0) / count, neg_mean = (sum(p) - pos_sum) / count, 0 for
     * an empty side; non-finite means -> NaN. sum(p) - pos_sum is non-finite whenever any value is.
     * The quotient is taken in double and rounded once: equal to the plain path's fp32 division
     * whenever the fp32 sum is exact, closer to the true mean otherwise. */
    float pm = st.cnt > 0 ? (finite_f((float)st.psum) ? (float)(st.psum / (double)st.cnt) : u2f(QNAN)) : 0.0f;
    float nm = ncnt > 0 ? (st.bad ? u2f(QNAN) : (float)(st.nsum / (double)ncnt)) : 0.0f;
    pm = nan_if_nonfinite(pm);
    nm = nan_if_nonfinite(nm);
    put_f32(means_out, pm);
    put_f32(means_out + 4, nm);
    return e_out ? residual_of(e_out, len, pm, nm) : 0;
}

/* Payload: ceil(n / 8) bytes of bits (1: >= 0), then per bucket the fp32 pair (pos mean, neg mean).
 * With e_out: error feedback, returns 1 when the new residual holds a non-finite value. */
API int hvdc_onebit_encode(const float *g, const float *e_in, float *e_out, i64 n, i64 bucket,
                           uint8_t *out, int nthreads) {
    if (n <= 0) return 0;
    if (bucket < 8 || bucket % 8) return -1;
    const i64 nb = (n + 7) / 8;
    const i64 tl = tile_len(bucket);
    const i64 ntiles = (n + tl - 1) / tl;
    int rbad = 0;
    if (e_in && !e_out) return -1;   /* a residual to add needs somewhere to put the new one */
    i64 tctr6 = 0;
#pragma omp parallel num_threads(team(ntiles, nthreads)) reduction(| : rbad)
    {
        for (i64 t; (t = next_tile(&tctr6)) < ntiles;) {
            const i64 a = t * tl, b = imin(a + tl, n);
            for (i64 bs = a; bs < b; bs += bucket) {
                const i64 len = imin(bucket, n - bs);
                rbad |= onebit_bucket(g + bs, e_in ? e_in + bs : NULL, e_out ? e_out + bs : NULL,
                                      len, out + bs / 8, out + nb + 8 * (bs / bucket));
            }
        }
    }
    return rbad;
}

HOT static void select_bits(const uint8_t *p, i64 len, float hi, float lo, float *v) {
    const i64 full = len >> 3;
    for (i64 j = 0; j < full; j++) {
        const uint8_t b = p[j];
        for (int k = 0; k < 8; k++) v[8 * j + k] = ((b >> k) & 1) ? hi : lo;
    }
    for (i64 i = full * 8; i < len; i++) v[i] = ((p[full] >> (i - full * 8)) & 1) ? hi : lo;
}

API int hvdc_onebit_decode(const uint8_t *payload, i64 n, i64 bucket, float *out, int mode,
                           float div, int nthreads) {
    if (n <= 0) return 0;
    if (bucket < 8 || bucket % 8) return -1;
    const i64 nb = (n + 7) / 8;
    const i64 tl = tile_len(bucket);
    const i64 ntiles = (n + tl - 1) / tl;
    if (mode == 0) advise_huge(out, n * 4);
    i64 tctr7 = 0;
#pragma omp parallel num_threads(team(ntiles, nthreads))
    {
        float vbuf[SUB];
        for (i64 t; (t = next_tile(&tctr7)) < ntiles;) {
            const i64 a = t * tl, b = imin(a + tl, n);
            for (i64 bs = a; bs < b; bs += bucket) {
                const i64 be = imin(bs + bucket, n);
                const float pm = get_f32(payload + nb + 8 * (bs / bucket));
                const float nm = get_f32(payload + nb + 8 * (bs / bucket) + 4);
                for (i64 s = bs; s < be; s += SUB) {   /* SUB is a multiple of 8 */
                    const i64 len = imin(SUB, be - s);
                    float *v = mode == 0 ? out + s : vbuf;
                    select_bits(payload + s / 8, len, pm, nm, v);
                    emit(out + s, vbuf, len, mode, div);
                }
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------ ScaledSign */
/* Sign bits and sum |p| (double, lanes by value index mod 8) of one tile. */
HOT static double sign_scan(const float *src, i64 len, uint8_t *bits) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (i64 i = 0; i < len; i++) {
        acc[i & 7] += (double)fabsf(src[i]);
        if ((i & 7) == 0) bits[i >> 3] = 0;
        bits[i >> 3] |= (uint8_t)((src[i] >= 0.0f) << (i & 7));
    }
    return sum8(acc);
}

#if HVDC_AVX2
AVX2 static double sign_scan_avx2(const float *src, i64 len, uint8_t *bits) {
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    const __m256 zero = _mm256_setzero_ps();
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    i64 i = 0;
    for (; i + 8 <= len; i += 8) {
        const __m256 v = _mm256_loadu_ps(src + i);
        bits[i >> 3] = (uint8_t)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_GE_OQ));
        const __m256 a = _mm256_and_ps(v, absmask);
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(a)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
    }
    double acc[8];
    _mm256_storeu_pd(acc, a0); _mm256_storeu_pd(acc + 4, a1);
    for (; i < len; i++) {
        acc[i & 7] += (double)fabsf(src[i]);
        if ((i & 7) == 0) bits[i >> 3] = 0;
        bits[i >> 3] |= (uint8_t)((src[i] >= 0.0f) << (i & 7));
    }
    return sum8(acc);
}
#endif

/* Pass 1 of a tile: p = g (+ e_in) (stored to e_out), sign bits, sum |p|. */
static double sign_pass1(const float *g, const float *e_in, float *e_out, i64 len, uint8_t *bits) {
    const float *src = g;
    if (e_out) {
        add_into(g, e_in, e_out, len);
        src = e_out;
    }
#if HVDC_AVX2
    if (use_avx2()) return sign_scan_avx2(src, len, bits);
#endif
    return sign_scan(src, len, bits);
}

static int sign_residual(float *p, i64 len, float s) {
    return residual_of(p, len, s, (s != s) ? s : -s);   /* plain: (-1) * s keeps a NaN's sign */
}

/* Payload: ceil(n / 8) bytes of sign bits (1: >= 0), then the fp32 mean |p| (NaN if non-finite).
 * `e_in` (not with e_out == NULL) / `e_out`: error feedback as for OneBit. Returns 1 when the new
 * residual holds a non-finite value. */
API int hvdc_sign_encode(const float *g, const float *e_in, float *e_out, i64 n, uint8_t *out,
                         int nthreads) {
    const i64 nb = (n + 7) / 8;
    if (n <= 0) { put_f32(out + nb, 0.0f); return 0; }
    if (e_in && !e_out) return -1;
    const i64 tl = TILE, ntiles = (n + tl - 1) / tl;
    double *sums = (double *)malloc(sizeof(double) * (size_t)ntiles);
    if (!sums) return -2;
    i64 tctr8 = 0;
#pragma omp parallel num_threads(team(ntiles, nthreads))
    {
        for (i64 t; (t = next_tile(&tctr8)) < ntiles;) {
            const i64 a = t * tl, len = imin(tl, n - a);
            sums[t] = sign_pass1(g + a, e_in ? e_in + a : NULL, e_out ? e_out + a : NULL, len,
                                 out + a / 8);
        }
    }
    double total = 0.0;
    for (i64 t = 0; t < ntiles; t++) total += sums[t];
    free(sums);
    /* plain: fp32 sum / n; here the double sum / n rounded once (the same whenever the fp32 sum is
     * exact), NaN if the sum is not finite in fp32 */
    const float s = finite_f((float)total) ? nan_if_nonfinite((float)(total / (double)n)) : u2f(QNAN);
    put_f32(out + nb, s);
    int rbad = 0;
    if (e_out) {
    i64 tctr9 = 0;
#pragma omp parallel num_threads(team(ntiles, nthreads)) reduction(| : rbad)
        {
            for (i64 t; (t = next_tile(&tctr9)) < ntiles;) {
                const i64 a = t * tl;
                rbad |= sign_residual(e_out + a, imin(tl, n - a), s);
            }
        }
    }
    return rbad;
}

API int hvdc_sign_decode(const uint8_t *payload, i64 n, float *out, int mode, float div,
                         int nthreads) {
    if (n <= 0) return 0;
    const i64 nb = (n + 7) / 8;
    const float s = get_f32(payload + nb);
    const float hi = (s != s) ? quiet(s) : s;
    const float lo = (s != s) ? quiet(s) : -s;   /* plain: (bit * 2 - 1) * s */
    const i64 tl = TILE, ntiles = (n + tl - 1) / tl;
    if (mode == 0) advise_huge(out, n * 4);
    i64 tctr10 = 0;
#pragma omp parallel num_threads(team(ntiles, nthreads))
    {
        float vbuf[SUB];
        for (i64 t; (t = next_tile(&tctr10)) < ntiles;) {
            const i64 a = t * tl, b = imin(a + tl, n);
            for (i64 q = a; q < b; q += SUB) {
                const i64 len = imin(SUB, b - q);
                float *v = mode == 0 ? out + q : vbuf;
                select_bits(payload + q / 8, len, hi, lo, v);
                emit(out + q, vbuf, len, mode, div);
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------ TensorFlow's stateless uniforms */
/* The uniforms `tf.random.stateless_uniform([n], seed=[s0, s1], dtype=float32)` draws on the CPU
 * (Philox4x32-10, TF's StatelessRandomGetKeyCounter seed scrambling, 23-bit mantissa floats), so
 * the TF codecs can run their stochastic rounding in the kernels and keep the exact noise of the
 * TF ops (tested against TF in tests/test_tf_native.py). Value i takes word i % 4 of the block
 * at counter + i / 4. */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline void philox10(const uint32_t ctr_in[4], const uint32_t key_in[2], uint32_t out[4]) {
    uint32_t c0 = ctr_in[0], c1 = ctr_in[1], c2 = ctr_in[2], c3 = ctr_in[3];
    uint32_t k0 = key_in[0], k1 = key_in[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0; c1 = (uint32_t)p1; c2 = n2; c3 = (uint32_t)p0;
        k0 += PHILOX_W0; k1 += PHILOX_W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

static void tf_key_counter(uint64_t s0, uint64_t s1, uint32_t key[2], uint32_t ctr[4]) {
    const uint32_t k[2] = {0x3ec8f720u, 0x02461e29u};
    const uint32_t c[4] = {(uint32_t)s0, (uint32_t)(s0 >> 32), (uint32_t)s1, (uint32_t)(s1 >> 32)};
    uint32_t mix[4];
    philox10(c, k, mix);
    key[0] = mix[0]; key[1] = mix[1];
    ctr[0] = 0; ctr[1] = 0; ctr[2] = mix[2]; ctr[3] = mix[3];
}

static inline float tf_u32_to_float(uint32_t x) { return u2f((x & 0x7fffffu) | 0x3f800000u) - 1.0f; }

#if HVDC_AVX2
/* 32x32 -> 64-bit products of 8 lanes by a constant: (hi, lo) words. */
AVX2 static inline void mulhilo8(__m256i a, __m256i m, __m256i *hi, __m256i *lo) {
    __m256i ev = _mm256_mul_epu32(a, m), od = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    *lo = _mm256_blend_epi32(ev, _mm256_slli_epi64(od, 32), 0xAA);
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(ev, 32), od, 0xAA);
}
/* The ten Philox rounds of 8 blocks at once (the same operations as the scalar loop). */
AVX2 static void philox_rounds_avx2(uint32_t *c0, uint32_t *c1, uint32_t *c2, uint32_t *c3,
                                    uint32_t k0, uint32_t k1) {
    __m256i x0 = _mm256_loadu_si256((const __m256i *)c0), x1 = _mm256_loadu_si256((const __m256i *)c1);
    __m256i x2 = _mm256_loadu_si256((const __m256i *)c2), x3 = _mm256_loadu_si256((const __m256i *)c3);
    const __m256i m0 = _mm256_set1_epi32((int)PHILOX_M0), m1 = _mm256_set1_epi32((int)PHILOX_M1);
    for (int r = 0; r < 10; r++) {
        __m256i h0, l0, h1, l1;
        mulhilo8(x0, m0, &h0, &l0);
        mulhilo8(x2, m1, &h1, &l1);
        __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(h1, x1), _mm256_set1_epi32((int)k0));
        __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(h0, x3), _mm256_set1_epi32((int)k1));
        x0 = n0; x1 = l1; x2 = n2; x3 = l0;
        k0 += PHILOX_W0; k1 += PHILOX_W1;
    }
    _mm256_storeu_si256((__m256i *)c0, x0); _mm256_storeu_si256((__m256i *)c1, x1);
    _mm256_storeu_si256((__m256i *)c2, x2); _mm256_storeu_si256((__m256i *)c3, x3);
}
#endif

/* Blocks g = g0 .. g0+nblocks-1 (counter + g, a 128-bit add) into out[4 * (g - g0) + j]. Eight
 * blocks at a time in lane arrays, so the compiler vectorizes the rounds (vpmuludq in AVX2). */
#define PHILOX_LANES 8
HOT static void philox_blocks(const uint32_t key[2], const uint32_t base[4], uint64_t g0, i64 nblocks,
                              float *out) {
    const uint64_t lo = (uint64_t)base[0] | ((uint64_t)base[1] << 32);
    const uint64_t hi = (uint64_t)base[2] | ((uint64_t)base[3] << 32);
    for (i64 b0 = 0; b0 < nblocks; b0 += PHILOX_LANES) {
        uint32_t c0[PHILOX_LANES], c1[PHILOX_LANES], c2[PHILOX_LANES], c3[PHILOX_LANES];
        for (int l = 0; l < PHILOX_LANES; l++) {
            uint64_t lw = lo + g0 + (uint64_t)(b0 + l), hw = hi + (lw < lo ? 1u : 0u);
            c0[l] = (uint32_t)lw; c1[l] = (uint32_t)(lw >> 32); c2[l] = (uint32_t)hw; c3[l] = (uint32_t)(hw >> 32);
        }
        uint32_t k0 = key[0], k1 = key[1];
#if HVDC_AVX2
        if (use_avx2()) {
            philox_rounds_avx2(c0, c1, c2, c3, k0, k1);
        } else
#endif
        for (int r = 0; r < 10; r++) {
            for (int l = 0; l < PHILOX_LANES; l++) {
                uint64_t p0 = (uint64_t)PHILOX_M0 * c0[l], p1 = (uint64_t)PHILOX_M1 * c2[l];
                uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[l] ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3[l] ^ k1;
                c0[l] = n0; c1[l] = (uint32_t)p1; c2[l] = n2; c3[l] = (uint32_t)p0;
            }
            k0 += PHILOX_W0; k1 += PHILOX_W1;
        }
        const i64 m = imin(PHILOX_LANES, nblocks - b0);
        float *o = out + 4 * b0;
        for (i64 l = 0; l < m; l++) {
            o[4 * l] = tf_u32_to_float(c0[l]); o[4 * l + 1] = tf_u32_to_float(c1[l]);
            o[4 * l + 2] = tf_u32_to_float(c2[l]); o[4 * l + 3] = tf_u32_to_float(c3[l]);
        }
    }
}

/* out[0 .. n): the values [0, n) of tf.random.stateless_uniform([N], seed=[s0, s1]) for any
 * N >= n (TF's draw does not depend on N beyond the prefix). */
API void hvdc_tf_uniform(uint64_t s0, uint64_t s1, i64 n, float *out, int nthreads) {
    if (n <= 0) return;
    uint32_t key[2], ctr[4];
    tf_key_counter(s0, s1, key, ctr);
    const i64 full = n / 4;
    const i64 tl = TILE / 4, ntiles = (full + tl - 1) / tl;
    i64 tctr = 0;
#pragma omp parallel num_threads(team(ntiles, nthreads))
    for (i64 t; (t = next_tile(&tctr)) < ntiles;) {
        const i64 a = t * tl, b = imin(a + tl, full);
        philox_blocks(key, ctr, (uint64_t)a, b - a, out + 4 * a);
    }
    if (n % 4) {
        float last[4];
        philox_blocks(key, ctr, (uint64_t)full, 1, last);
        memcpy(out + 4 * full, last, (size_t)(n % 4) * sizeof(float));
    }
}

/* -------------------------------------------------------------------------------------- TopK */
/* Canonical top-k (hvd_compress/codecs/topk.py): the k largest magnitudes, NaN above everything,
 * +-Inf tied with FLT_MAX (torch.nan_to_num), ties at the k-th magnitude to the lower indices;
 * indices ascending, then the values.
 *
 * Selection without a sort (after Deep Gradient Compression's sampled threshold, but exact):
 * magnitudes compare as their IEEE bit patterns (for non-negative floats the integer order is the
 * float order). A strided sample of the chunk gives a threshold t a little below its estimate of
 * the k-th magnitude; every value whose key is >= t is a candidate, collected in index order in
 * parallel tiles (one counting pass, one collecting pass). With at least k candidates the k-th
 * largest of all values is among them (everything else is below t), so a radix select over the
 * candidates finds it exactly and the payload is the one torch.topk gives. With fewer (an unlucky
 * sample) t drops to 0, every value is a candidate: slower, still exact. The sample decides only
 * the speed. */
#define TOPK_SAMPLE 16384

static inline uint32_t topk_key(float v) {
    uint32_t u = f2u(v) & 0x7fffffffu;
    if (u > 0x7f800000u) return 0x7f800000u;   /* NaN: above everything */
    if (u == 0x7f800000u) return 0x7f7fffffu;  /* +-Inf: the largest finite magnitude */
    return u;
}

/* Values of a tile whose key is >= t; *bad |= 1 when the tile holds a non-finite value. */
HOT static i64 topk_count(const float *x, i64 len, uint32_t t, int *bad) {
    i64 c = 0;
    uint32_t nonfinite = 0;
    for (i64 i = 0; i < len; i++) {
        const uint32_t u = f2u(x[i]) & 0x7fffffffu;
        nonfinite |= (uint32_t)(u >= 0x7f800000u);
        const uint32_t key = u > 0x7f800000u ? 0x7f800000u : (u == 0x7f800000u ? 0x7f7fffffu : u);
        c += key >= t;
    }
    *bad |= (int)nonfinite;
    return c;
}

/* The k-th largest (1-based) of keys[0 .. c), 1 <= k <= c: MSD radix select, 11 bits a level. */
static uint32_t topk_kth_largest(const uint32_t *keys, i64 c, i64 k) {
    static const int shift[3] = {21, 10, 0};
    static const uint32_t width[3] = {2048, 2048, 1024};
    uint32_t prefix = 0, mask = 0;
    i64 *hist = (i64 *)malloc(sizeof(i64) * 2048);
    if (!hist) return 0;  /* the caller checks the count of keys >= the result */
    for (int level = 0; level < 3; level++) {
        memset(hist, 0, sizeof(i64) * 2048);
        for (i64 j = 0; j < c; j++)
            if ((keys[j] & mask) == prefix) hist[(keys[j] >> shift[level]) & (width[level] - 1)]++;
        uint32_t d = width[level];
        i64 above = 0;
        while (d > 0) {
            d--;
            if (above + hist[d] >= k) break;
            above += hist[d];
        }
        k -= above;
        prefix |= d << shift[level];
        mask |= (width[level] - 1) << shift[level];
    }
    free(hist);
    return prefix;
}

/* Payload of the canonical top-k of x[0 .. n) into out (8 * k bytes). 0, or -2 (out of memory). */
API int hvdc_topk_encode(const float *x, i64 n, i64 k, uint8_t *out, int nthreads) {
    if (k <= 0 || n <= 0) return 0;
    if (k > n) return -1;
    int32_t *idx_out = (int32_t *)out;  /* the caller passes a 4-byte-aligned buffer */
    float *val_out = (float *)(out + 4 * k);
    /* Threshold from a strided sample (none for small chunks: all values are candidates). */
    uint32_t t = 0;
    if (n >= 4 * TOPK_SAMPLE) {
        const i64 stride = n / TOPK_SAMPLE;
        uint32_t *sample = (uint32_t *)malloc(sizeof(uint32_t) * TOPK_SAMPLE);
        if (!sample) return -2;
        for (i64 j = 0; j < TOPK_SAMPLE; j++) sample[j] = topk_key(x[j * stride + stride / 2]);
        const double m = (double)k * TOPK_SAMPLE / (double)n;  /* expected sample values above */
        const double want = 1.5 * m + 3.0 * sqrt(m) + 4.0;
        if (want < TOPK_SAMPLE) t = topk_kth_largest(sample, TOPK_SAMPLE, (i64)want);
        free(sample);
    }
    const i64 tl = TILE, ntiles = (n + tl - 1) / tl;
    i64 *offset = (i64 *)malloc(sizeof(i64) * (size_t)(ntiles + 1));
    if (!offset) return -2;
    int bad = 0;
    i64 total = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        bad = 0;
        i64 tctr = 0;
#pragma omp parallel num_threads(team(ntiles, nthreads)) reduction(| : bad)
        for (i64 tt; (tt = next_tile(&tctr)) < ntiles;) {
            const i64 a = tt * tl;
            offset[tt + 1] = topk_count(x + a, imin(tl, n - a), t, &bad);
        }
        offset[0] = 0;
        for (i64 tt = 0; tt < ntiles; tt++) offset[tt + 1] += offset[tt];
        total = offset[ntiles];
        if (total >= k) break;
        t = 0;  /* the sample overestimated the k-th magnitude: take every value */
    }
    int32_t *cand = (int32_t *)malloc(sizeof(int32_t) * (size_t)total);
    uint32_t *keys = (uint32_t *)malloc(sizeof(uint32_t) * (size_t)total);
    if (!cand || !keys) { free(cand); free(keys); free(offset); return -2; }
    i64 tctr2 = 0;
#pragma omp parallel num_threads(team(ntiles, nthreads))
    for (i64 tt; (tt = next_tile(&tctr2)) < ntiles;) {
        const i64 a = tt * tl, b = imin(a + tl, n);
        i64 w = offset[tt];
        for (i64 i = a; i < b; i++) {
            const uint32_t key = topk_key(x[i]);
            if (key >= t) { cand[w] = (int32_t)i; keys[w] = key; w++; }
        }
    }
    const uint32_t kth = topk_kth_largest(keys, total, k);
    i64 above = 0;
    for (i64 j = 0; j < total; j++) above += keys[j] > kth;
    i64 ties = k - above, w = 0;
    for (i64 j = 0; j < total && w < k; j++) {
        if (keys[j] > kth || (keys[j] == kth && ties-- > 0)) {
            idx_out[w] = cand[j];
            val_out[w] = x[cand[j]];
            w++;
        }
    }
    free(cand); free(keys); free(offset);
    if (w != k) return -4;  /* cannot happen: the count above says so */
    if (bad) val_out[0] = u2f(QNAN);  /* a non-finite gradient must not pass as a finite one */
    return 0;
}

/* ---------------------------------------------------------------------- signSGD's majority vote */
/* The vote of np payloads of n values (hvd_compress/codecs/sign.py, SignSGD.aggregate): per value,
 * m * the sign of the sum of the workers' signs; ties (np even) go to the sign of the sum of the
 * workers' signed scales, accumulated in fp32 in payload order as the plain path does, then to +1.
 * `m` is the mean scale, computed by the caller with the plain path's fp32 operations. */
static uint64_t g_bytes_of_bits[256];

__attribute__((constructor)) static void init_bytes_of_bits(void) {  /* at load, before any call */
    for (int b = 0; b < 256; b++) {
        uint64_t v = 0;
        for (int j = 0; j < 8; j++) v |= (uint64_t)((b >> j) & 1) << (8 * j);
        g_bytes_of_bits[b] = v;
    }
}

API int hvdc_signsgd_vote(const uint8_t *const *payloads, int np, i64 n, float m, float *out,
                          int nthreads) {
    if (n <= 0) return 0;
    if (np < 1) return -1;
    const i64 nb = (n + 7) / 8;
    float *scales = (float *)malloc(sizeof(float) * (size_t)np);
    if (!scales) return -2;
    for (int p = 0; p < np; p++) scales[p] = get_f32(payloads[p] + nb);
    const float hi = (m != m) ? quiet(m) : m;   /* plain: (+-1) * m */
    const float lo = (m != m) ? quiet(m) : -m;
    const i64 tl = TILE, ntiles = (n + tl - 1) / tl;
    i64 tctr = 0;
#pragma omp parallel num_threads(team(ntiles, nthreads))
    {
        uint64_t cnt64[SUB / 8];   /* one byte per value: the count of 1 bits (np < 256) */
        int cnt[SUB];
        float w[SUB], v[SUB];
        for (i64 tt; (tt = next_tile(&tctr)) < ntiles;) {
            const i64 a = tt * tl, b = imin(a + tl, n);
            for (i64 q = a; q < b; q += SUB) {
                const i64 len = imin(SUB, b - q), nbytes = (len + 7) / 8;
                if (np < 256) {
                    memset(cnt64, 0, sizeof(cnt64));
                    for (int p = 0; p < np; p++) {
                        const uint8_t *bits = payloads[p] + q / 8;
                        for (i64 j = 0; j < nbytes; j++) cnt64[j] += g_bytes_of_bits[bits[j]];
                    }
                    const uint8_t *c8 = (const uint8_t *)cnt64;  /* little-endian: value j at byte j */
                    for (i64 j = 0; j < len; j++) cnt[j] = c8[j];
                } else {
                    memset(cnt, 0, sizeof(cnt));
                    for (int p = 0; p < np; p++) {
                        const uint8_t *bits = payloads[p] + q / 8;
                        for (i64 j = 0; j < len; j++) cnt[j] += (bits[j >> 3] >> (j & 7)) & 1;
                    }
                }
                if (np % 2 == 0) {  /* ties possible: the signed scales' fp32 sum, in payload order */
                    for (i64 j = 0; j < len; j++) w[j] = 0.0f;
                    for (int p = 0; p < np; p++) {
                        select_bits(payloads[p] + q / 8, len, scales[p], -scales[p], v);
                        for (i64 j = 0; j < len; j++) w[j] += v[j];
                    }
                    for (i64 j = 0; j < len; j++) {
                        const int votes = 2 * cnt[j] - np;
                        out[q + j] = (votes > 0 || (votes == 0 && !(w[j] < 0.0f))) ? hi : lo;
                    }
                } else {
                    for (i64 j = 0; j < len; j++) out[q + j] = 2 * cnt[j] > np ? hi : lo;
                }
            }
        }
    }
    free(scales);
    return 0;
}
