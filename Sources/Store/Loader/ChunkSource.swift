import Checkpoint
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// Where a load reads chunks from. Called from reader threads, concurrently.
protocol ChunkSource: Sendable {
    /// Reads `length` bytes at `offset` of partition `partition` into `destination`
    /// (4 KiB-aligned address, offset and length).
    func read(partition: Int, offset: Int, length: Int, into destination: UnsafeMutableRawPointer) throws
    /// True when reads bypass the page cache.
    var isDirect: Bool { get }
}

/// The SSD tier: partition files read through the page cache (each chunk's pages dropped once
/// copied), or with `O_DIRECT` when asked, falling back to buffered reads, with a warning, where
/// the file system refuses it (tmpfs).
final class LocalChunkSource: ChunkSource {
    private let descriptors: [Int32]
    let isDirect: Bool

    /// - Parameter openFile: `open(2)`; tests replace it to refuse `O_DIRECT`.
    init(
        directory: String, index: CheckpointIndex, directIO: Bool, logger: Logger,
        openFile: (String, Int32) -> Int32 = { Glibc.open($0, $1) }
    ) throws {
        var descriptors: [Int32] = []
        var direct = directIO
        for partition in index.partitions {
            let path = directory + "/" + partition.file
            var fd: Int32 = -1
            if direct {
                fd = openFile(path, O_RDONLY | O_CLOEXEC | openDirect)
                if fd < 0 && errno == EINVAL {
                    logger.warning(
                        "the file system refuses O_DIRECT; reading through the page cache",
                        metadata: ["file": "\(path)"])
                    direct = false
                }
            }
            if fd < 0 { fd = openFile(path, O_RDONLY | O_CLOEXEC) }
            guard fd >= 0 else {
                let error = Errno(errno, operation: "open \(path)")
                descriptors.forEach { close($0) }
                throw StoreError(.io, "cannot open partition: \(error)")
            }
            descriptors.append(fd)
        }
        self.descriptors = descriptors
        self.isDirect = direct
    }

    deinit {
        // The per-chunk drops leave the large folios that straddle chunk boundaries; one drop of
        // every file at the end takes the rest.
        if !isDirect { descriptors.forEach { posix_fadvise($0, 0, 0, POSIX_FADV_DONTNEED) } }
        descriptors.forEach { close($0) }
    }

    func read(partition: Int, offset: Int, length: Int, into destination: UnsafeMutableRawPointer) throws {
        var done = 0
        while done < length {
            let n = pread(descriptors[partition], destination + done, length - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw StoreError.system("read of partition \(partition) at \(offset + done) failed", "pread")
            }
            if n == 0 {
                throw StoreError(
                    .io,
                    "partition \(partition) ends at \(offset + done), before the \(offset + length) bytes its index promises (truncated?)"
                )
            }
            done += n
        }
        // Buffered reads leave the bytes in the page cache too; the destination (the DRAM cache,
        // or an instance's memory) now holds them, so the second copy is dropped as the load goes
        // rather than left to crowd out other files (a multi-GiB model would otherwise be held twice).
        if !isDirect { posix_fadvise(descriptors[partition], off_t(offset), off_t(length), POSIX_FADV_DONTNEED) }
    }
}
