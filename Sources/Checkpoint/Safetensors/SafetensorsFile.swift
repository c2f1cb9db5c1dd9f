import Foundation

/// A parsed safetensors header: an 8-byte little-endian length, a JSON table, then the data.
public struct SafetensorsFile: Sendable {
    public struct TensorInfo: Sendable {
        public var name: String
        public var dtype: DType
        /// Row-major shape.
        public var shape: [Int]
        /// Absolute file offset of the first byte.
        public var offset: Int
        public var byteCount: Int
    }

    public var tensors: [TensorInfo]
    public var metadata: [String: String]

    static let maxHeaderByteCount = 100 << 20

    /// The start of a safetensors file holding `tensors` back to back in this order: the 8-byte
    /// header length, then the JSON table (sorted keys) padded with spaces so the data starts at
    /// a multiple of 8. `dtype` is safetensors' name (`F16`, `F32`, `U8` …).
    public static func header(
        for tensors: [(name: String, dtype: String, shape: [Int], byteCount: Int)], metadata: [String: String]? = nil
    ) throws -> [UInt8] {
        var table: [String: Any] = [:]
        if let metadata { table["__metadata__"] = metadata }
        var offset = 0
        for tensor in tensors {
            table[tensor.name] = [
                "dtype": tensor.dtype, "shape": tensor.shape, "data_offsets": [offset, offset + tensor.byteCount],
            ]
            offset += tensor.byteCount
        }
        var json = [UInt8](try JSONSerialization.data(withJSONObject: table, options: [.sortedKeys]))
        while json.count % 8 != 0 { json.append(0x20) }
        var out: [UInt8] = []
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out += $0 }
        return out + json
    }

    /// Parses the header of a safetensors file.
    ///
    /// - Parameters:
    ///   - prefix: at least the first 8 + header-length bytes of the file (or all of it).
    ///   - fileSize: the file's real size, to check data offsets.
    /// - Throws: `CheckpointError` for a bad length, invalid JSON, an unknown dtype, or data
    ///   offsets that are inverted, overlap the wrong size, or run past the end of the file.
    public static func parse(_ prefix: UnsafeRawBufferPointer, fileSize: Int, name: String) throws(CheckpointError)
        -> SafetensorsFile
    {
        var cursor = ByteCursor(prefix, context: "safetensors file \(name)")
        let length = try cursor.read(UInt64.self, "header length")
        guard length >= 2, length <= UInt64(maxHeaderByteCount), length <= UInt64(max(fileSize - 8, 0)) else {
            throw .format("\(name): safetensors header length \(length) is invalid for a \(fileSize)-byte file")
        }
        try cursor.need(Int(length), for: "header")
        let json = Data(UnsafeRawBufferPointer(rebasing: prefix[8..<(8 + Int(length))]))
        let table: [String: JSONValue]
        do {
            guard case .object(let object) = try JSONDecoder().decode(JSONValue.self, from: json) else {
                throw CheckpointError.format("\(name): safetensors header is not a JSON object")
            }
            table = object
        } catch let error as CheckpointError {
            throw error
        } catch {
            throw .format("\(name): safetensors header is not valid JSON")
        }
        let dataStart = 8 + Int(length)
        let dataSize = fileSize - dataStart
        var tensors: [TensorInfo] = []
        var metadata: [String: String] = [:]
        for (key, value) in table.sorted(by: { $0.key < $1.key }) {
            if key == "__metadata__" {
                for (metaKey, metaValue) in value.objectValue ?? [:] {
                    metadata[metaKey] = metaValue.stringValue ?? metaValue.summary
                }
                continue
            }
            guard let entry = value.objectValue,
                let dtypeName = entry["dtype"]?.stringValue,
                let shapeValues = entry["shape"]?.arrayValue,
                let offsets = entry["data_offsets"]?.arrayValue, offsets.count == 2,
                let begin = offsets[0].intValue, let end = offsets[1].intValue
            else {
                throw .format("\(name): tensor `\(key)` lacks dtype, shape or data_offsets")
            }
            guard let dtype = dtype(named: dtypeName) else {
                throw CheckpointError(.unsupported, "\(name): tensor `\(key)` has unsupported dtype \(dtypeName)")
            }
            var shape: [Int] = []
            for dimension in shapeValues {
                guard let size = dimension.intValue, size >= 0, size <= Int(Int32.max) else {
                    throw .format("\(name): tensor `\(key)` has invalid shape \(shapeValues.map(\.summary))")
                }
                shape.append(size)
            }
            guard shape.count <= 8, let count = elementCount(of: shape),
                let byteCount = dtype.byteCount(elementCount: count)
            else {
                throw .format("\(name): tensor `\(key)` shape \(shape) is too large")
            }
            guard begin >= 0, begin <= end, end <= dataSize, end - begin == byteCount else {
                throw .format(
                    "\(name): tensor `\(key)` data_offsets [\(begin), \(end)] do not hold \(byteCount) bytes within the \(dataSize)-byte data section"
                )
            }
            tensors.append(
                TensorInfo(name: key, dtype: dtype, shape: shape, offset: dataStart + begin, byteCount: byteCount))
        }
        return SafetensorsFile(tensors: tensors, metadata: metadata)
    }

    /// Reads and parses the header of the file at `path`.
    public static func read(path: String) throws(CheckpointError) -> SafetensorsFile {
        let file = try FileHandle.openForReading(path)
        let size = Int(try file.size())
        let name = FileSystem.baseName(path)
        guard size >= 8 else { throw .format("\(name) is \(size) bytes, too short for a safetensors file") }
        let lengthBytes = try file.readBytes(count: 8, at: 0)
        let length = lengthBytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian }
        guard length <= UInt64(maxHeaderByteCount), length <= UInt64(size - 8) else {
            throw .format("\(name): safetensors header length \(length) is invalid for a \(size)-byte file")
        }
        let prefix = try file.readBytes(count: 8 + Int(length), at: 0)
        var result: Result<SafetensorsFile, CheckpointError> = .failure(.format("\(name): empty header"))
        prefix.withUnsafeBytes { buffer in
            result = Result { () throws(CheckpointError) in try parse(buffer, fileSize: size, name: name) }
        }
        return try result.get()
    }

    static func dtype(named name: String) -> DType? {
        switch name {
        case "F32": .f32
        case "F16": .f16
        case "BF16": .bf16
        case "F64": .f64
        case "I64": .i64
        case "I32": .i32
        case "I16": .i16
        case "I8": .i8
        default: nil
        }
    }
}
