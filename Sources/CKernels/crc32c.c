// CRC-32C kernels. The hot loop uses the SSE4.2 crc32 instruction (one 8-byte step per cycle of
// throughput, three cycles of latency); hashing three independent blocks in one loop keeps the
// unit busy. A slicing-by-8 table version is the portable fallback and the reference in tests.
#include "ckernels.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <nmmintrin.h>
#endif

static uint32_t table[8][256];
static pthread_once_t tableOnce = PTHREAD_ONCE_INIT;
static pthread_once_t hardwareOnce = PTHREAD_ONCE_INIT;
static int hardware = 0;

static void buildTable(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : (c >> 1);
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++) table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xFF];
    }
}

static uint32_t softwareCRC(uint32_t crc, const uint8_t *p, size_t n) {
    pthread_once(&tableOnce, buildTable);
    crc = ~crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        v ^= crc;
        crc = table[7][v & 0xFF] ^ table[6][(v >> 8) & 0xFF] ^ table[5][(v >> 16) & 0xFF] ^
              table[4][(v >> 24) & 0xFF] ^ table[3][(v >> 32) & 0xFF] ^ table[2][(v >> 40) & 0xFF] ^
              table[1][(v >> 48) & 0xFF] ^ table[0][v >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xFF];
    return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t hardwareCRC(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = ~crc;
    while (n && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        n -= 8;
    }
    while (n--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}

__attribute__((target("sse4.2"))) static void hardwareThreeSeeded(const uint8_t *a, const uint8_t *b, const uint8_t *c,
                                                                 size_t n, uint32_t seed, uint32_t *out) {
    uint64_t x = ~seed, y = 0xFFFFFFFFu, z = 0xFFFFFFFFu;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t u, v, w;
        memcpy(&u, a + i, 8);
        memcpy(&v, b + i, 8);
        memcpy(&w, c + i, 8);
        x = _mm_crc32_u64(x, u);
        y = _mm_crc32_u64(y, v);
        z = _mm_crc32_u64(z, w);
    }
    for (; i < n; i++) {
        x = _mm_crc32_u8((uint32_t)x, a[i]);
        y = _mm_crc32_u8((uint32_t)y, b[i]);
        z = _mm_crc32_u8((uint32_t)z, c[i]);
    }
    out[0] = ~(uint32_t)x;
    out[1] = ~(uint32_t)y;
    out[2] = ~(uint32_t)z;
}

static void hardwareThree(const uint8_t *a, const uint8_t *b, const uint8_t *c, size_t n, uint32_t *out) {
    hardwareThreeSeeded(a, b, c, n, 0, out);
}
#endif

// CRC combination (the GF(2) matrix method of zlib's crc32_combine, for the Castagnoli
// polynomial): crc(A || B) from crc(A), crc(B) and the length of B.
static uint32_t gf2Times(const uint32_t *matrix, uint32_t vector) {
    uint32_t sum = 0;
    while (vector) {
        if (vector & 1) sum ^= *matrix;
        vector >>= 1;
        matrix++;
    }
    return sum;
}

static void gf2Square(uint32_t *square, const uint32_t *matrix) {
    for (int n = 0; n < 32; n++) square[n] = gf2Times(matrix, matrix[n]);
}

uint32_t sllm_crc32c_combine(uint32_t crc1, uint32_t crc2, size_t length2) {
    if (length2 == 0) return crc1;
    uint32_t even[32], odd[32];
    odd[0] = 0x82F63B78u;  // the operator for one zero bit
    uint32_t row = 1;
    for (int n = 1; n < 32; n++) {
        odd[n] = row;
        row <<= 1;
    }
    gf2Square(even, odd);  // two zero bits
    gf2Square(odd, even);  // four zero bits
    do {
        gf2Square(even, odd);  // first pass: one zero byte
        if (length2 & 1) crc1 = gf2Times(even, crc1);
        length2 >>= 1;
        if (length2 == 0) break;
        gf2Square(odd, even);
        if (length2 & 1) crc1 = gf2Times(odd, crc1);
        length2 >>= 1;
    } while (length2 != 0);
    return crc1 ^ crc2;
}

static void detectHardware(void) {
#if defined(__x86_64__)
    unsigned eax, ebx, ecx, edx;
    hardware = (__get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_SSE4_2)) ? 1 : 0;
#endif
}

int sllm_crc32c_hardware(void) {
    pthread_once(&hardwareOnce, detectHardware);
    return hardware;
}

uint32_t sllm_crc32c_software(uint32_t crc, const void *data, size_t length) {
    return softwareCRC(crc, (const uint8_t *)data, length);
}

uint32_t sllm_crc32c(uint32_t crc, const void *data, size_t length) {
#if defined(__x86_64__)
    if (sllm_crc32c_hardware()) {
        const uint8_t *p = (const uint8_t *)data;
        // Long buffers: three interleaved stripes (the unit's latency hidden), then combined.
        if (length >= 3 * 262144) {
            size_t stripe = (length / 3) & ~(size_t)7;
            uint32_t out[3];
            hardwareThreeSeeded(p, p + stripe, p + 2 * stripe, stripe, crc, out);
            uint32_t combined = sllm_crc32c_combine(sllm_crc32c_combine(out[0], out[1], stripe), out[2], stripe);
            return hardwareCRC(combined, p + 3 * stripe, length - 3 * stripe);
        }
        return hardwareCRC(crc, p, length);
    }
#endif
    return softwareCRC(crc, (const uint8_t *)data, length);
}

void sllm_crc32c_blocks(const void *data, size_t length, size_t blockSize, uint32_t *out) {
    const uint8_t *p = (const uint8_t *)data;
    if (blockSize == 0) return;
    size_t full = length / blockSize;
    size_t i = 0;
#if defined(__x86_64__)
    if (sllm_crc32c_hardware()) {
        for (; i + 3 <= full; i += 3) {
            hardwareThree(p + i * blockSize, p + (i + 1) * blockSize, p + (i + 2) * blockSize, blockSize, out + i);
        }
    }
#endif
    for (; i < full; i++) out[i] = sllm_crc32c(0, p + i * blockSize, blockSize);
    size_t tail = length - full * blockSize;
    if (tail) out[full] = sllm_crc32c(0, p + full * blockSize, tail);
}
