/// Reads a checkpoint directory: its index, its small files and tensor bytes, and verifies it.
public struct CheckpointReader: Sendable {
    /// The checkpoint directory.
    public let directory: String
    public let index: CheckpointIndex
    /// CRC-32C of the whole index file: identifies this exact checkpoint (caches key on it).
    public let indexChecksum: UInt32

    /// Opens and validates the index of the checkpoint at `directory`.
    ///
    /// - Throws: `CheckpointError.notFound` when there is no index, `invalidFormat`/`corrupt`/
    ///   `unsupported` when the index is damaged or too new, `invalidFormat` when a partition file
    ///   is missing or its size differs from the index.
    public init(directory: String) throws(CheckpointError) {
        self.directory = directory
        let path = directory + "/" + CheckpointIndex.fileName
        guard FileSystem.exists(path) else {
            throw CheckpointError(.notFound, "\(directory) is not a checkpoint (no `index` file)")
        }
        let file = try FileHandle.openForReading(path)
        let size = try file.size()
        guard size <= Int64(CheckpointIndex.maxBodyByteCount + CheckpointIndex.headerByteCount) else {
            throw .format("\(path) is \(size) bytes, larger than any valid index")
        }
        let bytes = try file.readBytes(count: Int(size), at: 0)
        index = try CheckpointIndex.decode(bytes, path: path)
        indexChecksum = CRC32C.checksum(bytes)
        for partition in index.partitions {
            let partitionPath = directory + "/" + partition.file
            guard let actual = FileSystem.fileSize(partitionPath) else {
                throw .format("checkpoint \(directory) is missing its partition file \(partition.file)")
            }
            guard actual == Int64(partition.byteCount) else {
                throw .format(
                    "partition \(partition.file) is \(actual) bytes but the index says \(partition.byteCount) (truncated or replaced)"
                )
            }
        }
    }

    /// The bytes of a small file listed in the index, checksum-verified.
    public func fileContents(_ name: String) throws(CheckpointError) -> [UInt8] {
        guard let record = index.files.first(where: { $0.name == name }) else {
            throw CheckpointError(.notFound, "checkpoint \(directory) has no file `\(name)`")
        }
        let file = try FileHandle.openForReading(directory + "/" + name)
        guard try file.size() == Int64(record.byteCount) else {
            throw CheckpointError(.corrupt, "file `\(name)` in \(directory) has the wrong size")
        }
        let bytes = try file.readBytes(count: record.byteCount, at: 0)
        guard CRC32C.checksum(bytes) == record.crc32c else {
            throw CheckpointError(.corrupt, "file `\(name)` in \(directory) is corrupt (checksum mismatch)")
        }
        return bytes
    }

    /// Maps one of the checkpoint's small files read-only (its pages come from the page cache
    /// without a copy) after checking its size and CRC-32C.
    public func mappedFile(_ name: String) throws(CheckpointError) -> MappedFile {
        guard let record = index.files.first(where: { $0.name == name }) else {
            throw CheckpointError(.notFound, "checkpoint \(directory) has no file `\(name)`")
        }
        let file = try MappedFile(path: directory + "/" + name)
        guard file.bytes.count == record.byteCount else {
            throw CheckpointError(.corrupt, "file `\(name)` in \(directory) has the wrong size")
        }
        guard CRC32C.checksum(file.bytes) == record.crc32c else {
            throw CheckpointError(.corrupt, "file `\(name)` in \(directory) is corrupt (checksum mismatch)")
        }
        return file
    }

    /// Reads one tensor's bytes and checks them against its CRC-32C.
    public func tensorBytes(_ name: String) throws(CheckpointError) -> [UInt8] {
        guard let tensor = index.tensor(named: name) else {
            throw CheckpointError(.notFound, "checkpoint \(directory) has no tensor `\(name)`")
        }
        let file = try FileHandle.openForReading(directory + "/" + index.partitions[tensor.partition].file)
        let bytes = try file.readBytes(count: tensor.byteCount, at: Int64(tensor.offset))
        guard CRC32C.checksum(bytes) == tensor.crc32c else {
            throw CheckpointError(.corrupt, "tensor `\(name)` is corrupt (checksum mismatch)")
        }
        return bytes
    }

    /// Re-reads every byte and checks every block, tensor and file checksum.
    ///
    /// - Returns: the number of bytes hashed.
    /// - Throws: `CheckpointError.corrupt` naming the first bad tensor (or file, or padding).
    @discardableResult
    public func verify(progress: ProgressHandler? = nil) throws(CheckpointError) -> Int64 {
        let blockSize = index.checksumBlockSize
        let chunkBlocks = max(1, (16 << 20) / blockSize)
        let buffer = UnsafeAlignedBuffer(byteCount: chunkBlocks * blockSize)
        let total = Int64(index.partitions.reduce(0) { $0 + $1.byteCount })
        var done: Int64 = 0
        var checksums: [UInt32] = []
        for (number, partition) in index.partitions.enumerated() {
            let file = try FileHandle.openForReading(directory + "/" + partition.file)
            var offset = 0
            while offset < partition.byteCount {
                let count = min(buffer.byteCount, partition.byteCount - offset)
                try file.read(into: buffer.base, count: count, at: Int64(offset))
                checksums.removeAll(keepingCapacity: true)
                CRC32C.blockChecksums(
                    UnsafeRawBufferPointer(start: buffer.base, count: count), blockSize: blockSize, into: &checksums)
                for (i, checksum) in checksums.enumerated() {
                    let block = offset / blockSize + i
                    if checksum != partition.blockChecksums[block] {
                        throw corruption(inPartition: number, block: block)
                    }
                }
                offset += count
                done += Int64(count)
                progress?(Progress(phase: "verify", completedBytes: done, totalBytes: total))
            }
        }
        for file in index.files { _ = try fileContents(file.name) }
        return done
    }

    /// The error for a block of `partition` whose checksum failed: re-reads the tensors that
    /// overlap it and names the one whose own checksum fails (or the padding).
    public func corruption(inPartition partition: Int, block: Int) -> CheckpointError {
        let start = block * index.checksumBlockSize
        let end = start + index.checksumBlockSize
        let file = index.partitions[partition].file
        let candidates = index.tensors.filter {
            $0.partition == partition && $0.offset < end && $0.offset + $0.byteCount > start
        }
        for tensor in candidates {
            if case .failure = Result(catching: { () throws(CheckpointError) in try tensorBytes(tensor.name) }) {
                return CheckpointError(
                    .corrupt,
                    "tensor `\(tensor.name)` is corrupt: \(file) bytes \(start)..<\(min(end, index.partitions[partition].byteCount)) fail their checksum"
                )
            }
        }
        return CheckpointError(
            .corrupt, "padding in \(file) bytes \(start)..<\(end) is corrupt (no tensor's own checksum fails)")
    }
}
