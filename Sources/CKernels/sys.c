#define _GNU_SOURCE
#include "ckernels.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

int sllm_rename_exchange(const char *from, const char *to) {
    return (int)syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, RENAME_EXCHANGE);
}

int sllm_o_direct(void) { return O_DIRECT; }

uint64_t sllm_atomic_add_u64(uint64_t *counter, uint64_t value) {
    return __atomic_add_fetch(counter, value, __ATOMIC_RELAXED);
}

uint64_t sllm_atomic_load_u64(const uint64_t *counter) {
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}
