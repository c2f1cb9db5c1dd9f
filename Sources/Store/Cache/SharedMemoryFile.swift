import CKernels
import Checkpoint
import Foundation
import Synchronization

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
    /// Whether every page is known to be allocated and mapped in this process (set by whoever
    /// populated it), so nothing populates it twice.
    let populated = Atomic<Bool>(false)

    /// Creates (or truncates) `path` with `byteCount` bytes and maps it read-write. Its pages are
    /// allocated on first write, or ahead of the writes by `MemoryPopulation.populate` (a load
    /// does that in parallel with its reads, not before them).
    static func create(_ path: String, byteCount: Int) throws -> UnsafeSharedMemoryFile {
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError.system("cannot create \(path)", "open") }
        defer { close(fd) }
        guard ftruncate(fd, off_t(byteCount)) == 0 else {
            throw StoreError.system("cannot size \(path) to \(byteCount) bytes", "ftruncate")
        }
        return try UnsafeSharedMemoryFile(fd: fd, path: path, byteCount: byteCount, writable: true)
    }

    /// Maps `path` read-write, creating it (zero-filled, `byteCount` bytes) when missing and
    /// keeping what another process already wrote.
    static func openOrCreate(_ path: String, byteCount: Int) throws -> UnsafeSharedMemoryFile {
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError.system("cannot open \(path)", "open") }
        defer { close(fd) }
        if (FileSystem.fileSize(path) ?? 0) < Int64(byteCount) {
            guard ftruncate(fd, off_t(byteCount)) == 0 else {
                throw StoreError.system("cannot size \(path) to \(byteCount) bytes", "ftruncate")
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

    /// Maps the files at `paths`, each `slabBytes` long, one after another into one contiguous
    /// read-write range, so a tensor larger than a slab lies in pooled slabs of the standard size.
    /// The range is reserved first (`PROT_NONE`) and each file mapped over its part (`MAP_FIXED`),
    /// so nothing else can land in a gap.
    static func mapContiguous(_ paths: [String], slabBytes: Int) throws -> UnsafeSharedMemoryFile {
        precondition(!paths.isEmpty && slabBytes > 0 && slabBytes % 4096 == 0)
        let total = paths.count * slabBytes
        guard let region = mmap(nil, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
            region != MAP_FAILED
        else {
            throw StoreError.system("cannot reserve \(total) bytes of address space", "mmap")
        }
        for (i, path) in paths.enumerated() {
            let fd = Glibc.open(path, O_RDWR | O_CLOEXEC)
            guard fd >= 0 else {
                munmap(region, total)
                throw StoreError(.notFound, "cannot open \(path): \(Errno(errno, operation: "open"))")
            }
            defer { close(fd) }
            guard FileSystem.fileSize(path) == Int64(slabBytes) else {
                munmap(region, total)
                throw StoreError(.io, "\(path) does not have the expected \(slabBytes) bytes")
            }
            let part = region + i * slabBytes
            guard let pointer = mmap(part, slabBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0),
                pointer == part
            else {
                munmap(region, total)
                throw StoreError.system("cannot map \(path)", "mmap")
            }
        }
        return UnsafeSharedMemoryFile(mapped: region, byteCount: total, path: paths.joined(separator: "+"))
    }

    private init(mapped: UnsafeMutableRawPointer, byteCount: Int, path: String) {
        base = mapped
        self.byteCount = byteCount
        self.path = path
    }

    private init(fd: Int32, path: String, byteCount: Int, writable: Bool, populate: Bool = false) throws {
        self.path = path
        self.byteCount = byteCount
        if byteCount == 0 {
            base = UnsafeMutableRawPointer(bitPattern: 4096)!
            return
        }
        let protection = writable ? PROT_READ | PROT_WRITE : PROT_READ
        guard let pointer = mmap(nil, byteCount, protection, MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, 0),
            pointer != MAP_FAILED
        else {
            throw StoreError.system("cannot map \(path)", "mmap")
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
            throw StoreError.system("cannot allocate \(byteCount) bytes", "mmap")
        }
        base = pointer
    }

    deinit { munmap(base, max(byteCount, 4096)) }
}

/// Setting up fresh shared memory: allocating and mapping its pages before a load writes them,
/// so the load's reads do not stall on a page fault per 4 KiB. On this VM one thread populates
/// at about 1.2 GB/s; `sllm bench populate` compares the ways of doing it.
public enum MemoryPopulation {
    /// Pieces handed to threads: large enough that a call's fixed cost is nothing, small enough
    /// that the threads stay balanced.
    static let piece = 8 << 20

    /// Populates [base, base + count) writable with `threads` threads, each taking the next
    /// `piece` in turn (`madvise(MADV_POPULATE_WRITE)`, else an atomic touch of every page).
    /// Pages that exist keep their data, so it is safe on memory a load is writing.
    public static func populate(_ base: UnsafeMutableRawPointer, byteCount: Int, threads: Int) {
        guard byteCount > 0 else { return }
        let pieces = Pieces(base, byteCount: byteCount)
        DispatchQueue.concurrentPerform(iterations: max(1, min(threads, pieces.count))) { _ in
            pieces.populateUntilDone()
        }
    }

    /// The pieces of one range, handed out in turn to whichever thread asks next.
    final class Pieces: Sendable {
        let count: Int
        private let address: UInt
        private let byteCount: Int
        private let next = Atomic<Int>(0)

        init(_ base: UnsafeMutableRawPointer, byteCount: Int) {
            address = UInt(bitPattern: base)
            self.byteCount = byteCount
            count = (byteCount + piece - 1) / piece
        }

        /// Populates pieces until none is left.
        func populateUntilDone() {
            while true {
                let index = next.add(1, ordering: .relaxed).oldValue
                guard index < count else { return }
                let start = UnsafeMutableRawPointer(bitPattern: address + UInt(index * piece))!
                let length = min(piece, byteCount - index * piece)
                // Touched by hand only where the kernel lacks the call: another failure (EFAULT
                // for a file truncated behind the mapping, ENOMEM) would be a SIGBUS when touched.
                if sllm_populate_write(start, length) == EINVAL { sllm_touch_pages_write(start, length) }
            }
        }
    }
}

extension MemoryPopulation {
    /// `populate` for background work: the calling thread and `threads - 1` threads of its own,
    /// each at nice `niceness`, so the work runs on what other work leaves of the cores. The
    /// calling thread's priority is lowered for good (call it from a thread of its own).
    static func populateInBackground(_ base: UnsafeMutableRawPointer, byteCount: Int, threads: Int, niceness: Int32) {
        guard byteCount > 0 else { return }
        let pieces = Pieces(base, byteCount: byteCount)
        let work: @Sendable () -> Void = {
            _ = sllm_lower_thread_priority(niceness)
            pieces.populateUntilDone()
        }
        let helpers = max(0, min(threads, pieces.count) - 1)
        let done = DispatchSemaphore(value: 0)
        for _ in 0..<helpers {
            Thread {
                work()
                done.signal()
            }.start()
        }
        work()
        for _ in 0..<helpers { done.wait() }
    }
}

extension MemoryPopulation {
    /// A way of setting up a fresh tmpfs file of memory for writing, as `sllm bench populate`
    /// compares them.
    public enum Method: Sendable, CaseIterable, CustomStringConvertible {
        /// `mmap(MAP_POPULATE)`: one thread, in the kernel (what slabs used before).
        case mapPopulate
        /// `madvise(MADV_POPULATE_WRITE)` on the mapping from `threads` threads.
        case madvise(threads: Int)
        /// `fallocate` of the file's pages from `threads` threads, then a populated mapping.
        case fallocate(threads: Int)
        /// An atomic no-op write to every page from `threads` threads.
        case touch(threads: Int)
        /// Mapping pages that already exist (a pooled slab in a new process), `mmap(MAP_POPULATE)`.
        case remapExisting

        public static var allCases: [Method] {
            [
                .mapPopulate, .madvise(threads: 1), .madvise(threads: 2), .madvise(threads: 4), .fallocate(threads: 1),
                .fallocate(threads: 2),
                .touch(threads: 2), .remapExisting,
            ]
        }

        public var description: String {
            switch self {
            case .mapPopulate: "mmap MAP_POPULATE, 1 thread"
            case .madvise(let threads): "madvise POPULATE_WRITE, \(threads) thread\(threads == 1 ? "" : "s")"
            case .fallocate(let threads): "fallocate, \(threads) thread\(threads == 1 ? "" : "s"), then map"
            case .touch(let threads): "touch every page, \(threads) threads"
            case .remapExisting: "map existing pages (MAP_POPULATE)"
            }
        }
    }

    /// Runs `work(from, length)` on `threads` threads over equal page-aligned shares of `byteCount`.
    private static func inShares(_ byteCount: Int, threads: Int, _ work: @Sendable (Int, Int) -> Void) {
        let share = (byteCount / threads + 4095) / 4096 * 4096
        DispatchQueue.concurrentPerform(iterations: threads) { i in
            let from = min(byteCount, i * share)
            work(from, min(byteCount, from + share) - from)
        }
    }

    /// Seconds `method` takes to make a new file of `byteCount` bytes under `directory` ready
    /// for writing (for `.remapExisting`, to map one whose pages exist). The file is removed after.
    public static func time(_ method: Method, byteCount: Int, directory: String) throws -> Double {
        let path = directory + "/populate-" + FileSystem.randomSuffix()
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError.system("cannot create \(path)", "open") }
        defer {
            close(fd)
            unlink(path)
        }
        guard ftruncate(fd, off_t(byteCount)) == 0 else { throw StoreError.system("cannot size \(path)", "ftruncate") }
        func map(populate: Bool) throws -> UnsafeMutableRawPointer {
            guard
                let pointer = mmap(
                    nil, byteCount, PROT_READ | PROT_WRITE, MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, 0),
                pointer != MAP_FAILED
            else {
                throw StoreError.system("cannot map \(path)", "mmap")
            }
            return pointer
        }
        if case .remapExisting = method {
            let first = try map(populate: true)
            munmap(first, byteCount)
        }
        let start = DispatchTime.now().uptimeNanoseconds
        var mapping: UnsafeMutableRawPointer
        switch method {
        case .mapPopulate, .remapExisting:
            mapping = try map(populate: true)
        case .madvise(let threads):
            mapping = try map(populate: false)
            populate(mapping, byteCount: byteCount, threads: threads)
        case .touch(let threads):
            mapping = try map(populate: false)
            let address = UInt(bitPattern: mapping)
            inShares(byteCount, threads: threads) { from, length in
                sllm_touch_pages_write(UnsafeMutableRawPointer(bitPattern: address + UInt(from))!, length)
            }
        case .fallocate(let threads):
            let failures = Atomic<Int32>(0)
            inShares(byteCount, threads: threads) { from, length in
                let result = sllm_fallocate(fd, Int64(from), Int64(length))
                if result != 0 { failures.store(result, ordering: .relaxed) }
            }
            let failure = failures.load(ordering: .relaxed)
            guard failure == 0 else { throw StoreError(.io, "fallocate on \(path) failed: errno \(failure)") }
            mapping = try map(populate: true)
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        munmap(mapping, byteCount)
        return seconds
    }
}
