#ifndef SLLM_CKERNELS_H
#define SLLM_CKERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "sllm_engine.h"

#ifdef __cplusplus
extern "C" {
#endif

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) of `length` bytes, continuing from `crc`
/// (pass 0 to start). Uses the SSE4.2 `crc32` instruction when the CPU has it, else slicing-by-8.
uint32_t sllm_crc32c(uint32_t crc, const void *data, size_t length);

/// CRC-32C of each `blockSize`-byte block of `data[0..<length]` (the last block may be shorter),
/// written to `out[i]`. Independent blocks are hashed three at a time so the `crc32` unit's
/// three-cycle latency is hidden: about three times the throughput of one serial stream.
void sllm_crc32c_blocks(const void *data, size_t length, size_t blockSize, uint32_t *out);

/// crc(A || B) from crc(A), crc(B) and the length of B.
uint32_t sllm_crc32c_combine(uint32_t crc1, uint32_t crc2, size_t length2);

/// The table-driven version, for tests that compare the two paths.
uint32_t sllm_crc32c_software(uint32_t crc, const void *data, size_t length);

/// 1 when the hardware CRC path is in use.
int sllm_crc32c_hardware(void);

/// Atomically swaps two paths (`renameat2` with `RENAME_EXCHANGE`). Returns 0 or -1 with errno.
int sllm_rename_exchange(const char *from, const char *to);

/// The platform's `O_DIRECT` open flag (hidden from Swift's Glibc module).
int sllm_o_direct(void);

/// Atomic add and load of a 64-bit counter in memory shared between processes (an mmapped file).
uint64_t sllm_atomic_add_u64(uint64_t *counter, uint64_t value);
uint64_t sllm_atomic_load_u64(const uint64_t *counter);

/// Sets FD_CLOEXEC on every open descriptor above 2 (sockets the networking library opened
/// without it included), so no child process inherits them. Returns how many it marked, or -1.
int sllm_mark_descriptors_cloexec(void);

/// On a fatal signal, closes every socket first (the listening one above all) and then hands
/// the signal to the handler that was installed before (the Swift runtime's backtracer), so a
/// crash frees the port at once while its report is still written. Returns 0, or -1.
int sllm_install_crash_socket_closer(void);

/// Allocates and maps, writable, every page of [addr, addr + length) without touching its
/// contents (`madvise(MADV_POPULATE_WRITE)`, Linux 5.14+): pages that exist keep their data.
/// Returns 0, or the errno (EINVAL where the kernel lacks it).
int sllm_populate_write(void *addr, size_t length);

/// The same by touching every page with an atomic no-op write (a compare-and-swap of a byte with itself), for kernels
/// without it: data, even one a concurrent writer is storing, is never changed.
void sllm_touch_pages_write(void *addr, size_t length);

/// Allocates the pages of [offset, offset + length) of a file (`fallocate`, mode 0) without
/// mapping them. Returns 0 or the errno.
int sllm_fallocate(int fd, int64_t offset, int64_t length);

/// Sets the calling thread's nice value (higher runs later); 0 or errno. Raising it back needs
/// privileges, so only threads of their own call it.
int sllm_lower_thread_priority(int niceness);

#ifdef __cplusplus
}
#endif

#endif
