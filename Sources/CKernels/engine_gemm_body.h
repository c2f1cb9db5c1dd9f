// Vector kernels, included once per instruction-set level by engine_gemm.c with
// SUFFIX(name) naming the functions and DOT_U8I8(acc, u, s) adding the products of unsigned and
// signed bytes into eight int32 lanes (VNNI `vpdpbusd`, or AVX2 `vpmaddubsw` + `vpmaddwd`).
// Each kernel computes a tile of up to four tokens against one weight row, so the unpacked
// weights of a block are reused across the tile.

static inline float SUFFIX(hsum)(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/// total + scale·(u·s) in eight int32 lanes, each lane four bytes of u and s: `vpmaddubsw` into
/// 16-bit pairs, then `vpmaddwd` by the 16-bit scales (GGML's AVX2 form). Exact, as long as each
/// pair fits 16 bits (every caller's values do); two µops, where a byte dot product followed by
/// a 32-bit multiply is three.
static inline __m256i SUFFIX(scaled_dot)(__m256i total, __m256i u, __m256i s, __m256i scale16) {
    return _mm256_add_epi32(total, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), scale16));
}

/// 16-bit scales for a 32-value group: `low` in lanes 0-3 (its first 16 values), `high` in 4-7.
static inline __m256i SUFFIX(pair_scales)(int low, int high) {
    return _mm256_set_m128i(_mm_set1_epi16((short)high), _mm_set1_epi16((short)low));
}

static inline __m256i SUFFIX(nibbles)(const uint8_t *qs) {
    const __m128i packed = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), _mm256_set1_epi8(0x0F));
}

/// Byte j is 0xFF where bit j of the 32 bits at `p` is set (GGML's `bytes_from_bits_32`).
static inline __m256i SUFFIX(bits_to_bytes)(const uint8_t *p) {
    uint32_t bits;
    memcpy(&bits, p, 4);
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)bits),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
    return _mm256_cmpeq_epi8(_mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe)), _mm256_set1_epi64x(-1));
}

/// The 32 five-bit values (0…31) of a Q5 block: the nibbles at `qs`, the fifth bits at `qh`.
static inline __m256i SUFFIX(five_bits)(const uint8_t *qh, const uint8_t *qs) {
    return _mm256_or_si256(SUFFIX(nibbles)(qs), _mm256_and_si256(SUFFIX(bits_to_bytes)(qh), _mm256_set1_epi8(0x10)));
}

/// The unsigned quants of a block with an f16 scale and min first: Q4_1's nibbles (0…15) or
/// Q5_1's five-bit values (0…31), met by Q8_1 activations.
static inline __m256i SUFFIX(unsigned_quants)(const uint8_t *block, int five_bit) {
    return five_bit ? SUFFIX(five_bits)(block + 4, block + 8) : SUFFIX(nibbles)(block + 4);
}

/// The 32 signed quants of a block whose f16 scale comes first: Q8_0's bytes (`bits` 8), Q4_0's
/// nibbles shifted to −8…7 (4), or Q5_0's five-bit values shifted to −16…15 (5). All then meet
/// Q8_0 activations the same way.
static inline __m256i SUFFIX(signed_quants)(const uint8_t *block, int bits) {
    switch (bits) {
    case 4: return _mm256_sub_epi8(SUFFIX(nibbles)(block + 2), _mm256_set1_epi8(8));
    case 5: return _mm256_sub_epi8(SUFFIX(five_bits)(block + 2, block + 6), _mm256_set1_epi8(16));
    default: return _mm256_loadu_si256((const __m256i *)(block + 2));
    }
}

static inline float SUFFIX(block_scale)(const uint8_t *block) {
    uint16_t d;
    memcpy(&d, block, 2);
    return _cvtsh_ss(d);
}

/// Q4_K: eight sub-blocks of 32 with 6-bit scales and mins; the mins meet Q8_K's 16-sums.
/// GGML's AVX2 `ggml_vec_dot_q4_K_q8_K` exactly: each of eight int32 lanes sums four bytes of
/// every sub-block times its scale; per block the lanes are added to eight float accumulators
/// (`d·lane`, fused), the mins to four (`−dmin·(m·sums)` over sub-block pairs), and the two are
/// reduced at the end as GGML does. Integer sums are exact; matching the float order keeps
/// the results GGML's bit for bit, so quantized activations downstream round the same way.
static inline __attribute__((always_inline)) void SUFFIX(row_q4_K)(const block_q4_K *x, const uint8_t *a, size_t astride, int tn, int64_t nb, float *out, int64_t ldo) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    __m128 accm[4] = {_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps()};
    for (int64_t b = 0; b < nb; b++) {
        uint8_t scales[8], mins[8];
        for (int j = 0; j < 8; j++) sllm_q4_K_scale_min(j, x[b].scales, &scales[j], &mins[j]);
        __m256i q[8];
        for (int j = 0; j < 4; j++) {
            const __m256i packed = _mm256_loadu_si256((const __m256i *)(x[b].qs + 32 * j));
            q[2 * j] = _mm256_and_si256(packed, _mm256_set1_epi8(0x0F));
            q[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(packed, 4), _mm256_set1_epi8(0x0F));
        }
        int16_t scale16[8];
        for (int j = 0; j < 8; j++) scale16[j] = scales[j];
        const __m128i mins16 = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)mins));
        const float xd = _cvtsh_ss(x[b].d), xdmin = _cvtsh_ss(x[b].dmin);
        for (int t = 0; t < tn; t++) {
            const block_q8_K *y = (const block_q8_K *)(a + (size_t)t * astride) + b;
            const __m256i bsums = _mm256_loadu_si256((const __m256i *)y->bsums);
            const __m128i sums = _mm_hadd_epi16(_mm256_castsi256_si128(bsums), _mm256_extracti128_si256(bsums, 1));
            const __m128i prod = _mm_madd_epi16(mins16, sums);
            accm[t] = _mm_fmadd_ps(_mm_set1_ps(-y->d * xdmin), _mm_cvtepi32_ps(prod), accm[t]);
            __m256i total = _mm256_setzero_si256();
            for (int j = 0; j < 8; j++)
                total = SUFFIX(scaled_dot)(total, q[j], _mm256_loadu_si256((const __m256i *)(y->qs + 32 * j)), _mm256_set1_epi16(scale16[j]));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(y->d * xd), _mm256_cvtepi32_ps(total), acc[t]);
        }
    }
    for (int t = 0; t < tn; t++) {
        __m128 m = _mm_add_ps(accm[t], _mm_movehl_ps(accm[t], accm[t]));
        m = _mm_add_ss(m, _mm_movehdup_ps(m));
        out[t * ldo] = SUFFIX(hsum)(acc[t]) + _mm_cvtss_f32(m);
    }
}

/// Q5_K: Q4_K's sub-blocks and scales with a fifth bit per value (0…31), and GGML's AVX2
/// `ggml_vec_dot_q5_K_q8_K` float order: `d·lane` into eight fused accumulators per block, the
/// mins as one float sum (`−dmin·Σ m·sums`, added per block), reduced at the end.
static inline __attribute__((always_inline)) void SUFFIX(row_q5_K)(const block_q5_K *x, const uint8_t *a, size_t astride, int tn, int64_t nb, float *out, int64_t ldo) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    float summs[4] = {0, 0, 0, 0};
    for (int64_t b = 0; b < nb; b++) {
        uint8_t scales[8], mins[8];
        for (int j = 0; j < 8; j++) sllm_q4_K_scale_min(j, x[b].scales, &scales[j], &mins[j]);
        // Sub-block 2j: low nibbles of qs[32j…], fifth bit from bit 2j of qh; 2j+1: high, 2j+1.
        __m256i q[8];
        const __m256i high = _mm256_loadu_si256((const __m256i *)x[b].qh);
        for (int j = 0; j < 4; j++) {
            const __m256i packed = _mm256_loadu_si256((const __m256i *)(x[b].qs + 32 * j));
            const __m256i h0 = _mm256_and_si256(_mm256_srl_epi16(high, _mm_cvtsi32_si128(2 * j)), _mm256_set1_epi8(1));
            const __m256i h1 = _mm256_and_si256(_mm256_srl_epi16(high, _mm_cvtsi32_si128(2 * j + 1)), _mm256_set1_epi8(1));
            q[2 * j] = _mm256_or_si256(_mm256_and_si256(packed, _mm256_set1_epi8(0x0F)), _mm256_slli_epi16(h0, 4));
            q[2 * j + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(packed, 4), _mm256_set1_epi8(0x0F)), _mm256_slli_epi16(h1, 4));
        }
        int16_t scale16[8];
        for (int j = 0; j < 8; j++) scale16[j] = scales[j];
        const __m128i mins16 = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)mins));
        const float xd = _cvtsh_ss(x[b].d), xdmin = _cvtsh_ss(x[b].dmin);
        for (int t = 0; t < tn; t++) {
            const block_q8_K *y = (const block_q8_K *)(a + (size_t)t * astride) + b;
            const __m256i bsums = _mm256_loadu_si256((const __m256i *)y->bsums);
            const __m128i sums = _mm_hadd_epi16(_mm256_castsi256_si128(bsums), _mm256_extracti128_si256(bsums, 1));
            const __m128i prod = _mm_madd_epi16(mins16, sums);
            const __m128i folded = _mm_hadd_epi32(_mm_hadd_epi32(prod, _mm_setzero_si128()), _mm_setzero_si128());
            summs[t] += -y->d * xdmin * (float)_mm_cvtsi128_si32(folded);
            __m256i total = _mm256_setzero_si256();
            for (int j = 0; j < 8; j++)
                total = SUFFIX(scaled_dot)(total, q[j], _mm256_loadu_si256((const __m256i *)(y->qs + 32 * j)), _mm256_set1_epi16(scale16[j]));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(y->d * xd), _mm256_cvtepi32_ps(total), acc[t]);
        }
    }
    for (int t = 0; t < tn; t++) out[t * ldo] = SUFFIX(hsum)(acc[t]) + summs[t];
}

/// Q6_K: sixteen sub-blocks of 16 with signed 8-bit scales; values −32…31 made unsigned
/// (+32) for the byte dot product and corrected with Q8_K's 16-sums. GGML's AVX2
/// `ggml_vec_dot_q6_K_q8_K` exactly: eight int32 lanes, each four bytes of every 32-value group
/// times its sub-block's scale, less 32·(scale·sum) of sub-blocks 2i and 2i+1; per block
/// `d·lane` is added to eight float accumulators (fused), reduced at the end.
static inline __attribute__((always_inline)) void SUFFIX(row_q6_K)(const block_q6_K *x, const uint8_t *a, size_t astride, int tn, int64_t nb, float *out, int64_t ldo) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nb; b++) {
        // The values plus 32 (0…63): four low bits from ql, two high ones from qh, per half
        // of 128 as `dequantize_row_q6_K` lays them out.
        __m256i q[8];
        for (int h = 0; h < 2; h++) {
            const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(x[b].ql + 64 * h));
            const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(x[b].ql + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(x[b].qh + 32 * h));
            const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x30);
            q[4 * h] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m2));
            q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m2));
            q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m2));
            q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2));
        }
        const __m256i scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x[b].scales));
        const float xd = _cvtsh_ss(x[b].d);
        for (int t = 0; t < tn; t++) {
            const block_q8_K *y = (const block_q8_K *)(a + (size_t)t * astride) + b;
            const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), scales16), 5);
            __m256i total = _mm256_setzero_si256();
            for (int j = 0; j < 8; j++)
                total = SUFFIX(scaled_dot)(total, q[j], _mm256_loadu_si256((const __m256i *)(y->qs + 32 * j)),
                                           SUFFIX(pair_scales)(x[b].scales[2 * j], x[b].scales[2 * j + 1]));
            total = _mm256_sub_epi32(total, offset);  // (values + 32)·y less 32·y
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(y->d * xd), _mm256_cvtepi32_ps(total), acc[t]);
        }
    }
    for (int t = 0; t < tn; t++) out[t * ldo] = SUFFIX(hsum)(acc[t]);
}

/// The 256 two-bit fields of Q2_K/Q3_K `qs` (64 bytes) as eight groups of 32 bytes (0…3):
/// group 4c + k holds bits 2k…2k+1 of bytes 32c…32c+31.
static inline void SUFFIX(two_bit_groups)(const uint8_t *qs, __m256i *out) {
    const __m256i three = _mm256_set1_epi8(3);
    for (int c = 0; c < 2; c++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
        out[4 * c] = _mm256_and_si256(bits, three);
        out[4 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(bits, 2), three);
        out[4 * c + 2] = _mm256_and_si256(_mm256_srli_epi16(bits, 4), three);
        out[4 * c + 3] = _mm256_and_si256(_mm256_srli_epi16(bits, 6), three);
    }
}

/// Σ over eight 32-value groups of scale·(q·y) in int32 lanes, for signed weights `q` (their
/// magnitudes precomputed) against the Q8_K quants `qs`: the sign trick gives the byte dot product
/// its unsigned side. Q3_K and IQ4_XS.
static inline __m256i SUFFIX(signed_groups_dot)(const __m256i *q, const __m256i *magnitude, const __m256i *scale, const int8_t *qs) {
    __m256i total = _mm256_setzero_si256();
    for (int g = 0; g < 8; g++)
        total = SUFFIX(scaled_dot)(total, magnitude[g], _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(qs + 32 * g)), q[g]), scale[g]);
    return total;
}

/// Q2_K: sixteen sub-blocks of 16 with 4-bit scales and mins, values 0…3. GGML's AVX2
/// `ggml_vec_dot_q2_K_q8_K` float order: per block, `−dmin·lane` of the mins against Q8_K's
/// 16-sums, then `d·lane` of the scaled dot products, each into eight fused accumulators.
static inline __attribute__((always_inline)) void SUFFIX(row_q2_K)(const block_q2_K *x, const uint8_t *a, size_t astride, int tn, int64_t nb, float *out, int64_t ldo) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nb; b++) {
        __m256i q[8], scale[8];
        SUFFIX(two_bit_groups)(x[b].qs, q);
        // Lanes 0-3 of group g hold sub-block 2g, lanes 4-7 sub-block 2g+1.
        for (int g = 0; g < 8; g++) scale[g] = SUFFIX(pair_scales)(x[b].scales[2 * g] & 0xF, x[b].scales[2 * g + 1] & 0xF);
        const __m128i packed = _mm_loadu_si128((const __m128i *)x[b].scales);
        const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0xF)));
        const float xd = _cvtsh_ss(x[b].d), xdmin = _cvtsh_ss(x[b].dmin);
        for (int t = 0; t < tn; t++) {
            const block_q8_K *y = (const block_q8_K *)(a + (size_t)t * astride) + b;
            const __m256i prod = _mm256_madd_epi16(mins16, _mm256_loadu_si256((const __m256i *)y->bsums));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(-y->d * xdmin), _mm256_cvtepi32_ps(prod), acc[t]);
            __m256i total = _mm256_setzero_si256();
            for (int g = 0; g < 8; g++)
                total = SUFFIX(scaled_dot)(total, q[g], _mm256_loadu_si256((const __m256i *)(y->qs + 32 * g)), scale[g]);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(y->d * xd), _mm256_cvtepi32_ps(total), acc[t]);
        }
    }
    for (int t = 0; t < tn; t++) out[t * ldo] = SUFFIX(hsum)(acc[t]);
}

/// Q3_K: sixteen sub-blocks of 16 with signed 6-bit scales, values −4…3 (two low bits, less 4
/// where the high bit is clear). GGML's AVX2 `ggml_vec_dot_q3_K_q8_K` keeps the same int32 lanes
/// (each four bytes of a group times its scale) and adds `d·lane` to eight fused accumulators per
/// block; the sign trick gives the byte dot product its unsigned side.
static inline __attribute__((always_inline)) void SUFFIX(row_q3_K)(const block_q3_K *x, const uint8_t *a, size_t astride, int tn, int64_t nb, float *out, int64_t ldo) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const __m256i four = _mm256_set1_epi8(4), zero = _mm256_setzero_si256();
    for (int64_t b = 0; b < nb; b++) {
        const __m256i high = _mm256_loadu_si256((const __m256i *)x[b].hmask);
        __m256i low[8], q[8], magnitude[8], scale[8];
        SUFFIX(two_bit_groups)(x[b].qs, low);
        int8_t scales[16];
        q3_K_scales(x[b].scales, scales);
        for (int g = 0; g < 8; g++) {
            const __m256i clear = _mm256_cmpeq_epi8(_mm256_and_si256(high, _mm256_set1_epi8((char)(1 << g))), zero);
            q[g] = _mm256_sub_epi8(low[g], _mm256_and_si256(clear, four));
            magnitude[g] = _mm256_sign_epi8(q[g], q[g]);
            scale[g] = SUFFIX(pair_scales)(scales[2 * g], scales[2 * g + 1]);
        }
        const float xd = _cvtsh_ss(x[b].d);
        for (int t = 0; t < tn; t++) {
            const block_q8_K *y = (const block_q8_K *)(a + (size_t)t * astride) + b;
            const __m256i total = SUFFIX(signed_groups_dot)(q, magnitude, scale, y->qs);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(y->d * xd), _mm256_cvtepi32_ps(total), acc[t]);
        }
    }
    for (int t = 0; t < tn; t++) out[t * ldo] = SUFFIX(hsum)(acc[t]);
}

/// The 32 grid values (−127…113) of 16 bytes of IQ4 indices: low nibbles first, then high.
static inline __m256i SUFFIX(iq4_values)(const uint8_t *qs) {
    const __m256i grid = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)iq4_grid));
    return _mm256_shuffle_epi8(grid, SUFFIX(nibbles)(qs));
}

/// IQ4_NL against Q8_0: like Q4_0 with a non-linear grid. GGML's AVX2
/// `ggml_vec_dot_iq4_nl_q8_0` adds even blocks to one set of eight fused accumulators and odd
/// blocks to another, reduces their sum, and adds an odd last block in scalar.
static inline __attribute__((always_inline)) void SUFFIX(row_iq4_nl)(const block_iq4_nl *x, const uint8_t *a, size_t astride, int tn, int64_t nb, float *out, int64_t ldo) {
    __m256 even[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    __m256 odd[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        const __m256i q0 = SUFFIX(iq4_values)(x[b].qs), q1 = SUFFIX(iq4_values)(x[b + 1].qs);
        const __m256i m0 = _mm256_sign_epi8(q0, q0), m1 = _mm256_sign_epi8(q1, q1);
        const float d0 = _cvtsh_ss(x[b].d), d1 = _cvtsh_ss(x[b + 1].d);
        for (int t = 0; t < tn; t++) {
            const block_q8_0 *y = (const block_q8_0 *)(a + (size_t)t * astride) + b;
            __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
            DOT_U8I8(s0, m0, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)y[0].qs), q0));
            DOT_U8I8(s1, m1, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)y[1].qs), q1));
            even[t] = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(y[0].d) * d0), _mm256_cvtepi32_ps(s0), even[t]);
            odd[t] = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(y[1].d) * d1), _mm256_cvtepi32_ps(s1), odd[t]);
        }
    }
    for (int t = 0; t < tn; t++) {
        float sum = SUFFIX(hsum)(_mm256_add_ps(even[t], odd[t]));
        if (b < nb) {
            const block_q8_0 *y = (const block_q8_0 *)(a + (size_t)t * astride) + b;
            int sumi = 0;
            for (int j = 0; j < 16; j++)
                sumi += y->qs[j] * iq4_grid[x[b].qs[j] & 0xF] + y->qs[j + 16] * iq4_grid[x[b].qs[j] >> 4];
            sum += _cvtsh_ss(y->d) * _cvtsh_ss(x[b].d) * (float)sumi;
        }
        out[t * ldo] = sum;
    }
}

/// IQ4_XS: eight sub-blocks of 32 grid values with signed 6-bit scales, against Q8_K. GGML's
/// AVX2 `ggml_vec_dot_iq4_xs_q8_K`: int32 lanes of four bytes times the sub-block's scale, `d·lane`
/// into eight fused accumulators per block.
static inline __attribute__((always_inline)) void SUFFIX(row_iq4_xs)(const block_iq4_xs *x, const uint8_t *a, size_t astride, int tn, int64_t nb, float *out, int64_t ldo) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nb; b++) {
        __m256i q[8], magnitude[8], scale[8];
        for (int i = 0; i < 8; i++) {
            q[i] = SUFFIX(iq4_values)(x[b].qs + 16 * i);
            magnitude[i] = _mm256_sign_epi8(q[i], q[i]);
            scale[i] = _mm256_set1_epi16((short)iq4_xs_scale(&x[b], i));
        }
        const float xd = _cvtsh_ss(x[b].d);
        for (int t = 0; t < tn; t++) {
            const block_q8_K *y = (const block_q8_K *)(a + (size_t)t * astride) + b;
            const __m256i total = SUFFIX(signed_groups_dot)(q, magnitude, scale, y->qs);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(xd * y->d), _mm256_cvtepi32_ps(total), acc[t]);
        }
    }
    for (int t = 0; t < tn; t++) out[t * ldo] = SUFFIX(hsum)(acc[t]);
}

static inline __attribute__((always_inline)) float SUFFIX(dot_f16)(const uint16_t *x, const uint16_t *y, int64_t k) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(y + i))), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i + 8))), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(y + i + 8))), acc1);
    }
    float sum = SUFFIX(hsum)(_mm256_add_ps(acc0, acc1));
    for (; i < k; i++) sum += _cvtsh_ss(x[i]) * _cvtsh_ss(y[i]);
    return sum;
}

static inline __m256 SUFFIX(load_bf16)(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

static inline __attribute__((always_inline)) float SUFFIX(dot_bf16)(const uint16_t *x, const uint16_t *y, int64_t k) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) acc = _mm256_fmadd_ps(SUFFIX(load_bf16)(x + i), SUFFIX(load_bf16)(y + i), acc);
    float sum = SUFFIX(hsum)(acc);
    for (; i < k; i++) {
        const uint32_t a = (uint32_t)x[i] << 16, c = (uint32_t)y[i] << 16;
        float fa, fc;
        memcpy(&fa, &a, 4);
        memcpy(&fc, &c, 4);
        sum += fa * fc;
    }
    return sum;
}

static inline __attribute__((always_inline)) float SUFFIX(dot_f32)(const float *x, const float *y, int64_t k) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), acc1);
    }
    float sum = SUFFIX(hsum)(_mm256_add_ps(acc0, acc1));
    for (; i < k; i++) sum += x[i] * y[i];
    return sum;
}

/// Decoding (one token) of Q4_1/Q5_1 and Q4_0/Q5_0/Q8_0: the activation scales are converted
/// from f16 once per call rather than once per row; the arithmetic is the tiled kernels' exactly.
static void SUFFIX(gemv_with_min)(const uint8_t *w, size_t ws, size_t bytes, int five_bit, int64_t r0, int64_t r1, const block_q8_1 *y, int64_t nb, float *out) {
    float dy[nb], sy[nb];
    for (int64_t b = 0; b < nb; b++) {
        dy[b] = _cvtsh_ss(y[b].d);
        sy[b] = _cvtsh_ss(y[b].s);
    }
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *x = w + (size_t)r * ws;
        __m256 acc = _mm256_setzero_ps();
        float summ = 0;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *block = x + (size_t)b * bytes;
            uint16_t dm[2];
            memcpy(dm, block, 4);
            __m256i dot = _mm256_setzero_si256();
            DOT_U8I8(dot, SUFFIX(unsigned_quants)(block, five_bit), _mm256_loadu_si256((const __m256i *)y[b].qs));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(dm[0]) * dy[b]), _mm256_cvtepi32_ps(dot), acc);
            summ += _cvtsh_ss(dm[1]) * sy[b];
        }
        out[r] = SUFFIX(hsum)(acc) + summ;
    }
}

static inline __attribute__((always_inline)) void SUFFIX(gemv_signed)(const uint8_t *w, size_t ws, size_t bytes, int bits, int64_t r0, int64_t r1, const block_q8_0 *y, int64_t nb, float *out) {
    float dy[nb];
    for (int64_t b = 0; b < nb; b++) dy[b] = _cvtsh_ss(y[b].d);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *x = w + (size_t)r * ws;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *block = x + (size_t)b * bytes;
            const __m256i q = SUFFIX(signed_quants)(block, bits);
            __m256i dot = _mm256_setzero_si256();
            DOT_U8I8(dot, _mm256_sign_epi8(q, q), _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)y[b].qs), q));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(SUFFIX(block_scale)(block) * dy[b]), _mm256_cvtepi32_ps(dot), acc);
        }
        out[r] = SUFFIX(hsum)(acc);
    }
}

/// Tiles of up to SIGNED_TILE tokens against one row of 32-value blocks, with the activation
/// scales already in floats (`dy`, `sy`: `nb` per token): Q8_0/Q4_0/Q5_0 (`bits` 8, 4, 5; `sy`
/// unused) or Q4_1/Q5_1 (`bits` 4 or 5 with a min, `sy` Q8_1's d·Σq). Per token the arithmetic is
/// the single-token kernels' exactly.
static inline __attribute__((always_inline)) void SUFFIX(tile_blocks)(const uint8_t *x, size_t bytes, int bits, int with_min, const uint8_t *a, size_t astride, const float *dy, const float *sy, int64_t nb, int tn, float *out, int64_t ldo) {
    __m256 acc[SIGNED_TILE];
    float summ[SIGNED_TILE];
    for (int t = 0; t < tn; t++) {
        acc[t] = _mm256_setzero_ps();
        summ[t] = 0;
    }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *block = x + (size_t)b * bytes;
        if (with_min) {
            const __m256i q = SUFFIX(unsigned_quants)(block, bits == 5);
            uint16_t dm[2];
            memcpy(dm, block, 4);
            const float dx = _cvtsh_ss(dm[0]), mx = _cvtsh_ss(dm[1]);
            for (int t = 0; t < tn; t++) {
                const block_q8_1 *y = (const block_q8_1 *)(a + (size_t)t * astride) + b;
                __m256i s = _mm256_setzero_si256();
                DOT_U8I8(s, q, _mm256_loadu_si256((const __m256i *)y->qs));
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * dy[t * nb + b]), _mm256_cvtepi32_ps(s), acc[t]);
                summ[t] += mx * sy[t * nb + b];
            }
        } else {
            const __m256i q = SUFFIX(signed_quants)(block, bits);
            const __m256i magnitude = _mm256_sign_epi8(q, q);
            const float dx = SUFFIX(block_scale)(block);
            for (int t = 0; t < tn; t++) {
                const block_q8_0 *y = (const block_q8_0 *)(a + (size_t)t * astride) + b;
                __m256i s = _mm256_setzero_si256();
                DOT_U8I8(s, magnitude, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)y->qs), q));
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * dy[t * nb + b]), _mm256_cvtepi32_ps(s), acc[t]);
            }
        }
    }
    for (int t = 0; t < tn; t++) out[t * ldo] = SUFFIX(hsum)(acc[t]) + summ[t];
}

/// Prompts of 32-value-block weights: tokens in chunks of 16 whose activation scales are turned
/// into floats once, each row's blocks unpacked once per tile of SIGNED_TILE tokens, and the
/// chunk's activations (a few KiB) kept in L1 while the rows pass. Returns 0, having computed
/// nothing, when the scales' buffer cannot be had (the caller then takes the portable path).
static int SUFFIX(gemm_blocks)(const uint8_t *w, size_t ws, size_t bytes, int bits, int with_min, int64_t r0, int64_t r1, const uint8_t *a, size_t as, int64_t nt, int64_t nb, float *out, int64_t ldo) {
    enum { chunk = 16 };
    float *dy = malloc(sizeof(float) * 2 * chunk * (size_t)nb);
    if (!dy) return 0;
    float *sy = dy + chunk * nb;
    for (int64_t t0 = 0; t0 < nt; t0 += chunk) {
        const int tc = (int)(nt - t0 < chunk ? nt - t0 : chunk);
        for (int t = 0; t < tc; t++)
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *y = a + (size_t)(t0 + t) * as + (size_t)b * (with_min ? sizeof(block_q8_1) : sizeof(block_q8_0));
                uint16_t h[2];
                memcpy(h, y, 4);
                dy[t * nb + b] = _cvtsh_ss(h[0]);
                sy[t * nb + b] = with_min ? _cvtsh_ss(h[1]) : 0;
            }
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *x = w + (size_t)r * ws;
            for (int t = 0; t < tc; t += SIGNED_TILE) {
                const int tn = tc - t < SIGNED_TILE ? tc - t : SIGNED_TILE;
                const uint8_t *at = a + (size_t)(t0 + t) * as;
                float *o = out + (t0 + t) * ldo + r;
                const float *dt = dy + t * nb, *st = sy + t * nb;
                switch (tn) {
#define SLLM_TILE_CASE(n) \
    case n: SUFFIX(tile_blocks)(x, bytes, bits, with_min, at, as, dt, st, nb, n, o, ldo); break;
                    SLLM_TILE_CASES
#undef SLLM_TILE_CASE
                default: break;
                }
            }
        }
    }
    free(dy);
    return 1;
}

#define SLLM_TILED(kind, block)                                                                          \
    static void SUFFIX(gemm_##kind)(const uint8_t *w, size_t ws, int64_t r0, int64_t r1, const uint8_t *a, \
                                    size_t as, int64_t nt, int64_t nb, float *out, int64_t ldo) {        \
        for (int64_t r = r0; r < r1; r++) {                                                              \
            const block *x = (const block *)(w + (size_t)r * ws);                                        \
            int64_t t = 0;                                                                               \
            for (; t + 4 <= nt; t += 4) SUFFIX(row_##kind)(x, a + t * as, as, 4, nb, out + t * ldo + r, ldo); \
            switch (nt - t) {                                                                            \
            case 3: SUFFIX(row_##kind)(x, a + t * as, as, 3, nb, out + t * ldo + r, ldo); break;         \
            case 2: SUFFIX(row_##kind)(x, a + t * as, as, 2, nb, out + t * ldo + r, ldo); break;         \
            case 1: SUFFIX(row_##kind)(x, a + t * as, as, 1, nb, out + t * ldo + r, ldo); break;         \
            default: break;                                                                              \
            }                                                                                            \
        }                                                                                                \
    }

SLLM_TILED(q4_K, block_q4_K)
SLLM_TILED(q5_K, block_q5_K)
SLLM_TILED(q6_K, block_q6_K)
SLLM_TILED(q2_K, block_q2_K)
SLLM_TILED(q3_K, block_q3_K)
SLLM_TILED(iq4_nl, block_iq4_nl)
SLLM_TILED(iq4_xs, block_iq4_xs)
#undef SLLM_TILED

static int SUFFIX(gemm)(int wtype, const void *w, size_t ws, int64_t r0, int64_t r1, const void *a, size_t as,
                        int64_t nt, int64_t k, float *out, int64_t ldo) {
    /* One token, and rows short enough for the gemv's stack array of activation scales: the gemv path. */
    const int gemv = nt == 1 && k / QK <= 4096;
    switch (wtype) {
    case SLLM_Q4_1:
        if (gemv) SUFFIX(gemv_with_min)(w, ws, sizeof(block_q4_1), 0, r0, r1, a, k / QK, out);
        else return SUFFIX(gemm_blocks)(w, ws, sizeof(block_q4_1), 4, 1, r0, r1, a, as, nt, k / QK, out, ldo);
        return 1;
    case SLLM_Q5_1:
        if (gemv) SUFFIX(gemv_with_min)(w, ws, sizeof(block_q5_1), 1, r0, r1, a, k / QK, out);
        else return SUFFIX(gemm_blocks)(w, ws, sizeof(block_q5_1), 5, 1, r0, r1, a, as, nt, k / QK, out, ldo);
        return 1;
    case SLLM_Q5_0:
        if (gemv) SUFFIX(gemv_signed)(w, ws, sizeof(block_q5_0), 5, r0, r1, a, k / QK, out);
        else return SUFFIX(gemm_blocks)(w, ws, sizeof(block_q5_0), 5, 0, r0, r1, a, as, nt, k / QK, out, ldo);
        return 1;
    case SLLM_Q8_0:
        if (gemv) SUFFIX(gemv_signed)(w, ws, sizeof(block_q8_0), 8, r0, r1, a, k / QK, out);
        else return SUFFIX(gemm_blocks)(w, ws, sizeof(block_q8_0), 8, 0, r0, r1, a, as, nt, k / QK, out, ldo);
        return 1;
    case SLLM_Q4_0:
        if (gemv) SUFFIX(gemv_signed)(w, ws, sizeof(block_q4_0), 4, r0, r1, a, k / QK, out);
        else return SUFFIX(gemm_blocks)(w, ws, sizeof(block_q4_0), 4, 0, r0, r1, a, as, nt, k / QK, out, ldo);
        return 1;
    case SLLM_Q4_K: SUFFIX(gemm_q4_K)(w, ws, r0, r1, a, as, nt, k / QKK, out, ldo); return 1;
    case SLLM_Q5_K: SUFFIX(gemm_q5_K)(w, ws, r0, r1, a, as, nt, k / QKK, out, ldo); return 1;
    case SLLM_Q6_K: SUFFIX(gemm_q6_K)(w, ws, r0, r1, a, as, nt, k / QKK, out, ldo); return 1;
    case SLLM_Q2_K: SUFFIX(gemm_q2_K)(w, ws, r0, r1, a, as, nt, k / QKK, out, ldo); return 1;
    case SLLM_Q3_K: SUFFIX(gemm_q3_K)(w, ws, r0, r1, a, as, nt, k / QKK, out, ldo); return 1;
    case SLLM_IQ4_NL: SUFFIX(gemm_iq4_nl)(w, ws, r0, r1, a, as, nt, k / QK, out, ldo); return 1;
    case SLLM_IQ4_XS: SUFFIX(gemm_iq4_xs)(w, ws, r0, r1, a, as, nt, k / QKK, out, ldo); return 1;
    case SLLM_F16:
        for (int64_t r = r0; r < r1; r++)
            for (int64_t t = 0; t < nt; t++)
                out[t * ldo + r] = SUFFIX(dot_f16)((const uint16_t *)((const uint8_t *)w + r * ws), (const uint16_t *)((const uint8_t *)a + t * as), k);
        return 1;
    case SLLM_BF16:
        for (int64_t r = r0; r < r1; r++)
            for (int64_t t = 0; t < nt; t++)
                out[t * ldo + r] = SUFFIX(dot_bf16)((const uint16_t *)((const uint8_t *)w + r * ws), (const uint16_t *)((const uint8_t *)a + t * as), k);
        return 1;
    case SLLM_F32:
        for (int64_t r = r0; r < r1; r++)
            for (int64_t t = 0; t < nt; t++)
                out[t * ldo + r] = SUFFIX(dot_f32)((const float *)((const uint8_t *)w + r * ws), (const float *)((const uint8_t *)a + t * as), k);
        return 1;
    default: return 0;
    }
}

/// The sum of the eight 8-lane accumulators of `ggml_dot_f16`'s vector steps, reduced as GGML
/// reduces its four 16-lane ones (acc[2j] and acc[2j+1] are lanes 0-7 and 8-15 of its j).
static inline double SUFFIX(ggml_f16_lanes_sum)(const __m256 *acc) {
    const __m256 low = _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6]));
    const __m256 high = _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7]));
    const __m256 half = _mm256_add_ps(high, low);
    const __m128 quarter = _mm_add_ps(_mm256_extractf128_ps(half, 1), _mm256_castps256_ps128(half));
    float q[4];
    _mm_storeu_ps(q, quarter);
    return (double)((q[0] + q[2]) + (q[1] + q[3]));
}

/// `ggml_dot_f16` (engine_internal.h) with vectors: each 16-lane accumulator is two 8-lane
/// halves, lane for lane the same arithmetic, so the result is bit-identical.
static inline float SUFFIX(ggml_dot_f16)(const uint16_t *x, const uint16_t *y, int64_t n) {
    __m256 acc[8];
    for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
    const int64_t whole = n & ~(int64_t)63;
    for (int64_t i = 0; i < whole; i += 64)
        for (int j = 0; j < 8; j++)
            acc[j] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i + 8 * j))),
                                     _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(y + i + 8 * j))), acc[j]);
    double sum = SUFFIX(ggml_f16_lanes_sum)(acc);
    for (int64_t i = whole; i < n; i++) sum += (double)(_cvtsh_ss(x[i]) * _cvtsh_ss(y[i]));
    return (float)sum;
}

/// One query against n cached f16 keys and values (see `sllm_attention_f16`).
static void SUFFIX(attention)(const float *q, const uint16_t *k, int64_t kstride, const uint16_t *v, int64_t vstride,
                              int64_t n, int64_t dim, float scale, float *out) {
    uint16_t qh[512], acc[512];
    for (int64_t d = 0; d < dim; d++) qh[d] = _cvtss_sh(q[d], _MM_FROUND_TO_NEAREST_INT);
    memset(acc, 0, (size_t)dim * 2);
    float sum = 0, max = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        const uint16_t *vr = v + i * vstride;
        const float s = SUFFIX(ggml_dot_f16)(k + i * kstride, qh, dim) * scale;
        float ms = 1.0f, vs = 1.0f;
        if (s > max) {
            const float old = max;
            max = s;
            ms = expf(old - max);
            const __m256 m = _mm256_set1_ps(ms);
            int64_t d = 0;
            for (; d + 8 <= dim; d += 8) {
                const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(acc + d)));
                _mm_storeu_si128((__m128i *)(acc + d), _mm256_cvtps_ph(_mm256_mul_ps(x, m), _MM_FROUND_TO_NEAREST_INT));
            }
            for (; d < dim; d++) acc[d] = _cvtss_sh(_cvtsh_ss(acc[d]) * ms, _MM_FROUND_TO_NEAREST_INT);
        } else {
            vs = expf(s - max);
        }
        const __m256 w = _mm256_set1_ps(vs);
        int64_t d = 0;
        for (; d + 8 <= dim; d += 8) {
            const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(vr + d)));
            const __m256 y = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(acc + d)));
            _mm_storeu_si128((__m128i *)(acc + d), _mm256_cvtps_ph(_mm256_fmadd_ps(x, w, y), _MM_FROUND_TO_NEAREST_INT));
        }
        for (; d < dim; d++) acc[d] = _cvtss_sh(fmaf(_cvtsh_ss(vr[d]), vs, _cvtsh_ss(acc[d])), _MM_FROUND_TO_NEAREST_INT);
        sum = fmaf(sum, ms, vs);
    }
    const float inverse = sum == 0.0f ? 0.0f : 1.0f / sum;
    for (int64_t d = 0; d < dim; d++) out[d] = _cvtsh_ss(acc[d]) * inverse;
}

/// Up to `attention_group` queries against the same n keys and values (the query heads that
/// share a KV head): each key and value row is converted from f16 once for all of them, each
/// query once for all keys. Every query's arithmetic is `SUFFIX(attention)`'s alone: the same
/// fused multiply-adds into the same eight accumulators, reduced the same way.
static inline __attribute__((always_inline)) void SUFFIX(attention_queries)(const float *q, int64_t qstride, const int nq, const uint16_t *k, int64_t kstride,
                                    const uint16_t *v, int64_t vstride, int64_t n, int64_t dim, float scale,
                                    float *out, int64_t ostride) {
    float qf[attention_group][512];
    uint16_t acc[attention_group][512];
    float sum[attention_group], max[attention_group];
    for (int j = 0; j < nq; j++) {
        // The query rounded to f16, as GGML's dot product reads it, back in floats once.
        for (int64_t d = 0; d < dim; d++) qf[j][d] = _cvtsh_ss(_cvtss_sh(q[j * qstride + d], _MM_FROUND_TO_NEAREST_INT));
        memset(acc[j], 0, (size_t)dim * 2);
        sum[j] = 0;
        max[j] = -INFINITY;
    }
    const int64_t whole = dim & ~(int64_t)63;
    for (int64_t i = 0; i < n; i++) {
        const uint16_t *kr = k + i * kstride, *vr = v + i * vstride;
        // Accumulator g of a query sums lanes 8g…8g+7 of every 64-value step, as in
        // `ggml_dot_f16`; it is built over all steps before the next one starts.
        __m256 lanes[attention_group][8];
        for (int g = 0; g < 8; g++) {
            __m256 part[attention_group];
            for (int j = 0; j < nq; j++) part[j] = _mm256_setzero_ps();
            for (int64_t s = 0; s < whole; s += 64) {
                const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kr + s + 8 * g)));
                for (int j = 0; j < nq; j++) part[j] = _mm256_fmadd_ps(x, _mm256_loadu_ps(qf[j] + s + 8 * g), part[j]);
            }
            for (int j = 0; j < nq; j++) lanes[j][g] = part[j];
        }
        float ms[attention_group], vs[attention_group];
        for (int j = 0; j < nq; j++) {
            double total = SUFFIX(ggml_f16_lanes_sum)(lanes[j]);
            for (int64_t d = whole; d < dim; d++) total += (double)(_cvtsh_ss(kr[d]) * qf[j][d]);
            const float s = (float)total * scale;
            ms[j] = 1.0f;
            vs[j] = 1.0f;
            if (s > max[j]) {
                const float old = max[j];
                max[j] = s;
                ms[j] = expf(old - max[j]);
                const __m256 m = _mm256_set1_ps(ms[j]);
                int64_t d = 0;
                for (; d + 8 <= dim; d += 8) {
                    const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(acc[j] + d)));
                    _mm_storeu_si128((__m128i *)(acc[j] + d), _mm256_cvtps_ph(_mm256_mul_ps(x, m), _MM_FROUND_TO_NEAREST_INT));
                }
                for (; d < dim; d++) acc[j][d] = _cvtss_sh(_cvtsh_ss(acc[j][d]) * ms[j], _MM_FROUND_TO_NEAREST_INT);
            } else {
                vs[j] = expf(s - max[j]);
            }
            sum[j] = fmaf(sum[j], ms[j], vs[j]);
        }
        int64_t d = 0;
        for (; d + 8 <= dim; d += 8) {
            const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(vr + d)));
            for (int j = 0; j < nq; j++) {
                const __m256 y = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(acc[j] + d)));
                _mm_storeu_si128((__m128i *)(acc[j] + d), _mm256_cvtps_ph(_mm256_fmadd_ps(x, _mm256_set1_ps(vs[j]), y), _MM_FROUND_TO_NEAREST_INT));
            }
        }
        for (; d < dim; d++)
            for (int j = 0; j < nq; j++)
                acc[j][d] = _cvtss_sh(fmaf(_cvtsh_ss(vr[d]), vs[j], _cvtsh_ss(acc[j][d])), _MM_FROUND_TO_NEAREST_INT);
    }
    for (int j = 0; j < nq; j++) {
        const float inverse = sum[j] == 0.0f ? 0.0f : 1.0f / sum[j];
        for (int64_t d = 0; d < dim; d++) out[j * ostride + d] = _cvtsh_ss(acc[j][d]) * inverse;
    }
}

static void SUFFIX(attention_group)(const float *q, int64_t qstride, int nq, const uint16_t *k, int64_t kstride,
                                    const uint16_t *v, int64_t vstride, int64_t n, int64_t dim, float scale,
                                    float *out, int64_t ostride) {
    switch (nq) {
    case 4: SUFFIX(attention_queries)(q, qstride, 4, k, kstride, v, vstride, n, dim, scale, out, ostride); break;
    case 3: SUFFIX(attention_queries)(q, qstride, 3, k, kstride, v, vstride, n, dim, scale, out, ostride); break;
    case 2: SUFFIX(attention_queries)(q, qstride, 2, k, kstride, v, vstride, n, dim, scale, out, ostride); break;
    default: SUFFIX(attention_queries)(q, qstride, 1, k, kstride, v, vstride, n, dim, scale, out, ostride); break;
    }
}
