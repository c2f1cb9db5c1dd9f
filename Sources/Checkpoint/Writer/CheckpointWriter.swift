import CKernels
import Foundation
public import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// Writes a checkpoint directory atomically.
///
/// Everything is written into a hidden temporary directory beside the destination
/// (`.NAME.partial-PID-RANDOM`), each file is fsynced, then the directory is renamed into place
/// and its parent fsynced. An error at any point removes the temporary directory; a killed
/// process leaves only a hidden `.partial` directory, which ``removeStalePartials(in:)`` clears.
/// The same contents always give byte-identical files.
public struct CheckpointWriter: Sendable {
    /// Layout and behaviour settings.
    public struct Options: Sendable {
        /// Largest partition in bytes (a tensor larger than this gets a partition of its own).
        public var maxPartitionByteCount: Int
        /// Bytes per checksum block; a multiple of 4 KiB.
        public var checksumBlockSize: Int
        /// Replace an existing checkpoint at the destination (atomically swapped).
        public var replaceExisting: Bool

        public init(
            maxPartitionByteCount: Int = 4 << 30, checksumBlockSize: Int = 1 << 20, replaceExisting: Bool = false
        ) {
            self.maxPartitionByteCount = maxPartitionByteCount
            self.checksumBlockSize = checksumBlockSize
            self.replaceExisting = replaceExisting
        }
    }

    public var options: Options
    package var systemCalls: SystemCalls = .live
    private let logger: Logger

    public init(options: Options = Options(), logger: Logger = Logger(label: "sllm.checkpoint")) {
        self.options = options
        self.logger = logger
    }

    /// Writes `contents` as a checkpoint directory at `destination`.
    ///
    /// - Returns: the index that was written.
    /// - Throws: `CheckpointError` (`alreadyExists` if `destination` exists and `replaceExisting`
    ///   is off; `io` with the `Errno` for a failed write, e.g. a full disk). Nothing is left at
    ///   `destination` on failure, and an existing checkpoint there is untouched.
    @discardableResult
    public func write(
        _ contents: CheckpointContents, to destination: String, progress: ProgressHandler? = nil
    ) throws -> CheckpointIndex {
        let blockSize = options.checksumBlockSize
        guard blockSize >= CheckpointIndex.alignment, blockSize % CheckpointIndex.alignment == 0 else {
            throw CheckpointError(
                .invalidArgument, "checksum block size \(blockSize) is not a positive multiple of 4096")
        }
        guard options.maxPartitionByteCount >= CheckpointIndex.alignment else {
            throw CheckpointError(
                .invalidArgument, "partition size \(options.maxPartitionByteCount) is smaller than 4096")
        }
        try contents.config.validate()
        let destination = FileSystem.absolute(destination)
        if FileSystem.exists(destination) && !options.replaceExisting {
            throw CheckpointError(.alreadyExists, "\(destination) already exists (use --force to replace it)")
        }
        let parent = FileSystem.directoryName(destination)
        try FileSystem.makeDirectories(parent)
        let temporary =
            parent + "/." + FileSystem.baseName(destination) + ".partial-\(getpid())-" + FileSystem.randomSuffix()
        try FileSystem.makeDirectory(temporary)
        do {
            let index = try writeContents(contents, into: temporary, progress: progress)
            try FileSystem.syncDirectory(temporary)
            try install(temporary, at: destination)
            try FileSystem.syncDirectory(parent)
            return index
        } catch {
            FileSystem.removeTree(temporary)
            throw error
        }
    }

    private func install(_ temporary: String, at destination: String) throws(CheckpointError) {
        if FileSystem.exists(destination) {
            // Swap atomically so a reader sees the old or the new checkpoint, never neither.
            guard sllm_rename_exchange(temporary, destination) == 0 else {
                throw CheckpointError(.io, "cannot replace \(destination)", cause: Errno.current("renameat2"))
            }
            FileSystem.removeTree(temporary)
        } else {
            try FileSystem.rename(temporary, to: destination)
        }
    }

    // MARK: - Layout and data

    /// Assigns each tensor a partition and an aligned offset.
    static func layout(_ tensors: [TensorSource], maxPartitionByteCount: Int) -> [(partition: Int, offset: Int)] {
        var placements: [(partition: Int, offset: Int)] = []
        var partition = 0
        var end = 0
        for tensor in tensors {
            let size = alignUp(tensor.byteCount)
            if end > 0 && end + size > maxPartitionByteCount {
                partition += 1
                end = 0
            }
            placements.append((partition, end))
            end += size
        }
        return placements
    }

    private func writeContents(
        _ contents: CheckpointContents, into directory: String, progress: ProgressHandler?
    ) throws -> CheckpointIndex {
        var names = Set<String>()
        for tensor in contents.tensors {
            guard names.insert(tensor.name).inserted else {
                throw CheckpointError(.invalidFormat, "tensor `\(tensor.name)` appears twice in the source")
            }
            guard let count = elementCount(of: tensor.shape),
                tensor.dtype.byteCount(elementCount: count) == tensor.byteCount
            else {
                throw CheckpointError(
                    .invalidFormat,
                    "tensor `\(tensor.name)`: shape \(tensor.shape) of \(tensor.dtype) does not take \(tensor.byteCount) bytes"
                )
            }
        }
        let placements = Self.layout(contents.tensors, maxPartitionByteCount: options.maxPartitionByteCount)
        let partitionCount = (placements.last?.partition ?? -1) + 1
        let total = Int64(contents.tensors.reduce(0) { $0 + $1.byteCount })
        var written: Int64 = 0
        var records: [CheckpointIndex.TensorRecord] = []
        var partitions: [CheckpointIndex.PartitionRecord] = []
        let blockSize = options.checksumBlockSize
        let stagingSize = max(blockSize, 16 << 20) / blockSize * blockSize

        for number in 0..<partitionCount {
            let fileName = CheckpointIndex.partitionFileName(number)
            let file = try FileHandle.create(directory + "/" + fileName)
            let writer = WriteBehind(
                file: file, blockSize: blockSize, calls: systemCalls, bufferCount: 3, bufferSize: stagingSize)
            var finished = false
            defer { if !finished { writer.abandon() } }
            var staging = try writer.takeBuffer()
            var filled = 0  // bytes in staging
            var flushedOffset = 0  // partition offset of staging[0]; always a multiple of the block size

            func flush() throws {
                guard filled > 0 else { return }
                try writer.submit(staging, count: filled, at: flushedOffset)
                flushedOffset += filled
                filled = 0
                staging = try writer.takeBuffer()
            }
            func pad(to offset: Int) throws {
                while flushedOffset + filled < offset {
                    let count = min(offset - flushedOffset - filled, staging.byteCount - filled)
                    (staging.base + filled).initializeMemory(as: UInt8.self, repeating: 0, count: count)
                    filled += count
                    if filled == staging.byteCount { try flush() }
                }
            }

            for (tensor, placement) in zip(contents.tensors, placements) where placement.partition == number {
                try pad(to: placement.offset)
                var done = 0
                var crc: UInt32 = 0
                while done < tensor.byteCount {
                    let count = min(tensor.byteCount - done, staging.byteCount - filled)
                    let piece = UnsafeMutableRawBufferPointer(start: staging.base + filled, count: count)
                    try tensor.read(done, piece)
                    crc = CRC32C.checksum(UnsafeRawBufferPointer(piece), seed: crc)
                    filled += count
                    done += count
                    written += Int64(count)
                    if filled == staging.byteCount {
                        try flush()
                        progress?(Progress(phase: "convert", completedBytes: written, totalBytes: total))
                    }
                }
                records.append(
                    .init(
                        name: tensor.name, dtype: tensor.dtype, shape: tensor.shape, partition: number,
                        offset: placement.offset, byteCount: tensor.byteCount, crc32c: crc))
            }
            try pad(to: alignUp(flushedOffset + filled))
            try flush()
            let checksums = try writer.finish()
            finished = true
            try file.sync()
            partitions.append(.init(file: fileName, byteCount: flushedOffset, blockChecksums: checksums))
            logger.debug("wrote partition", metadata: ["file": "\(fileName)", "bytes": "\(flushedOffset)"])
        }

        var fileRecords: [CheckpointIndex.FileRecord] = []
        for (name, bytes) in contents.files {
            try CheckpointIndex.validateFileName(name)
            let file = try FileHandle.create(directory + "/" + name)
            try bytes.withUnsafeBytes { try file.write($0, at: 0, calls: systemCalls) }
            try file.sync()
            fileRecords.append(.init(name: name, byteCount: bytes.count, crc32c: CRC32C.checksum(bytes)))
        }

        let index = CheckpointIndex(
            formatVersion: CheckpointIndex.currentFormatVersion, source: contents.source,
            sourceFormat: contents.sourceFormat, config: contents.config, metadata: contents.metadata,
            tokenizer: .init(
                format: contents.tokenizerFormat, files: contents.tokenizerFiles, chatTemplate: contents.chatTemplate),
            checksumBlockSize: options.checksumBlockSize, partitions: partitions, tensors: records, files: fileRecords)
        try index.validate()
        let indexFile = try FileHandle.create(directory + "/" + CheckpointIndex.fileName)
        try index.encoded().withUnsafeBytes { try indexFile.write($0, at: 0, calls: systemCalls) }
        try indexFile.sync()
        progress?(Progress(phase: "convert", completedBytes: total, totalBytes: total))
        return index
    }

    /// Removes `.NAME.partial-PID-…` directories under `directory` whose writer process is gone.
    public static func removeStalePartials(in directory: String) {
        for name in (try? FileSystem.listDirectory(directory)) ?? [] where name.hasPrefix(".") {
            guard let range = name.range(of: ".partial-") else { continue }
            let rest = name[range.upperBound...]
            guard let dash = rest.firstIndex(of: "-"), let pid = Int32(rest[..<dash]) else { continue }
            if pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH {
                FileSystem.removeTree(directory + "/" + name)
            }
        }
    }
}

/// `value` rounded up to the checkpoint alignment.
func alignUp(_ value: Int, to alignment: Int = CheckpointIndex.alignment) -> Int {
    (value + alignment - 1) / alignment * alignment
}
