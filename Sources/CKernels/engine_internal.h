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
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } block_q4_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } block_q5_K;
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } block_q6_K;
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } block_q8_K;

_Static_assert(sizeof(block_q4_0) == 18, "q4_0");
_Static_assert(sizeof(block_q4_1) == 20, "q4_1");
_Static_assert(sizeof(block_q5_0) == 22, "q5_0");
_Static_assert(sizeof(block_q5_1) == 24, "q5_1");
_Static_assert(sizeof(block_q8_0) == 34, "q8_0");
_Static_assert(sizeof(block_q8_1) == 36, "q8_1");
_Static_assert(sizeof(block_q4_K) == 144, "q4_K");
_Static_assert(sizeof(block_q5_K) == 176, "q5_K");
_Static_assert(sizeof(block_q6_K) == 210, "q6_K");
_Static_assert(sizeof(block_q8_K) == 292, "q8_K");

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

void sllm_q4_K_scale_min(int j, const uint8_t *q, uint8_t *scale, uint8_t *min);
void sllm_q6_K_values(const block_q6_K *block, int8_t *out);

#endif
