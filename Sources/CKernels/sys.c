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

#include <errno.h>
#include <sys/mman.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

int sllm_populate_write(void *addr, size_t length) {
    return madvise(addr, length, MADV_POPULATE_WRITE) == 0 ? 0 : errno;
}

void sllm_touch_pages_write(void *addr, size_t length) {
    long page = sysconf(_SC_PAGESIZE);
    for (size_t at = 0; at < length; at += (size_t)page) {
        // A compare-and-swap of the value with itself: a write access the compiler may not drop
        // (an idempotent fetch_or would become a plain load, which maps the zero page).
        unsigned char *byte = (unsigned char *)addr + at;
        unsigned char value = __atomic_load_n(byte, __ATOMIC_RELAXED);
        __atomic_compare_exchange_n(byte, &value, value, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    }
}

int sllm_fallocate(int fd, int64_t offset, int64_t length) {
    return fallocate(fd, 0, (off_t)offset, (off_t)length) == 0 ? 0 : errno;
}

uint64_t sllm_atomic_add_u64(uint64_t *counter, uint64_t value) {
    return __atomic_add_fetch(counter, value, __ATOMIC_RELAXED);
}

uint64_t sllm_atomic_load_u64(const uint64_t *counter) {
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}

// MARK: - Descriptors and crashes

#include <dirent.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

int sllm_mark_descriptors_cloexec(void) {
    // /proc/self/fd lists exactly the open descriptors; the directory's own is skipped.
    DIR *directory = opendir("/proc/self/fd");
    if (directory == NULL) return -1;
    int own = dirfd(directory);
    int marked = 0;
    struct dirent *entry;
    while ((entry = readdir(directory)) != NULL) {
        if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
        int fd = atoi(entry->d_name);
        if (fd <= 2 || fd == own) continue;
        int flags = fcntl(fd, F_GETFD);
        if (flags >= 0 && !(flags & FD_CLOEXEC) && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) == 0) marked++;
    }
    closedir(directory);
    return marked;
}

static const int crash_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGABRT};
#define CRASH_SIGNAL_COUNT (sizeof(crash_signals) / sizeof(crash_signals[0]))
static struct sigaction previous_actions[CRASH_SIGNAL_COUNT];
static int descriptor_limit = 65536;

static void write_text(const char *text) {
    ssize_t ignored = write(2, text, strlen(text));
    (void)ignored;
}

// Async-signal-safe only: fstat, close, write, sigaction, raise.
static void on_crash(int signal, siginfo_t *info, void *context) {
    (void)context;
    // Close every socket (the listener above all) before anything else runs: the runtime's
    // backtracer is a child process that would inherit them and hold the port for as long as it
    // symbolicates. Files and pipes stay open; the backtracer may need them.
    for (int fd = 3; fd < descriptor_limit; fd++) {
        struct stat status;
        if (fstat(fd, &status) == 0 && S_ISSOCK(status.st_mode)) close(fd);
    }
    write_text("sllm: fatal signal ");
    char number[4] = {(char)('0' + signal / 10 % 10), (char)('0' + signal % 10), '\n', 0};
    write_text(signal >= 10 ? number : number + 1);
    write_text("sllm: sockets closed; the crash report follows\n");
    for (size_t i = 0; i < CRASH_SIGNAL_COUNT; i++) {
        if (crash_signals[i] == signal) sigaction(signal, &previous_actions[i], NULL);
    }
    // A fault re-executes its instruction and reaches the previous handler (the Swift runtime's
    // backtracer) with the real context; a signal that was sent (abort) is sent again.
    if (info == NULL || info->si_code <= 0) raise(signal);
}

int sllm_install_crash_socket_closer(void) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur > 0) {
        descriptor_limit = limit.rlim_cur < (1u << 20) ? (int)limit.rlim_cur : (1 << 20);
    }
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_sigaction = on_crash;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    for (size_t i = 0; i < CRASH_SIGNAL_COUNT; i++) {
        if (sigaction(crash_signals[i], &action, &previous_actions[i]) != 0) return -1;
    }
    return 0;
}

// MARK: - Background threads

#include <sys/resource.h>

int sllm_lower_thread_priority(int niceness) {
    // PRIO_PROCESS with a thread id applies to that thread alone on Linux.
    return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), niceness) == 0 ? 0 : errno;
}
