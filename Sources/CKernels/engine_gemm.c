// Matrix products of quantized weights with quantized activations, GGML's CPU arithmetic.
//
// Written in C rather than Swift because the speed comes from byte dot-product instructions
// (AVX-512 VNNI `vpdpbusd`, AVX2 `vpmaddubsw`) that Swift's SIMD types cannot express; the
// forward pass that calls these is Swift.
#include "sllm_engine.h"
#include "engine_internal.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <stdatomic.h>

/// Queries that `attention_group` kernels take at once (heads sharing a KV head).
enum { attention_group = 4 };

// MARK: - Reference (portable C)

static float ref_dot(int wtype, const uint8_t *w, const uint8_t *a, int64_t k) {
    float sum = 0;
    switch (wtype) {
    case SLLM_Q4_0:
        for (int64_t b = 0; b < k / QK; b++) {
            const block_q4_0 *x = (const block_q4_0 *)w + b;
            const block_q8_0 *y = (const block_q8_0 *)a + b;
            int sumi = 0;
            for (int j = 0; j < 16; j++) sumi += ((x->qs[j] & 0xF) - 8) * y->qs[j] + ((x->qs[j] >> 4) - 8) * y->qs[j + 16];
            sum += (float)sumi * (f16_to_f32(x->d) * f16_to_f32(y->d));
        }
        return sum;
    case SLLM_Q4_1:
        for (int64_t b = 0; b < k / QK; b++) {
            const block_q4_1 *x = (const block_q4_1 *)w + b;
            const block_q8_1 *y = (const block_q8_1 *)a + b;
            int sumi = 0;
            for (int j = 0; j < 16; j++) sumi += (x->qs[j] & 0xF) * y->qs[j] + (x->qs[j] >> 4) * y->qs[j + 16];
            sum += f16_to_f32(x->d) * f16_to_f32(y->d) * (float)sumi + f16_to_f32(x->m) * f16_to_f32(y->s);
        }
        return sum;
    case SLLM_Q5_0:
        // GGML's `ggml_vec_dot_q5_0_q8_0`: values −16…15, one scale product per block.
        for (int64_t b = 0; b < k / QK; b++) {
            const block_q5_0 *x = (const block_q5_0 *)w + b;
            const block_q8_0 *y = (const block_q8_0 *)a + b;
            uint8_t values[QK];
            q5_values(x->qh, x->qs, values);
            int sumi = 0;
            for (int j = 0; j < QK; j++) sumi += ((int)values[j] - 16) * y->qs[j];
            sum += (float)sumi * (f16_to_f32(x->d) * f16_to_f32(y->d));
        }
        return sum;
    case SLLM_Q5_1:
        // `ggml_vec_dot_q5_1_q8_1`: values 0…31; the min meets Q8_1's s = d·Σq.
        for (int64_t b = 0; b < k / QK; b++) {
            const block_q5_1 *x = (const block_q5_1 *)w + b;
            const block_q8_1 *y = (const block_q8_1 *)a + b;
            uint8_t values[QK];
            q5_values(x->qh, x->qs, values);
            int sumi = 0;
            for (int j = 0; j < QK; j++) sumi += values[j] * y->qs[j];
            sum += f16_to_f32(x->d) * f16_to_f32(y->d) * (float)sumi + f16_to_f32(x->m) * f16_to_f32(y->s);
        }
        return sum;
    case SLLM_Q8_0:
        for (int64_t b = 0; b < k / QK; b++) {
            const block_q8_0 *x = (const block_q8_0 *)w + b;
            const block_q8_0 *y = (const block_q8_0 *)a + b;
            int sumi = 0;
            for (int j = 0; j < QK; j++) sumi += x->qs[j] * y->qs[j];
            sum += (float)sumi * (f16_to_f32(x->d) * f16_to_f32(y->d));
        }
        return sum;
    case SLLM_IQ4_NL:
        // `ggml_vec_dot_iq4_nl_q8_0`'s definition: grid values times Q8_0 quants, one scale product per block.
        for (int64_t b = 0; b < k / QK; b++) {
            const block_iq4_nl *x = (const block_iq4_nl *)w + b;
            const block_q8_0 *y = (const block_q8_0 *)a + b;
            int sumi = 0;
            for (int j = 0; j < 16; j++) sumi += iq4_grid[x->qs[j] & 0xF] * y->qs[j] + iq4_grid[x->qs[j] >> 4] * y->qs[j + 16];
            sum += (f16_to_f32(y->d) * f16_to_f32(x->d)) * (float)sumi;
        }
        return sum;
    case SLLM_IQ4_XS:
        for (int64_t b = 0; b < k / QKK; b++) {
            const block_iq4_xs *x = (const block_iq4_xs *)w + b;
            const block_q8_K *y = (const block_q8_K *)a + b;
            int sumi = 0;
            for (int i = 0; i < 8; i++) {
                int isum = 0;
                for (int j = 0; j < 16; j++)
                    isum += iq4_grid[x->qs[16 * i + j] & 0xF] * y->qs[32 * i + j] + iq4_grid[x->qs[16 * i + j] >> 4] * y->qs[32 * i + j + 16];
                sumi += iq4_xs_scale(x, i) * isum;
            }
            sum += f16_to_f32(x->d) * y->d * (float)sumi;
        }
        return sum;
    case SLLM_Q2_K:
        // `ggml_vec_dot_q2_K_q8_K`: d·Σ scale·Σ q·q8 less dmin·Σ min·(16-sums of Q8_K).
        for (int64_t b = 0; b < k / QKK; b++) {
            const block_q2_K *x = (const block_q2_K *)w + b;
            const block_q8_K *y = (const block_q8_K *)a + b;
            uint8_t values[QKK];
            q2_K_values(x, values);
            int sumi = 0, summs = 0;
            for (int g = 0; g < 16; g++) {
                int isum = 0;
                for (int l = 0; l < 16; l++) isum += values[16 * g + l] * y->qs[16 * g + l];
                sumi += (x->scales[g] & 0xF) * isum;
                summs += (x->scales[g] >> 4) * y->bsums[g];
            }
            sum += y->d * f16_to_f32(x->d) * (float)sumi - y->d * f16_to_f32(x->dmin) * (float)summs;
        }
        return sum;
    case SLLM_Q3_K:
        for (int64_t b = 0; b < k / QKK; b++) {
            const block_q3_K *x = (const block_q3_K *)w + b;
            const block_q8_K *y = (const block_q8_K *)a + b;
            int8_t values[QKK], scales[16];
            q3_K_values(x, values);
            q3_K_scales(x->scales, scales);
            int sumi = 0;
            for (int g = 0; g < 16; g++) {
                int isum = 0;
                for (int l = 0; l < 16; l++) isum += values[16 * g + l] * y->qs[16 * g + l];
                sumi += scales[g] * isum;
            }
            sum += y->d * f16_to_f32(x->d) * (float)sumi;
        }
        return sum;
    case SLLM_Q4_K:
        for (int64_t b = 0; b < k / QKK; b++) {
            const block_q4_K *x = (const block_q4_K *)w + b;
            const block_q8_K *y = (const block_q8_K *)a + b;
            int sumi = 0, summs = 0;
            for (int j = 0; j < 8; j++) {
                uint8_t sc, m;
                sllm_q4_K_scale_min(j, x->scales, &sc, &m);
                const uint8_t *q = x->qs + 32 * (j / 2);
                int isum = 0;
                for (int l = 0; l < 32; l++) isum += ((j & 1) ? (q[l] >> 4) : (q[l] & 0xF)) * y->qs[32 * j + l];
                sumi += sc * isum;
                summs += m * (y->bsums[2 * j] + y->bsums[2 * j + 1]);
            }
            sum += f16_to_f32(x->d) * y->d * (float)sumi - f16_to_f32(x->dmin) * y->d * (float)summs;
        }
        return sum;
    case SLLM_Q5_K:
        for (int64_t b = 0; b < k / QKK; b++) {
            const block_q5_K *x = (const block_q5_K *)w + b;
            const block_q8_K *y = (const block_q8_K *)a + b;
            uint8_t values[QKK];
            q5_K_values(x, values);
            int sumi = 0, summs = 0;
            for (int j = 0; j < 8; j++) {
                uint8_t sc, m;
                sllm_q4_K_scale_min(j, x->scales, &sc, &m);
                int isum = 0;
                for (int l = 0; l < 32; l++) isum += values[32 * j + l] * y->qs[32 * j + l];
                sumi += sc * isum;
                summs += m * (y->bsums[2 * j] + y->bsums[2 * j + 1]);
            }
            sum += f16_to_f32(x->d) * y->d * (float)sumi - f16_to_f32(x->dmin) * y->d * (float)summs;
        }
        return sum;
    case SLLM_Q6_K:
        for (int64_t b = 0; b < k / QKK; b++) {
            const block_q6_K *x = (const block_q6_K *)w + b;
            const block_q8_K *y = (const block_q8_K *)a + b;
            int8_t values[QKK];
            sllm_q6_K_values(x, values);
            int sumi = 0;
            for (int g = 0; g < 16; g++) {
                int isum = 0;
                for (int l = 0; l < 16; l++) isum += values[16 * g + l] * y->qs[16 * g + l];
                sumi += x->scales[g] * isum;
            }
            sum += f16_to_f32(x->d) * y->d * (float)sumi;
        }
        return sum;
    case SLLM_F16:
        for (int64_t i = 0; i < k; i++) sum += f16_to_f32(((const uint16_t *)w)[i]) * f16_to_f32(((const uint16_t *)a)[i]);
        return sum;
    case SLLM_BF16:
        for (int64_t i = 0; i < k; i++) {
            const uint32_t p = (uint32_t)((const uint16_t *)w)[i] << 16, q = (uint32_t)((const uint16_t *)a)[i] << 16;
            float fp, fq;
            memcpy(&fp, &p, 4);
            memcpy(&fq, &q, 4);
            sum += fp * fq;
        }
        return sum;
    case SLLM_F32:
        for (int64_t i = 0; i < k; i++) sum += ((const float *)w)[i] * ((const float *)a)[i];
        return sum;
    default: return NAN;
    }
}

void sllm_gemm_reference(int wtype, const void *w, size_t wstride, int64_t r0, int64_t r1,
                         const void *a, size_t astride, int64_t tokens, int64_t k, float *out, int64_t ldo) {
    for (int64_t r = r0; r < r1; r++)
        for (int64_t t = 0; t < tokens; t++)
            out[t * ldo + r] = ref_dot(wtype, (const uint8_t *)w + (size_t)r * wstride, (const uint8_t *)a + (size_t)t * astride, k);
}

// MARK: - AVX2 + FMA + F16C

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#define SUFFIX(name) name##_avx2
#define DOT_U8I8(acc, u, s) acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
// Sixteen vector registers: four tokens per tile.
#define SIGNED_TILE 4
#define SLLM_TILE_CASES SLLM_TILE_CASE(4) SLLM_TILE_CASE(3) SLLM_TILE_CASE(2) SLLM_TILE_CASE(1)
#include "engine_gemm_body.h"
#undef SLLM_TILE_CASES
#undef SIGNED_TILE
#undef DOT_U8I8
#undef SUFFIX
#pragma clang attribute pop

// MARK: - AVX-512 VNNI (256-bit lanes: the blocks are 32 bytes)

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512dq,avx512bw,avx512vl,avx512vnni"))), apply_to = function)
#define SUFFIX(name) name##_vnni
#define DOT_U8I8(acc, u, s) acc = _mm256_dpbusd_epi32(acc, u, s)
// Thirty-two vector registers (AVX-512VL): eight tokens per tile.
#define SIGNED_TILE 8
#define SLLM_TILE_CASES                                                                                    \
    SLLM_TILE_CASE(8) SLLM_TILE_CASE(7) SLLM_TILE_CASE(6) SLLM_TILE_CASE(5) SLLM_TILE_CASE(4) SLLM_TILE_CASE(3) \
    SLLM_TILE_CASE(2) SLLM_TILE_CASE(1)
#include "engine_gemm_body.h"
#undef SLLM_TILE_CASES
#undef SIGNED_TILE
#undef DOT_U8I8
#undef SUFFIX

// MARK: Prompts of 32-value blocks, two tokens per 512-bit register
//
// GGML's AVX2 arithmetic for a block of 32 keeps eight int32 lanes (four byte products each),
// converts them to floats and adds them, times the block's scale product, into eight fused
// accumulators that are summed at the end. The per-token work (a dot product, a conversion, a
// multiply-add) is the same width as a 256-bit register, so here two tokens share one 512-bit
// register: their activations are interleaved four bytes at a time (lane 2g is token A's group
// g, lane 2g+1 token B's) and each weight block is spread to match. Every lane does exactly the
// arithmetic it did alone, so the results are the single-token kernels' bit for bit.
//
// Signed weights (Q4_0, Q5_0, Q8_0, IQ4_NL) meet activations shifted by 128 to make them the
// unsigned side of `vpdpbusd`; the accumulator starts at −128·Σq of the weights' four bytes.
// Q4_1/Q5_1 weights are unsigned already and meet the activations as they are.

enum { pair_tokens = 16, pair_count = pair_tokens / 2 };

/// A weight block's 32 bytes spread so that dword g lands in dwords 2g and 2g+1.
static inline __m512i spread_pairs(__m256i q) {
    const __m512i index = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    return _mm512_permutexvar_epi32(index, _mm512_castsi256_si512(q));
}

/// Token A's eight lanes (the even ones) in the low half, in order; token B's in the high half.
static inline __m512 split_pairs(__m512 v) {
    const __m512i index = _mm512_set_epi32(15, 13, 11, 9, 7, 5, 3, 1, 14, 12, 10, 8, 6, 4, 2, 0);
    return _mm512_permutexvar_ps(index, v);
}

typedef enum { pairs_signed, pairs_with_min, pairs_iq4_nl } pairs_kind;

/// Rows r0..<r1 against up to `pair_tokens` tokens whose activations have been interleaved into
/// `y` (`nb` blocks of `np` pairs, 64 bytes each), their scales into `dy` (two floats per block
/// and pair) and, for Q4_1/Q5_1, Q8_1's `s` into `sy` (sixteen floats per block, one per token).
/// `kind` and `np` are constants at every call, so the accumulators stay in registers.
static inline __attribute__((always_inline)) void pairs_rows(pairs_kind kind, int np, const uint8_t *w, size_t ws, size_t bytes, int bits, int64_t r0, int64_t r1, const uint8_t *y, const float *dy, const float *sy, int tn, int64_t nb, float *out, int64_t ldo) {
    const __m512i high_bytes = _mm512_set1_epi8((char)0x80);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *x = w + (size_t)r * ws;
        __m512 acc[pair_count], odd[pair_count];
        __m512 summ = _mm512_setzero_ps();
        for (int p = 0; p < np; p++) acc[p] = odd[p] = _mm512_setzero_ps();
        // IQ4_NL alternates two sets of accumulators and leaves an odd last block to scalar code.
        const int64_t vector_blocks = kind == pairs_iq4_nl ? nb & ~(int64_t)1 : nb;
        for (int64_t b = 0; b < vector_blocks; b++) {
            const uint8_t *block = x + (size_t)b * bytes;
            __m512i q, start;
            float dx;
            if (kind == pairs_with_min) {
                q = spread_pairs(unsigned_quants_vnni(block, bits == 5));
                start = _mm512_setzero_si512();
                uint16_t dm[2];
                memcpy(dm, block, 4);
                dx = _cvtsh_ss(dm[0]);
                summ = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(dm[1])), _mm512_loadu_ps(sy + b * pair_tokens), summ);
            } else {
                q = spread_pairs(kind == pairs_iq4_nl ? iq4_values_vnni(block + 2) : signed_quants_vnni(block, bits));
                start = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), high_bytes, q));
                dx = block_scale_vnni(block);
            }
            const __m512 dxv = _mm512_set1_ps(dx);
            const uint8_t *yb = y + (size_t)b * np * 64;
            const float *db = dy + b * np * 2;
#define SLLM_PAIR_STEP(into)                                                                                            \
    for (int p = 0; p < np; p++) {                                                                                      \
        const __m512i ys = _mm512_loadu_si512(yb + 64 * p);                                                             \
        const __m512i s = kind == pairs_with_min ? _mm512_dpbusd_epi32(start, q, ys) : _mm512_dpbusd_epi32(start, ys, q); \
        const __m512 pair = _mm512_broadcast_f32x2(_mm_castpd_ps(_mm_load_sd((const double *)(db + 2 * p))));          \
        into[p] = _mm512_fmadd_ps(_mm512_mul_ps(dxv, pair), _mm512_cvtepi32_ps(s), into[p]);                            \
    }
            if (kind == pairs_iq4_nl && (b & 1)) {
                SLLM_PAIR_STEP(odd)
            } else {
                SLLM_PAIR_STEP(acc)
            }
#undef SLLM_PAIR_STEP
        }
        float summs[pair_tokens];
        _mm512_storeu_ps(summs, summ);
        for (int p = 0; p < np; p++) {
            const __m512 split = split_pairs(kind == pairs_iq4_nl ? _mm512_add_ps(acc[p], odd[p]) : acc[p]);
            const float sums[2] = {hsum_vnni(_mm512_castps512_ps256(split)), hsum_vnni(_mm512_extractf32x8_ps(split, 1))};
            for (int h = 0; h < 2 && 2 * p + h < tn; h++)
                out[(2 * p + h) * ldo + r] = kind == pairs_with_min ? sums[h] + summs[2 * p + h] : sums[h];
        }
    }
}

/// `sllm_gemm` of 32-value-block weights for prompts on the VNNI path; returns 0 for other types
/// (or when its buffer cannot be had), having computed nothing.
static int gemm_pairs_vnni(int wtype, const uint8_t *w, size_t ws, int64_t r0, int64_t r1, const uint8_t *a, size_t as, int64_t nt, int64_t k, float *out, int64_t ldo) {
    pairs_kind kind;
    size_t bytes;
    int bits = 0;
    switch (wtype) {
    case SLLM_Q4_0: kind = pairs_signed, bytes = sizeof(block_q4_0), bits = 4; break;
    case SLLM_Q5_0: kind = pairs_signed, bytes = sizeof(block_q5_0), bits = 5; break;
    case SLLM_Q8_0: kind = pairs_signed, bytes = sizeof(block_q8_0), bits = 8; break;
    case SLLM_IQ4_NL: kind = pairs_iq4_nl, bytes = sizeof(block_iq4_nl); break;
    case SLLM_Q4_1: kind = pairs_with_min, bytes = sizeof(block_q4_1), bits = 4; break;
    case SLLM_Q5_1: kind = pairs_with_min, bytes = sizeof(block_q5_1), bits = 5; break;
    default: return 0;
    }
    const int64_t nb = k / QK;
    const size_t ab = kind == pairs_with_min ? sizeof(block_q8_1) : sizeof(block_q8_0);
    uint8_t *y = aligned_alloc(64, (size_t)nb * (64 * pair_count + sizeof(float) * (2 * pair_count + pair_tokens)));
    if (!y) return 0;
    float *dy = (float *)(y + (size_t)nb * 64 * pair_count), *sy = dy + nb * 2 * pair_count;
    const char flip = kind == pairs_with_min ? 0 : (char)0x80;
    for (int64_t t0 = 0; t0 < nt; t0 += pair_tokens) {
        const int tn = (int)(nt - t0 < pair_tokens ? nt - t0 : pair_tokens), np = (tn + 1) / 2;
        // Interleave the chunk's activations; a missing second token of the last pair is zeros.
        for (int64_t b = 0; b < nb; b++)
            for (int p = 0; p < np; p++) {
                uint8_t *yp = y + (size_t)(b * np + p) * 64;
                for (int h = 0; h < 2; h++) {
                    const int t = 2 * p + h;
                    int8_t qs[32] = {0};
                    uint16_t scales[2] = {0, 0};
                    if (t < tn) {
                        const uint8_t *block = a + (size_t)(t0 + t) * as + (size_t)b * ab;
                        memcpy(scales, block, kind == pairs_with_min ? 4 : 2);
                        memcpy(qs, block + ab - 32, 32);
                    }
                    for (int g = 0; g < 8; g++)
                        for (int i = 0; i < 4; i++) yp[8 * g + 4 * h + i] = (uint8_t)(qs[4 * g + i] ^ flip);
                    dy[(b * np + p) * 2 + h] = _cvtsh_ss(scales[0]);
                    sy[b * pair_tokens + t] = _cvtsh_ss(scales[1]);
                }
            }
        switch (kind * pair_count + np - 1) {
#define SLLM_PAIRS_CASE(k, n) \
    case k * pair_count + n - 1: pairs_rows(k, n, w, ws, bytes, bits, r0, r1, y, dy, sy, tn, nb, out + t0 * ldo, ldo); break;
#define SLLM_PAIRS_KIND(k) \
    SLLM_PAIRS_CASE(k, 1) SLLM_PAIRS_CASE(k, 2) SLLM_PAIRS_CASE(k, 3) SLLM_PAIRS_CASE(k, 4) \
    SLLM_PAIRS_CASE(k, 5) SLLM_PAIRS_CASE(k, 6) SLLM_PAIRS_CASE(k, 7) SLLM_PAIRS_CASE(k, 8)
            SLLM_PAIRS_KIND(pairs_signed) SLLM_PAIRS_KIND(pairs_with_min) SLLM_PAIRS_KIND(pairs_iq4_nl)
#undef SLLM_PAIRS_KIND
#undef SLLM_PAIRS_CASE
        default: break;
        }
        if (kind == pairs_iq4_nl && (nb & 1))
            // The odd last block, in scalar as GGML adds it.
            for (int64_t r = r0; r < r1; r++)
                for (int t = 0; t < tn; t++) {
                    const block_iq4_nl *x = (const block_iq4_nl *)(w + (size_t)r * ws) + nb - 1;
                    const block_q8_0 *yb = (const block_q8_0 *)(a + (size_t)(t0 + t) * as) + nb - 1;
                    int sumi = 0;
                    for (int j = 0; j < 16; j++) sumi += yb->qs[j] * iq4_grid[x->qs[j] & 0xF] + yb->qs[j + 16] * iq4_grid[x->qs[j] >> 4];
                    out[(t0 + t) * ldo + r] += _cvtsh_ss(yb->d) * _cvtsh_ss(x->d) * (float)sumi;
                }
    }
    free(y);
    return 1;
}

// GGML's AVX-512 `ggml_v_expf` and `ggml_v_silu`, so SwiGLU gives llama.cpp's bits 16 at a time.
static inline __m512 v_expf_avx512(__m512 x) {
    const __m512 r = _mm512_set1_ps(0x1.8p23f);
    const __m512 z = _mm512_fmadd_ps(x, _mm512_set1_ps(0x1.715476p+0f), r);
    const __m512 n = _mm512_sub_ps(z, r);
    const __m512 b = _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.7f7d1cp-20f), _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.62e4p-1f), x));
    const __mmask16 d = _mm512_cmp_ps_mask(_mm512_abs_ps(n), _mm512_set1_ps(192), _CMP_GT_OQ);
    const __m512 u = _mm512_mul_ps(b, b);
    const __m512 j = _mm512_fmadd_ps(
        _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_set1_ps(0x1.0e4020p-7f), b, _mm512_set1_ps(0x1.573e2ep-5f)), u,
                        _mm512_fmadd_ps(_mm512_set1_ps(0x1.555e66p-3f), b, _mm512_set1_ps(0x1.fffdb6p-2f))),
        u, _mm512_fmadd_ps(_mm512_set1_ps(0x1.ffffecp-1f), b, _mm512_set1_ps(1.0F)));
    const __m512 res = _mm512_scalef_ps(j, n);
    if (_mm512_kortestz(d, d)) return res;
    const __m512 zero = _mm512_setzero_ps();
    const __m512 alt = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(n, zero, _CMP_LE_OQ), _mm512_set1_ps(INFINITY), zero);
    return _mm512_mask_blend_ps(d, res, alt);
}

static int64_t swiglu_avx512(const float *gate, const float *up, float *out, int64_t count) {
    int64_t i = 0;
    for (; i + 16 <= count; i += 16) {
        const __m512 x = _mm512_loadu_ps(gate + i);
        const __m512 silu = _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1), v_expf_avx512(_mm512_sub_ps(_mm512_setzero_ps(), x))));
        _mm512_storeu_ps(out + i, _mm512_mul_ps(silu, _mm512_loadu_ps(up + i)));
    }
    return i;
}

static float sum_exp_avx512(const float *x, int64_t count, float max) {
    __m512 acc = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= count; i += 16) acc = _mm512_add_ps(acc, v_expf_avx512(_mm512_sub_ps(_mm512_loadu_ps(x + i), _mm512_set1_ps(max))));
    float sum = _mm512_reduce_add_ps(acc);
    for (; i < count; i++) sum += expf(x[i] - max);
    return sum;
}
#pragma clang attribute pop

int64_t sllm_swiglu_vector(const float *gate, const float *up, float *out, int64_t count) {
    return sllm_kernel_level() >= 2 ? swiglu_avx512(gate, up, out, count) : 0;
}

float sllm_sum_exp(const float *x, int64_t count, float max) {
    if (sllm_kernel_level() >= 2) return sum_exp_avx512(x, count, max);
    float sum = 0;
    for (int64_t i = 0; i < count; i++) sum += expf(x[i] - max);
    return sum;
}

// MARK: - Dispatch

static atomic_int kernel_level = -1;

static int detect_level(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) return 1;
    return 0;
}

int sllm_kernel_level(void) {
    int level = atomic_load_explicit(&kernel_level, memory_order_relaxed);
    if (level < 0) {
        level = detect_level();
        atomic_store_explicit(&kernel_level, level, memory_order_relaxed);
    }
    return level;
}

void sllm_gemm(int wtype, const void *w, size_t wstride, int64_t r0, int64_t r1,
               const void *a, size_t astride, int64_t tokens, int64_t k, float *out, int64_t ldo) {
    sllm_gemm_at_level(sllm_kernel_level(), wtype, w, wstride, r0, r1, a, astride, tokens, k, out, ldo);
}

void sllm_gemm_at_level(int level, int wtype, const void *w, size_t wstride, int64_t r0, int64_t r1,
                        const void *a, size_t astride, int64_t tokens, int64_t k, float *out, int64_t ldo) {
    if (level > sllm_kernel_level()) level = sllm_kernel_level();
    switch (level) {
    case 2:
        if (tokens > 1 && gemm_pairs_vnni(wtype, w, wstride, r0, r1, a, astride, tokens, k, out, ldo)) return;
        if (gemm_vnni(wtype, w, wstride, r0, r1, a, astride, tokens, k, out, ldo)) return;
        break;
    case 1:
        if (gemm_avx2(wtype, w, wstride, r0, r1, a, astride, tokens, k, out, ldo)) return;
        break;
    default: break;
    }
    sllm_gemm_reference(wtype, w, wstride, r0, r1, a, astride, tokens, k, out, ldo);
}

// MARK: - Attention

void sllm_attention_f16(const float *q, const uint16_t *k, int64_t kstride, const uint16_t *v,
                        int64_t vstride, int64_t n, int64_t dim, float scale, float *out) {
    if (dim > 512) return;
    if (sllm_kernel_level() >= 2) {
        attention_vnni(q, k, kstride, v, vstride, n, dim, scale, out);
        return;
    }
    if (sllm_kernel_level() == 1) {
        attention_avx2(q, k, kstride, v, vstride, n, dim, scale, out);
        return;
    }
    uint16_t qh[512], acc[512];
    sllm_f32_to_f16(q, qh, dim);
    memset(acc, 0, (size_t)dim * 2);
    float sum = 0, max = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        const uint16_t *kr = k + i * kstride, *vr = v + i * vstride;
        const float s = ggml_dot_f16(kr, qh, dim) * scale;
        float ms = 1.0f, vs = 1.0f;
        if (s > max) {
            const float old = max;
            max = s;
            ms = expf(old - max);
            for (int64_t d = 0; d < dim; d++) acc[d] = f32_to_f16(f16_to_f32(acc[d]) * ms);
        } else {
            vs = expf(s - max);
        }
        for (int64_t d = 0; d < dim; d++) acc[d] = f32_to_f16(fmaf(f16_to_f32(vr[d]), vs, f16_to_f32(acc[d])));
        sum = fmaf(sum, ms, vs);
    }
    const float inverse = sum == 0.0f ? 0.0f : 1.0f / sum;
    for (int64_t d = 0; d < dim; d++) out[d] = f16_to_f32(acc[d]) * inverse;
}

void sllm_attention_f16_group(const float *q, int64_t qstride, int64_t count, const uint16_t *k, int64_t kstride,
                              const uint16_t *v, int64_t vstride, int64_t n, int64_t dim, float scale, float *out,
                              int64_t ostride) {
    if (dim > 512) return;
    for (int64_t first = 0; first < count; first += attention_group) {
        const int nq = (int)(count - first < attention_group ? count - first : attention_group);
        const float *qg = q + first * qstride;
        float *og = out + first * ostride;
        // One query alone (a decoding step's job) takes the single-query kernel: the same
        // arithmetic, without the group's bookkeeping.
        if (nq == 1) {
            sllm_attention_f16(qg, k, kstride, v, vstride, n, dim, scale, og);
            continue;
        }
        switch (sllm_kernel_level()) {
        case 2: attention_group_vnni(qg, qstride, nq, k, kstride, v, vstride, n, dim, scale, og, ostride); break;
        case 1: attention_group_avx2(qg, qstride, nq, k, kstride, v, vstride, n, dim, scale, og, ostride); break;
        default:
            for (int j = 0; j < nq; j++)
                sllm_attention_f16(qg + j * qstride, k, kstride, v, vstride, n, dim, scale, og + j * ostride);
        }
    }
}
