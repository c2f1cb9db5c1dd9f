import Checkpoint
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A file in shared memory (tmpfs, normally under `/dev/shm`) mapped into this process.
///
/// Invariants: `base` is page-aligned and valid for `byteCount` bytes until deinit unmaps it.
/// Unlinking the file (eviction) does not invalidate an existing mapping, so memory handed to
/// an engine stays valid for as long as the mapping lives.
final class UnsafeSharedMemoryFile: @unchecked Sendable {
    // Sendable: the mapping is immutable after init; writers and readers coordinate through the
    // loader (writes happen before the entry is published as complete).
    let base: UnsafeMutableRawPointer
    let byteCount: Int
    let path: String

    /// Creates (or truncates) `path` with `byteCount` bytes and maps it read-write.
    static func create(_ path: String, byteCount: Int) throws -> UnsafeSharedMemoryFile {
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError(.io, "cannot create \(path): \(Errno(errno, operation: "open"))") }
        defer { close(fd) }
        guard ftruncate(fd, off_t(byteCount)) == 0 else {
            throw StoreError(.io, "cannot size \(path) to \(byteCount) bytes: \(Errno(errno, operation: "ftruncate"))")
        }
        // A new slab is about to be written whole by a load: allocating and mapping every page
        // in one call costs far less than a page fault per 4 KiB during the reads.
        return try UnsafeSharedMemoryFile(fd: fd, path: path, byteCount: byteCount, writable: true, populate: true)
    }

    /// Maps `path` read-write, creating it (zero-filled, `byteCount` bytes) when missing and
    /// keeping what another process already wrote.
    static func openOrCreate(_ path: String, byteCount: Int) throws -> UnsafeSharedMemoryFile {
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError(.io, "cannot open \(path): \(Errno(errno, operation: "open"))") }
        defer { close(fd) }
        if (FileSystem.fileSize(path) ?? 0) < Int64(byteCount) {
            guard ftruncate(fd, off_t(byteCount)) == 0 else {
                throw StoreError(.io, "cannot size \(path) to \(byteCount) bytes: \(Errno(errno, operation: "ftruncate"))")
            }
        }
        return try UnsafeSharedMemoryFile(fd: fd, path: path, byteCount: byteCount, writable: true)
    }

    /// Maps an existing file read-write; its size must be `byteCount`.
    static func openWritable(_ path: String, byteCount: Int) throws -> UnsafeSharedMemoryFile {
        let fd = Glibc.open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw StoreError(.notFound, "cannot open \(path): \(Errno(errno, operation: "open"))") }
        defer { close(fd) }
        guard FileSystem.fileSize(path) == Int64(byteCount) else {
            throw StoreError(.io, "\(path) does not have the expected \(byteCount) bytes")
        }
        return try UnsafeSharedMemoryFile(fd: fd, path: path, byteCount: byteCount, writable: true)
    }

    private init(fd: Int32, path: String, byteCount: Int, writable: Bool, populate: Bool = false) throws {
        self.path = path
        self.byteCount = byteCount
        if byteCount == 0 {
            base = UnsafeMutableRawPointer(bitPattern: 4096)!
            return
        }
        let protection = writable ? PROT_READ | PROT_WRITE : PROT_READ
        guard let pointer = mmap(nil, byteCount, protection, MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, 0), pointer != MAP_FAILED else {
            throw StoreError(.io, "cannot map \(path): \(Errno(errno, operation: "mmap"))")
        }
        base = pointer
    }

    deinit {
        if byteCount > 0 { munmap(base, byteCount) }
    }
}

/// Anonymous memory for a load that is not cached (the model is larger than the DRAM budget).
final class UnsafeAnonymousMemory: @unchecked Sendable {
    // Sendable: as above, the mapping is fixed after init.
    let base: UnsafeMutableRawPointer
    let byteCount: Int

    init(byteCount: Int) throws {
        self.byteCount = byteCount
        guard let pointer = mmap(nil, max(byteCount, 4096), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
            pointer != MAP_FAILED
        else {
            throw StoreError(.io, "cannot allocate \(byteCount) bytes: \(Errno(errno, operation: "mmap"))")
        }
        base = pointer
    }

    deinit { munmap(base, max(byteCount, 4096)) }
}
