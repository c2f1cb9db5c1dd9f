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
