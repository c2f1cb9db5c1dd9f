import Foundation

/// The index of a checkpoint directory: everything but the tensor bytes.
///
/// On disk (`index`) it is a 24-byte header followed by the body:
/// `"SLLMCKPT"`, format version (u32 LE), CRC-32C of the body (u32 LE), body length (u64 LE).
/// A version-1 body is UTF-8 JSON. A version-2 body is the JSON's length (u32 LE), the JSON with
/// an empty `tensors` array, then the tensors as a binary table (`TensorTable`): decoding a few
/// hundred tensor records from JSON took most of a small model's queue stage in a new process.
/// `docs/format.md` specifies every field.
public struct CheckpointIndex: Codable, Equatable, Sendable {
    /// The version this build writes and the newest it reads.
    public static let currentFormatVersion = 2
    /// Every tensor offset and every partition length is a multiple of this.
    public static let alignment = 4096
    /// Name of the index file inside a checkpoint directory.
    public static let fileName = "index"
    static let magic: [UInt8] = Array("SLLMCKPT".utf8)
    static let headerByteCount = 24
    static let maxBodyByteCount = 1 << 28

    public var formatVersion: Int
    /// Where the checkpoint was converted from (a path, URL or `pip:` source), for `sllm list`.
    public var source: String
    /// `gguf` or `safetensors`.
    public var sourceFormat: String
    public var config: ModelConfig
    /// The source's other metadata (GGUF key/values without the tokenizer, or `config.json`).
    public var metadata: [String: JSONValue]
    public var tokenizer: TokenizerRecord
    /// Bytes per checksum block of each partition (a multiple of 4 KiB).
    public var checksumBlockSize: Int
    public var partitions: [PartitionRecord]
    public var tensors: [TensorRecord]
    /// Small files stored beside the index (tokenizer, original configs), each checksummed.
    public var files: [FileRecord]

    /// A `data-NNNN` file.
    public struct PartitionRecord: Codable, Equatable, Sendable {
        public var file: String
        /// Length in bytes; a multiple of 4 KiB.
        public var byteCount: Int
        /// CRC-32C of each `checksumBlockSize` block, the last one possibly shorter.
        public var blockChecksums: [UInt32]
    }

    /// One tensor: where its bytes lie and what they are.
    public struct TensorRecord: Codable, Equatable, Sendable {
        public var name: String
        public var dtype: DType
        /// Row-major: outermost dimension first (a `[out, in]` weight has rows of `in` elements).
        public var shape: [Int]
        /// Index into `partitions`.
        public var partition: Int
        /// Byte offset inside the partition; a multiple of 4 KiB.
        public var offset: Int
        public var byteCount: Int
        /// CRC-32C of the tensor's bytes.
        public var crc32c: UInt32

        public var elementCount: Int { shape.reduce(1, *) }
    }

    /// A file stored beside the index.
    public struct FileRecord: Codable, Equatable, Sendable {
        public var name: String
        public var byteCount: Int
        public var crc32c: UInt32
    }

    /// Which tokenizer files the checkpoint carries and in what form.
    public struct TokenizerRecord: Codable, Equatable, Sendable {
        /// `gguf` (GGUF `tokenizer.*` key/values as JSON) or `huggingface` (`tokenizer.json` and friends).
        public var format: String
        /// Names in `files`.
        public var files: [String]
        /// The chat template, when the source has one.
        public var chatTemplate: String?
    }

    /// Total parameters (elements of all tensors).
    public var parameterCount: Int { tensors.reduce(0) { $0 + $1.elementCount } }

    /// Total bytes of tensor data, padding excluded.
    public var tensorByteCount: Int { tensors.reduce(0) { $0 + $1.byteCount } }

    /// The tensor named `name`.
    public func tensor(named name: String) -> TensorRecord? { tensors.first { $0.name == name } }
}

// MARK: - Encoding

extension CheckpointIndex {
    /// The index file's bytes, with the body of its own `formatVersion` (1: all JSON; 2: JSON and
    /// the tensor table). Deterministic: keys are sorted, no timestamps.
    public func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var body: [UInt8] = []
        if formatVersion >= 2 {
            var head = self
            head.tensors = []
            let json = [UInt8](try encoder.encode(head))
            append(UInt32(json.count), to: &body)
            body += json
            TensorTable.append(tensors, to: &body)
        } else {
            body = [UInt8](try encoder.encode(self))
        }
        var bytes = Self.magic
        append(UInt32(formatVersion), to: &bytes)
        append(CRC32C.checksum(body), to: &bytes)
        append(UInt64(body.count), to: &bytes)
        bytes += body
        return bytes
    }

    /// Parses and validates an index file's bytes.
    ///
    /// - Throws: `CheckpointError` naming the first problem: wrong magic, a newer format version,
    ///   a checksum mismatch, or a record that is out of bounds or inconsistent.
    public static func decode(_ bytes: [UInt8], path: String = "index") throws(CheckpointError) -> CheckpointIndex {
        guard bytes.count >= headerByteCount else {
            throw .format("\(path) is \(bytes.count) bytes, shorter than the \(headerByteCount)-byte header")
        }
        guard Array(bytes[0..<8]) == magic else {
            throw .format("\(path) is not an sllm checkpoint index (wrong magic)")
        }
        let version = Int(readUInt32(bytes, at: 8))
        guard version >= 1 else { throw .format("\(path) has format version \(version)") }
        guard version <= currentFormatVersion else {
            throw CheckpointError(
                .unsupported,
                "\(path) has format version \(version); this build reads up to \(currentFormatVersion): upgrade sllm or re-run `sllm convert`"
            )
        }
        let checksum = readUInt32(bytes, at: 12)
        let length = readUInt64(bytes, at: 16)
        guard length == UInt64(bytes.count - headerByteCount), length <= UInt64(maxBodyByteCount) else {
            throw .format(
                "\(path) declares a \(length)-byte body but holds \(bytes.count - headerByteCount) bytes (truncated?)")
        }
        let body = Array(bytes[headerByteCount...])
        guard CRC32C.checksum(body) == checksum else {
            throw CheckpointError(.corrupt, "\(path) is corrupt: its checksum does not match")
        }
        var json = body[...]
        var table: ArraySlice<UInt8> = []
        if version >= 2 {
            guard body.count >= 4, Int(readUInt32(body, at: 0)) <= body.count - 4 else {
                throw .format("\(path): the body's JSON length runs past its end")
            }
            json = body[4..<4 + Int(readUInt32(body, at: 0))]
            table = body[(4 + json.count)...]
        }
        var index: CheckpointIndex
        do {
            index = try JSONDecoder().decode(CheckpointIndex.self, from: Data(json))
        } catch {
            throw CheckpointError(.invalidFormat, "\(path) has an invalid body: \(error)")
        }
        if version >= 2 {
            guard index.tensors.isEmpty else {
                throw .format("\(path): a version-\(version) index lists its tensors in its table, not in its JSON")
            }
            index.tensors = try TensorTable.decode(table, path: path)
        }
        guard index.formatVersion == version else {
            throw .format("\(path): header version \(version) differs from body version \(index.formatVersion)")
        }
        try index.validate()
        return index
    }

    /// Checks every record against the format's invariants.
    public func validate() throws(CheckpointError) {
        guard checksumBlockSize >= Self.alignment, checksumBlockSize % Self.alignment == 0,
            checksumBlockSize <= 1 << 30
        else {
            throw .format("checksum block size \(checksumBlockSize) is not a multiple of 4096 up to 1 GiB")
        }
        try config.validate()
        for (number, partition) in partitions.enumerated() {
            guard partition.file == Self.partitionFileName(number) else {
                throw .format(
                    "partition \(number) is named `\(partition.file)`, expected `\(Self.partitionFileName(number))`")
            }
            guard partition.byteCount >= 0, partition.byteCount % Self.alignment == 0 else {
                throw .format("partition \(partition.file) length \(partition.byteCount) is not a multiple of 4096")
            }
            let blocks = (partition.byteCount + checksumBlockSize - 1) / checksumBlockSize
            guard partition.blockChecksums.count == blocks else {
                throw .format(
                    "partition \(partition.file) has \(partition.blockChecksums.count) block checksums, expected \(blocks)"
                )
            }
        }
        var names = Set<String>()
        for tensor in tensors {
            guard !tensor.name.isEmpty, names.insert(tensor.name).inserted else {
                throw .format("tensor name `\(tensor.name)` is empty or appears twice")
            }
            guard tensor.partition >= 0, tensor.partition < partitions.count else {
                throw .format("tensor `\(tensor.name)` names partition \(tensor.partition) of \(partitions.count)")
            }
            guard tensor.shape.count <= 8, let count = elementCount(of: tensor.shape),
                tensor.dtype.byteCount(elementCount: count) == tensor.byteCount
            else {
                throw .format(
                    "tensor `\(tensor.name)`: shape \(tensor.shape) of \(tensor.dtype) does not take \(tensor.byteCount) bytes"
                )
            }
            let end = tensor.offset.addingReportingOverflow(tensor.byteCount)
            guard tensor.offset >= 0, tensor.offset % Self.alignment == 0, !end.overflow,
                end.partialValue <= partitions[tensor.partition].byteCount
            else {
                throw .format(
                    "tensor `\(tensor.name)` at offset \(tensor.offset) (+\(tensor.byteCount)) is unaligned or past the end of its partition"
                )
            }
        }
        for file in files {
            try Self.validateFileName(file.name)
        }
        for name in tokenizer.files where !files.contains(where: { $0.name == name }) {
            throw .format("tokenizer file `\(name)` is not listed among the checkpoint's files")
        }
    }

    /// `data-0000`, `data-0001`, …
    public static func partitionFileName(_ number: Int) -> String {
        let digits = String(number)
        return "data-" + String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    static func validateFileName(_ name: String) throws(CheckpointError) {
        guard !name.isEmpty, !name.contains("/"), name != ".", name != "..", !name.hasPrefix("."),
            name != fileName, !name.hasPrefix("data-")
        else {
            throw .format("file name `\(name)` is not allowed in a checkpoint")
        }
    }
}

func append(_ value: UInt32, to bytes: inout [UInt8]) {
    withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
}

func append(_ value: UInt64, to bytes: inout [UInt8]) {
    withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
}

func readUInt32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
    (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) }
}

func readUInt64(_ bytes: [UInt8], at offset: Int) -> UInt64 {
    (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
}
