#ifndef SLLM_ENGINE_KERNELS_H
#define SLLM_ENGINE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Weight and activation types, numbered like GGML's `ggml_type` (and sllm's `DType`).
enum {
    SLLM_F32 = 0,
    SLLM_F16 = 1,
    SLLM_Q4_0 = 2,
    SLLM_Q4_1 = 3,
    SLLM_Q5_0 = 6,
    SLLM_Q5_1 = 7,
    SLLM_Q8_0 = 8,
    SLLM_Q8_1 = 9,
    SLLM_Q2_K = 10,
    SLLM_Q3_K = 11,
    SLLM_Q4_K = 12,
    SLLM_Q5_K = 13,
    SLLM_Q6_K = 14,
    SLLM_Q8_K = 15,
    SLLM_IQ4_NL = 20,
    SLLM_IQ4_XS = 23,
    SLLM_BF16 = 30,
};

/// The type activations are converted to before a dot product with weights of `weightType`
/// (GGML's `vec_dot_type`): Q8_1 for Q4_1/Q5_1, Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL, Q8_K for K-quants and IQ4_XS, and the
/// weight's own type for F16/BF16/F32. -1 for a weight type the kernels do not support.
int sllm_activation_type(int weightType);

/// Bytes of one row of `count` values of `type` (`count` a multiple of the block size).
size_t sllm_row_bytes(int type, int64_t count);

/// Converts `count` floats into one row of `type` (an activation type), exactly as GGML's CPU
/// backend does (same rounding, same scales).
void sllm_quantize_row(int type, const float *x, void *y, int64_t count);

/// Expands one row of `count` values of `type` (weights or activations) into floats.
void sllm_dequantize_row(int type, const void *x, float *y, int64_t count);

/// out[t * ldo + r] = dot(weight row r, activation row t) for r in [r0, r1), t in [0, tokens).
/// Weight rows are `wstride` bytes apart, activation rows (already in
/// `sllm_activation_type(wtype)`) `astride` bytes apart; each row has `k` values.
void sllm_gemm(int wtype, const void *w, size_t wstride, int64_t r0, int64_t r1,
               const void *a, size_t astride, int64_t tokens, int64_t k, float *out, int64_t ldo);

/// The straightforward scalar version of `sllm_gemm`, for tests.
void sllm_gemm_reference(int wtype, const void *w, size_t wstride, int64_t r0, int64_t r1,
                         const void *a, size_t astride, int64_t tokens, int64_t k, float *out, int64_t ldo);

/// Which vector path `sllm_gemm` uses on this CPU: 2 = AVX-512 VNNI, 1 = AVX2/FMA, 0 = portable C.
int sllm_kernel_level(void);
/// `sllm_gemm` on a given path (at most `sllm_kernel_level()`), for tests.
void sllm_gemm_at_level(int level, int wtype, const void *w, size_t wstride, int64_t r0, int64_t r1,
                        const void *a, size_t astride, int64_t tokens, int64_t k, float *out, int64_t ldo);

/// out[i] = silu(gate[i]) * up[i], with GGML's vectorised exp (so results match llama.cpp's bits).
void sllm_swiglu(const float *gate, const float *up, float *out, int64_t count);

/// out[i] = gelu(gate[i]) * up[i] as GGML computes GeGLU: GELU's tanh approximation looked up
/// by the f16 value of gate[i] and rounded to f16 (GGML's table), 0 below −10, identity above 10.
void sllm_geglu(const float *gate, const float *up, float *out, int64_t count);

/// Σ exp(x[i] − max) (for log-probabilities), vectorised where the CPU allows.
float sllm_sum_exp(const float *x, int64_t count, float max);

// MARK: - f16 helpers

void sllm_f32_to_f16(const float *x, uint16_t *y, int64_t count);
void sllm_f16_to_f32(const uint16_t *x, float *y, int64_t count);

/// One query against `n` cached keys/values (f16 rows of `dim` values `kstride`/`vstride`
/// elements apart), with GGML's CPU flash-attention arithmetic: q rounded to f16, f16 dot
/// products accumulated in f32, scores scaled by `scale`, an online softmax, and the value sum
/// kept in f16. Writes `dim` floats to `out`.
void sllm_attention_f16(const float *q, const uint16_t *k, int64_t kstride, const uint16_t *v,
                        int64_t vstride, int64_t n, int64_t dim, float scale, float *out);

/// `sllm_attention_f16` for `count` queries (rows `qstride` floats apart, outputs `ostride`
/// apart) against the same keys and values, as the query heads that share a KV head are: each
/// result is bit for bit what `sllm_attention_f16` gives that query alone, and each key and value
/// row is converted once for up to four queries.
void sllm_attention_f16_group(const float *q, int64_t qstride, int64_t count, const uint16_t *k, int64_t kstride,
                              const uint16_t *v, int64_t vstride, int64_t n, int64_t dim, float scale, float *out,
                              int64_t ostride);

// MARK: - Thread pool

/// A fixed set of worker threads that run one task at a time; workers spin briefly between
/// tasks (a forward pass issues hundreds of short tasks) and then sleep on a futex.
typedef struct sllm_pool sllm_pool;
typedef void (*sllm_task_fn)(void *context, int thread, int threads);

/// `threads` counts the caller: 1 creates no worker.
sllm_pool *sllm_pool_create(int threads);
void sllm_pool_destroy(sllm_pool *pool);
int sllm_pool_threads(const sllm_pool *pool);
/// Runs `fn(context, i, threads)` for every i in 0..<threads (the caller runs i = 0) and returns
/// when all have finished.
void sllm_pool_run(sllm_pool *pool, sllm_task_fn fn, void *context);
/// What a pool worker does when it finds itself on `cpu` (its caller's): moves the calling thread
/// to another CPU of its affinity mask, leaving the mask as it was. Returns the CPU it runs on
/// afterwards (for tests).
int sllm_pool_step_off(int cpu);
/// The CPU the calling thread runs on, and how many its affinity mask allows (for tests).
int sllm_current_cpu(void);
int sllm_allowed_cpus(void);
/// `sllm_gemm` with rows split evenly across the pool's threads.
void sllm_pool_gemm(sllm_pool *pool, int wtype, const void *w, size_t wstride, int64_t rows,
                    const void *a, size_t astride, int64_t tokens, int64_t k, float *out, int64_t ldo);

#ifdef __cplusplus
}
#endif

#endif
