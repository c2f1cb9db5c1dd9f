// Block layouts of GGML's quantized types (bit-exact) and f16 helpers shared by the engine kernels.
#ifndef SLLM_ENGINE_INTERNAL_H
#define SLLM_ENGINE_INTERNAL_H

#include <stdint.h>
#include <string.h>

#define QK 32
#define QKK 256

typedef struct { uint16_t d; uint8_t qs[16]; } block_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[16]; } block_q4_1;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } block_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } block_q5_1;
typedef struct { uint16_t d; int8_t qs[32]; } block_q8_0;
typedef struct { uint16_t d, s; int8_t qs[32]; } block_q8_1;
typedef struct { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; } block_q2_K;
typedef struct { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; } block_q3_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } block_q4_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } block_q5_K;
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } block_q6_K;
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } block_q8_K;
typedef struct { uint16_t d; uint8_t qs[16]; } block_iq4_nl;
typedef struct { uint16_t d; uint16_t scales_h; uint8_t scales_l[4]; uint8_t qs[128]; } block_iq4_xs;

_Static_assert(sizeof(block_q4_0) == 18, "q4_0");
_Static_assert(sizeof(block_q4_1) == 20, "q4_1");
_Static_assert(sizeof(block_q5_0) == 22, "q5_0");
_Static_assert(sizeof(block_q5_1) == 24, "q5_1");
_Static_assert(sizeof(block_q8_0) == 34, "q8_0");
_Static_assert(sizeof(block_q8_1) == 36, "q8_1");
_Static_assert(sizeof(block_q2_K) == 84, "q2_K");
_Static_assert(sizeof(block_q3_K) == 110, "q3_K");
_Static_assert(sizeof(block_q4_K) == 144, "q4_K");
_Static_assert(sizeof(block_q5_K) == 176, "q5_K");
_Static_assert(sizeof(block_q6_K) == 210, "q6_K");
_Static_assert(sizeof(block_q8_K) == 292, "q8_K");
_Static_assert(sizeof(block_iq4_nl) == 18, "iq4_nl");
_Static_assert(sizeof(block_iq4_xs) == 136, "iq4_xs");

/// The sixteen values a 4-bit index of IQ4_NL and IQ4_XS stands for (GGML's `kvalues_iq4nl`): a
/// non-linear grid, denser near zero, where weights are.
static const int8_t iq4_grid[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static inline float f16_to_f32(uint16_t h) {
    _Float16 f;
    memcpy(&f, &h, 2);
    return (float)f;
}

static inline uint16_t f32_to_f16(float x) {
    _Float16 f = (_Float16)x;
    uint16_t h;
    memcpy(&h, &f, 2);
    return h;
}

/// f16 dot product with exactly the arithmetic of GGML's AVX-512 `ggml_vec_dot_f16` (used by its
/// flash attention): four 16-lane f32 accumulators over steps of 64 (fused multiply-add), reduced
/// pairwise as GGML and GCC's `_mm512_reduce_add_ps` do, leftovers added in double. Attention
/// weights are rounded to f16 later, so the last bit of this sum decides ties: it must match.
static inline float ggml_dot_f16(const uint16_t *x, const uint16_t *y, int64_t n) {
    float acc[4][16] = {{0}};
    const int64_t whole = n & ~(int64_t)63;
    for (int64_t i = 0; i < whole; i += 64)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 16; l++)
                acc[j][l] = __builtin_fmaf(f16_to_f32(x[i + 16 * j + l]), f16_to_f32(y[i + 16 * j + l]), acc[j][l]);
    float lanes[16], half[8], quarter[4];
    for (int l = 0; l < 16; l++) lanes[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    for (int l = 0; l < 8; l++) half[l] = lanes[l + 8] + lanes[l];
    for (int l = 0; l < 4; l++) quarter[l] = half[l + 4] + half[l];
    double sum = (double)((quarter[0] + quarter[2]) + (quarter[1] + quarter[3]));
    for (int64_t i = whole; i < n; i++) sum += (double)(f16_to_f32(x[i]) * f16_to_f32(y[i]));
    return (float)sum;
}

/// The 32 five-bit values of a Q5_0/Q5_1 block, 0…31: element j's low four bits are nibble j
/// (low nibbles first, then high), its fifth bit is bit j of `qh` (little-endian).
static inline void q5_values(const uint8_t *qh, const uint8_t *qs, uint8_t *out) {
    uint32_t h;
    memcpy(&h, qh, 4);
    for (int j = 0; j < 16; j++) {
        out[j] = (uint8_t)((qs[j] & 0xF) | (((h >> j) & 1) << 4));
        out[j + 16] = (uint8_t)((qs[j] >> 4) | (((h >> (j + 16)) & 1) << 4));
    }
}

/// The 256 values (0…31) of a Q5_K block, in order: sub-block 2j takes the low nibbles of
/// qs[32j…32j+31] and bit 2j of qh[0…31] as its fifth bit; sub-block 2j+1 the high nibbles
/// and bit 2j+1 (GGML's `dequantize_row_q5_K`).
static inline void q5_K_values(const block_q5_K *x, uint8_t *out) {
    for (int j = 0; j < 4; j++)
        for (int l = 0; l < 32; l++) {
            out[64 * j + l] = (uint8_t)((x->qs[32 * j + l] & 0xF) | (((x->qh[l] >> (2 * j)) & 1) << 4));
            out[64 * j + 32 + l] = (uint8_t)((x->qs[32 * j + l] >> 4) | (((x->qh[l] >> (2 * j + 1)) & 1) << 4));
        }
}

/// The 256 values (0…3) of a Q2_K block, in order: 32-value group g = 4c + k takes bits 2k…2k+1
/// of qs[32c…32c+31]; its first 16 values use scale 2g, the next 16 scale 2g+1.
static inline void q2_K_values(const block_q2_K *x, uint8_t *out) {
    for (int g = 0; g < 8; g++)
        for (int l = 0; l < 32; l++) out[32 * g + l] = (uint8_t)((x->qs[32 * (g / 4) + l] >> (2 * (g % 4))) & 3);
}

/// The 256 signed values (−4…3) of a Q3_K block, in order: Q2_K's two low bits, less 4 where
/// bit g of hmask[l] is clear (GGML's `dequantize_row_q3_K`).
static inline void q3_K_values(const block_q3_K *x, int8_t *out) {
    for (int g = 0; g < 8; g++)
        for (int l = 0; l < 32; l++) {
            const int low = (x->qs[32 * (g / 4) + l] >> (2 * (g % 4))) & 3;
            out[32 * g + l] = (int8_t)(low - (((x->hmask[l] >> g) & 1) ? 0 : 4));
        }
}

/// The sixteen 6-bit scales of a Q3_K block, less 32 (−32…31), from its 12 packed bytes: the low
/// four bits of scale i are nibble i of bytes 0…7 (low nibbles first), the top two bits come
/// from bytes 8…11.
static inline void q3_K_scales(const uint8_t *packed, int8_t *out) {
    for (int i = 0; i < 16; i++) {
        const int low = i < 8 ? (packed[i] & 0xF) : (packed[i - 8] >> 4);
        const int high = (packed[8 + (i % 4)] >> (2 * (i / 4))) & 3;
        out[i] = (int8_t)((low | (high << 4)) - 32);
    }
}

/// The 6-bit scale (less 32) of IQ4_XS sub-block `i`: its low nibble from scales_l, its top two
/// bits from scales_h.
static inline int iq4_xs_scale(const block_iq4_xs *x, int i) {
    return (((x->scales_l[i / 2] >> (4 * (i % 2))) & 0xF) | (((x->scales_h >> (2 * i)) & 3) << 4)) - 32;
}

/// Scale and min (6 bits each) of sub-block `j` of a Q4_K/Q5_K block from its 12 packed bytes.
static inline void sllm_q4_K_scale_min(int j, const uint8_t *q, uint8_t *scale, uint8_t *min) {
    if (j < 4) {
        *scale = q[j] & 63;
        *min = q[j + 4] & 63;
    } else {
        *scale = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *min = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/// The 256 signed 6-bit values of a Q6_K block, in order.
static inline void sllm_q6_K_values(const block_q6_K *block, int8_t *out) {
    const uint8_t *ql = block->ql, *qh = block->qh;
    for (int n = 0; n < QKK; n += 128, ql += 64, qh += 32, out += 128) {
        for (int l = 0; l < 32; l++) {
            out[l] = (int8_t)(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
            out[l + 32] = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
            out[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            out[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
    }
}

#endif
