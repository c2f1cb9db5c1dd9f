// Row conversions between floats and GGML's block formats, bit-exact with GGML's CPU backend
// (x86 build): the same scales, the same rounding (round half to even), the same f16 rounding.
#include "sllm_engine.h"
#include "engine_internal.h"

#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

int sllm_activation_type(int weightType) {
    switch (weightType) {
    case SLLM_F32: return SLLM_F32;
    case SLLM_F16: return SLLM_F16;
    case SLLM_BF16: return SLLM_BF16;
    case SLLM_Q4_0: return SLLM_Q8_0;
    case SLLM_Q8_0: return SLLM_Q8_0;
    case SLLM_Q4_1: return SLLM_Q8_1;
    case SLLM_Q5_0: return SLLM_Q8_0;
    case SLLM_Q5_1: return SLLM_Q8_1;
    case SLLM_IQ4_NL: return SLLM_Q8_0;
    case SLLM_Q2_K: return SLLM_Q8_K;
    case SLLM_Q3_K: return SLLM_Q8_K;
    case SLLM_Q4_K: return SLLM_Q8_K;
    case SLLM_Q5_K: return SLLM_Q8_K;
    case SLLM_IQ4_XS: return SLLM_Q8_K;
    case SLLM_Q6_K: return SLLM_Q8_K;
    default: return -1;
    }
}

size_t sllm_row_bytes(int type, int64_t count) {
    switch (type) {
    case SLLM_F32: return (size_t)count * 4;
    case SLLM_F16: case SLLM_BF16: return (size_t)count * 2;
    case SLLM_Q4_0: return (size_t)(count / QK) * sizeof(block_q4_0);
    case SLLM_Q4_1: return (size_t)(count / QK) * sizeof(block_q4_1);
    case SLLM_Q5_0: return (size_t)(count / QK) * sizeof(block_q5_0);
    case SLLM_Q5_1: return (size_t)(count / QK) * sizeof(block_q5_1);
    case SLLM_Q8_0: return (size_t)(count / QK) * sizeof(block_q8_0);
    case SLLM_Q8_1: return (size_t)(count / QK) * sizeof(block_q8_1);
    case SLLM_IQ4_NL: return (size_t)(count / QK) * sizeof(block_iq4_nl);
    case SLLM_Q2_K: return (size_t)(count / QKK) * sizeof(block_q2_K);
    case SLLM_Q3_K: return (size_t)(count / QKK) * sizeof(block_q3_K);
    case SLLM_IQ4_XS: return (size_t)(count / QKK) * sizeof(block_iq4_xs);
    case SLLM_Q4_K: return (size_t)(count / QKK) * sizeof(block_q4_K);
    case SLLM_Q5_K: return (size_t)(count / QKK) * sizeof(block_q5_K);
    case SLLM_Q6_K: return (size_t)(count / QKK) * sizeof(block_q6_K);
    case SLLM_Q8_K: return (size_t)(count / QKK) * sizeof(block_q8_K);
    default: return 0;
    }
}

__attribute__((target("f16c,avx"))) static void f32_to_f16_f16c(const float *x, uint16_t *y, int64_t count) {
    int64_t i = 0;
    for (; i + 8 <= count; i += 8) _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < count; i++) y[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}

void sllm_f32_to_f16(const float *x, uint16_t *y, int64_t count) {
    if (sllm_kernel_level() >= 1) {
        f32_to_f16_f16c(x, y, count);
        return;
    }
    for (int64_t i = 0; i < count; i++) y[i] = f32_to_f16(x[i]);
}

void sllm_f16_to_f32(const uint16_t *x, float *y, int64_t count) {
    for (int64_t i = 0; i < count; i++) y[i] = f16_to_f32(x[i]);
}

static uint16_t f32_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 64); // quiet NaN
    return (uint16_t)((u + (0x7fff + ((u >> 16) & 1))) >> 16);            // round to nearest even
}

static float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

// GGML's nearest_int: round half to even through the float mantissa.
static inline int nearest_int(float value) {
    float shifted = value + 12582912.f;
    int32_t bits;
    memcpy(&bits, &shifted, 4);
    return (bits & 0x007fffff) - 0x00400000;
}

/// One block of 32 as GGML's x86 `quantize_row_q8_0/1` do: d = max|x|/127, q = x·(127/max|x|)
/// rounded half to even. Returns d; `sum` gets Σq.
static float quantize_block(const float *x, int8_t *qs, int *sum) {
    float amax = 0;
    for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127.f;
    const float id = amax != 0.0f ? 127.f / amax : 0.0f;
    int total = 0;
    for (int j = 0; j < QK; j++) {
        const int q = (int)rintf(x[j] * id);
        qs[j] = (int8_t)q;
        total += q;
    }
    *sum = total;
    return d;
}

static void quantize_q8_0(const float *x, block_q8_0 *y, int64_t count) {
    for (int64_t b = 0; b < count / QK; b++, x += QK) {
        int sum;
        y[b].d = f32_to_f16(quantize_block(x, y[b].qs, &sum));
    }
}

static void quantize_q8_1(const float *x, block_q8_1 *y, int64_t count) {
    for (int64_t b = 0; b < count / QK; b++, x += QK) {
        int sum;
        const float d = quantize_block(x, y[b].qs, &sum);
        y[b].d = f32_to_f16(d);
        y[b].s = f32_to_f16(d * (float)sum);
    }
}

static void quantize_q8_K(const float *x, block_q8_K *y, int64_t count) {
    for (int64_t b = 0; b < count / QKK; b++, x += QKK) {
        float max = 0, amax = 0;
        for (int j = 0; j < QKK; j++) {
            const float ax = fabsf(x[j]);
            if (ax > amax) { amax = ax; max = x[j]; }
        }
        if (amax == 0) {
            memset(&y[b], 0, sizeof(block_q8_K));
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < QKK; j++) {
            const int v = nearest_int(iscale * x[j]);
            y[b].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < QKK / 16; j++) {
            int sum = 0;
            for (int i = 0; i < 16; i++) sum += y[b].qs[j * 16 + i];
            y[b].bsums[j] = (int16_t)sum;
        }
        y[b].d = 1 / iscale;
    }
}

void sllm_quantize_row(int type, const float *x, void *y, int64_t count) {
    switch (type) {
    case SLLM_F32: memcpy(y, x, (size_t)count * 4); break;
    case SLLM_F16: sllm_f32_to_f16(x, y, count); break;
    case SLLM_BF16: {
        uint16_t *out = y;
        for (int64_t i = 0; i < count; i++) out[i] = f32_to_bf16(x[i]);
        break;
    }
    case SLLM_Q8_0: quantize_q8_0(x, y, count); break;
    case SLLM_Q8_1: quantize_q8_1(x, y, count); break;
    case SLLM_Q8_K: quantize_q8_K(x, y, count); break;
    default: break;
    }
}

void sllm_dequantize_row(int type, const void *source, float *y, int64_t count) {
    switch (type) {
    case SLLM_F32: memcpy(y, source, (size_t)count * 4); break;
    case SLLM_F16: sllm_f16_to_f32(source, y, count); break;
    case SLLM_BF16:
        for (int64_t i = 0; i < count; i++) y[i] = bf16_to_f32(((const uint16_t *)source)[i]);
        break;
    case SLLM_Q4_0:
        for (int64_t b = 0; b < count / QK; b++, y += QK) {
            const block_q4_0 *x = (const block_q4_0 *)source + b;
            const float d = f16_to_f32(x->d);
            for (int j = 0; j < 16; j++) {
                y[j] = d * (float)((x->qs[j] & 0xF) - 8);
                y[j + 16] = d * (float)((x->qs[j] >> 4) - 8);
            }
        }
        break;
    case SLLM_Q4_1:
        for (int64_t b = 0; b < count / QK; b++, y += QK) {
            const block_q4_1 *x = (const block_q4_1 *)source + b;
            const float d = f16_to_f32(x->d), m = f16_to_f32(x->m);
            for (int j = 0; j < 16; j++) {
                y[j] = d * (float)(x->qs[j] & 0xF) + m;
                y[j + 16] = d * (float)(x->qs[j] >> 4) + m;
            }
        }
        break;
    case SLLM_Q5_0:
        for (int64_t b = 0; b < count / QK; b++, y += QK) {
            const block_q5_0 *x = (const block_q5_0 *)source + b;
            const float d = f16_to_f32(x->d);
            uint8_t values[QK];
            q5_values(x->qh, x->qs, values);
            for (int j = 0; j < QK; j++) y[j] = d * (float)((int)values[j] - 16);
        }
        break;
    case SLLM_Q5_1:
        for (int64_t b = 0; b < count / QK; b++, y += QK) {
            const block_q5_1 *x = (const block_q5_1 *)source + b;
            const float d = f16_to_f32(x->d), m = f16_to_f32(x->m);
            uint8_t values[QK];
            q5_values(x->qh, x->qs, values);
            for (int j = 0; j < QK; j++) y[j] = d * (float)values[j] + m;
        }
        break;
    case SLLM_Q8_0:
        for (int64_t b = 0; b < count / QK; b++, y += QK) {
            const block_q8_0 *x = (const block_q8_0 *)source + b;
            const float d = f16_to_f32(x->d);
            for (int j = 0; j < QK; j++) y[j] = d * (float)x->qs[j];
        }
        break;
    case SLLM_Q8_1:
        for (int64_t b = 0; b < count / QK; b++, y += QK) {
            const block_q8_1 *x = (const block_q8_1 *)source + b;
            const float d = f16_to_f32(x->d);
            for (int j = 0; j < QK; j++) y[j] = d * (float)x->qs[j];
        }
        break;
    case SLLM_Q8_K:
        for (int64_t b = 0; b < count / QKK; b++, y += QKK) {
            const block_q8_K *x = (const block_q8_K *)source + b;
            for (int j = 0; j < QKK; j++) y[j] = x->d * (float)x->qs[j];
        }
        break;
    case SLLM_IQ4_NL:
        for (int64_t b = 0; b < count / QK; b++, y += QK) {
            const block_iq4_nl *x = (const block_iq4_nl *)source + b;
            const float d = f16_to_f32(x->d);
            for (int j = 0; j < 16; j++) {
                y[j] = d * (float)iq4_grid[x->qs[j] & 0xF];
                y[j + 16] = d * (float)iq4_grid[x->qs[j] >> 4];
            }
        }
        break;
    case SLLM_IQ4_XS:
        for (int64_t b = 0; b < count / QKK; b++) {
            const block_iq4_xs *x = (const block_iq4_xs *)source + b;
            const float d = f16_to_f32(x->d);
            for (int i = 0; i < 8; i++, y += 32) {
                const float dl = d * (float)iq4_xs_scale(x, i);
                for (int j = 0; j < 16; j++) {
                    y[j] = dl * (float)iq4_grid[x->qs[16 * i + j] & 0xF];
                    y[j + 16] = dl * (float)iq4_grid[x->qs[16 * i + j] >> 4];
                }
            }
        }
        break;
    case SLLM_Q2_K:
        for (int64_t b = 0; b < count / QKK; b++, y += QKK) {
            const block_q2_K *x = (const block_q2_K *)source + b;
            const float d = f16_to_f32(x->d), dmin = f16_to_f32(x->dmin);
            uint8_t values[QKK];
            q2_K_values(x, values);
            for (int j = 0; j < QKK; j++) {
                const uint8_t sc = x->scales[j / 16];
                y[j] = d * (float)(sc & 0xF) * (float)values[j] - dmin * (float)(sc >> 4);
            }
        }
        break;
    case SLLM_Q3_K:
        for (int64_t b = 0; b < count / QKK; b++, y += QKK) {
            const block_q3_K *x = (const block_q3_K *)source + b;
            const float d = f16_to_f32(x->d);
            int8_t values[QKK], scales[16];
            q3_K_values(x, values);
            q3_K_scales(x->scales, scales);
            for (int j = 0; j < QKK; j++) y[j] = d * (float)scales[j / 16] * (float)values[j];
        }
        break;
    case SLLM_Q4_K:
        for (int64_t b = 0; b < count / QKK; b++) {
            const block_q4_K *x = (const block_q4_K *)source + b;
            const float d = f16_to_f32(x->d), dmin = f16_to_f32(x->dmin);
            const uint8_t *q = x->qs;
            for (int j = 0, is = 0; j < QKK; j += 64, is += 2, q += 32) {
                uint8_t sc, m;
                sllm_q4_K_scale_min(is, x->scales, &sc, &m);
                const float d1 = d * sc, m1 = dmin * m;
                sllm_q4_K_scale_min(is + 1, x->scales, &sc, &m);
                const float d2 = d * sc, m2 = dmin * m;
                for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0xF) - m1;
                for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
            }
        }
        break;
    case SLLM_Q5_K:
        for (int64_t b = 0; b < count / QKK; b++, y += QKK) {
            const block_q5_K *x = (const block_q5_K *)source + b;
            const float d = f16_to_f32(x->d), dmin = f16_to_f32(x->dmin);
            uint8_t values[QKK];
            q5_K_values(x, values);
            for (int j = 0; j < 8; j++) {
                uint8_t sc, m;
                sllm_q4_K_scale_min(j, x->scales, &sc, &m);
                const float dj = d * sc, mj = dmin * m;
                for (int l = 0; l < 32; l++) y[32 * j + l] = dj * (float)values[32 * j + l] - mj;
            }
        }
        break;
    case SLLM_Q6_K:
        for (int64_t b = 0; b < count / QKK; b++, y += QKK) {
            const block_q6_K *x = (const block_q6_K *)source + b;
            int8_t values[QKK];
            sllm_q6_K_values(x, values);
            const float d = f16_to_f32(x->d);
            for (int j = 0; j < QKK; j++) y[j] = d * (float)x->scales[j / 16] * (float)values[j];
        }
        break;
    default: break;
    }
}

/// GGML's vectorised expf (AVX-512 `ggml_v_expf`, max error about 1.5 ulp), one lane at a time.
static inline float ggml_expf(float x) {
    const float r = 0x1.8p23f;
    const float z = __builtin_fmaf(x, 0x1.715476p+0f, r);
    const float n = z - r;
    const float b = __builtin_fmaf(-n, 0x1.7f7d1cp-20f, __builtin_fmaf(-n, 0x1.62e4p-1f, x));
    const float u = b * b;
    const float j = __builtin_fmaf(
        __builtin_fmaf(__builtin_fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, __builtin_fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
        u, __builtin_fmaf(0x1.ffffecp-1f, b, 1.0f));
    if (fabsf(n) > 192) return n <= 0 ? 0.0f : INFINITY;
    if (n >= -126 && n <= 127) {
        // j · 2ⁿ with 2ⁿ a normal float: exact, as `vscalefps` is.
        const uint32_t bits = (uint32_t)((int)n + 127) << 23;
        float power;
        memcpy(&power, &bits, 4);
        return j * power;
    }
    return ldexpf(j, (int)n);
}

static const float gelu_coef_a = 0.044715f;
static const float sqrt_2_over_pi = 0.79788456080286535587989211986876f;

/// GGML's tanh-approximated GELU in single precision (`ggml_gelu_f32`).
static float ggml_gelu(float x) { return 0.5f * x * (1.0f + tanhf(sqrt_2_over_pi * x * (1.0f + gelu_coef_a * x * x))); }

/// GELU of every f16 value, rounded to f16: GGML computes GELU through this table
/// (`ggml_table_gelu_f16`, `GGML_GELU_FP16`), so GeGLU matches llama.cpp's bits only through it.
static uint16_t gelu_table[1 << 16];
static pthread_once_t gelu_once = PTHREAD_ONCE_INIT;

static void build_gelu_table(void) {
    for (int i = 0; i < (1 << 16); i++) gelu_table[i] = f32_to_f16(ggml_gelu(f16_to_f32((uint16_t)i)));
}

/// The table lookups with F16C's conversions (the portable ones are library calls).
__attribute__((target("f16c"))) static void geglu_f16c(const float *gate, const float *up, float *out, int64_t count) {
    for (int64_t i = 0; i < count; i++) {
        const float x = gate[i];
        if (x <= -10.0f) out[i] = 0.0f;
        else if (x >= 10.0f) out[i] = x * up[i];
        else out[i] = _cvtsh_ss(gelu_table[_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT)]) * up[i];
    }
}

void sllm_geglu(const float *gate, const float *up, float *out, int64_t count) {
    pthread_once(&gelu_once, build_gelu_table);
    if (sllm_kernel_level() >= 1) {
        geglu_f16c(gate, up, out, count);
        return;
    }
    for (int64_t i = 0; i < count; i++) {
        const float x = gate[i];
        if (x <= -10.0f) out[i] = 0.0f;
        else if (x >= 10.0f) out[i] = x * up[i];
        else out[i] = f16_to_f32(gelu_table[f32_to_f16(x)]) * up[i];
    }
}

int64_t sllm_swiglu_vector(const float *gate, const float *up, float *out, int64_t count);

void sllm_swiglu(const float *gate, const float *up, float *out, int64_t count) {
    for (int64_t i = sllm_swiglu_vector(gate, up, out, count); i < count; i++) {
        const float x = gate[i];
        out[i] = x / (1.0f + ggml_expf(0.0f - x)) * up[i];
    }
}
