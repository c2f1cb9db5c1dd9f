/// A parsed GGUF file header (versions 2 and 3): metadata, tensor table and where data starts.
///
/// Parsing never trusts a count or a length from the file: each is checked against the bytes
/// that remain before anything is allocated for it.
public struct GGUFFile: Sendable {
    /// One entry of the tensor table.
    public struct TensorInfo: Sendable {
        public var name: String
        /// GGML order: `dimensions[0]` is the innermost (fastest-varying) dimension.
        public var dimensions: [Int]
        public var dtype: DType
        /// Offset relative to `dataOffset`.
        public var offset: Int
        public var byteCount: Int
        /// Row-major shape (the dimensions reversed).
        public var shape: [Int] { dimensions.reversed() }
    }

    public var version: UInt32
    /// Key/value pairs in file order.
    public var metadata: [(key: String, value: JSONValue)]
    public var tensors: [TensorInfo]
    public var alignment: Int
    /// Absolute file offset of the tensor data section.
    public var dataOffset: Int

    static let maxTensorCount = 1 << 20
    static let maxKeyValueCount = 1 << 20
    static let maxArrayDepth = 2

    /// The value of `key`, if present.
    public func value(_ key: String) -> JSONValue? { metadata.first { $0.key == key }?.value }

    /// Parses a GGUF header.
    ///
    /// - Parameters:
    ///   - bytes: the file's bytes (all of them, or a prefix holding the whole header).
    ///   - fileSize: the real file size, to check tensor data bounds.
    ///   - name: the file name for messages.
    /// - Throws: `CheckpointError` naming what is wrong: magic, version, a count, a type, an offset.
    public static func parse(_ bytes: UnsafeRawBufferPointer, fileSize: Int, name: String) throws(CheckpointError)
        -> GGUFFile
    {
        var cursor = ByteCursor(bytes, context: "GGUF file \(name)")
        let magic = try cursor.read(UInt32.self, "magic")
        guard magic == 0x4655_4747 else {  // "GGUF"
            throw .format("\(name) is not a GGUF file (wrong magic)")
        }
        let version = try cursor.read(UInt32.self, "version")
        if version == 1 {
            throw CheckpointError(
                .unsupported, "\(name) is GGUF version 1, which is not supported; re-export it with a current llama.cpp"
            )
        }
        guard version == 2 || version == 3 else {
            let hint = version.byteSwapped <= 3 ? " (a big-endian GGUF? only little-endian is supported)" : ""
            throw CheckpointError(.unsupported, "\(name) has GGUF version \(version)\(hint); supported: 2, 3")
        }
        let tensorCount = try cursor.read(UInt64.self, "tensor count")
        let keyValueCount = try cursor.read(UInt64.self, "metadata count")
        guard tensorCount <= UInt64(maxTensorCount), tensorCount <= UInt64(cursor.remaining / 28) else {
            throw .format("\(name) claims \(tensorCount) tensors, more than the file can hold")
        }
        guard keyValueCount <= UInt64(maxKeyValueCount), keyValueCount <= UInt64(cursor.remaining / 12) else {
            throw .format("\(name) claims \(keyValueCount) metadata entries, more than the file can hold")
        }

        var metadata: [(key: String, value: JSONValue)] = []
        var keys = Set<String>()
        for i in 0..<Int(keyValueCount) {
            let key = try cursor.readString("key of metadata entry \(i)")
            guard keys.insert(key).inserted else { throw .format("\(name): metadata key `\(key)` appears twice") }
            let type = try cursor.read(UInt32.self, "type of `\(key)`")
            metadata.append((key, try readValue(type: type, cursor: &cursor, key: key, depth: 0)))
        }

        var alignment = 32
        if let value = metadata.first(where: { $0.key == "general.alignment" })?.value {
            guard let requested = value.intValue, requested > 0, requested <= 1 << 20, requested & (requested - 1) == 0
            else {
                throw .format("\(name): general.alignment \(value.summary) is not a power of two up to 1 MiB")
            }
            alignment = requested
        }

        var tensors: [TensorInfo] = []
        var names = Set<String>()
        for i in 0..<Int(tensorCount) {
            let tensorName = try cursor.readString("name of tensor \(i)")
            guard !tensorName.isEmpty, names.insert(tensorName).inserted else {
                throw .format("\(name): tensor name `\(tensorName)` is empty or appears twice")
            }
            let dimensionCount = try cursor.read(UInt32.self, "dimension count of `\(tensorName)`")
            guard (1...4).contains(dimensionCount) else {
                throw .format("\(name): tensor `\(tensorName)` has \(dimensionCount) dimensions (1 to 4 allowed)")
            }
            var dimensions: [Int] = []
            for _ in 0..<dimensionCount {
                let dimension = try cursor.read(UInt64.self, "dimension of `\(tensorName)`")
                guard dimension >= 1, dimension <= UInt64(Int32.max) else {
                    throw .format("\(name): tensor `\(tensorName)` has dimension \(dimension)")
                }
                dimensions.append(Int(dimension))
            }
            let rawType = try cursor.read(UInt32.self, "type of `\(tensorName)`")
            guard let dtype = DType(rawValue: rawType) else {
                throw CheckpointError(
                    .unsupported, "\(name): tensor `\(tensorName)` has unknown or unsupported GGML type \(rawType)")
            }
            let offset = try cursor.read(UInt64.self, "offset of `\(tensorName)`")
            guard dimensions[0] % dtype.blockSize == 0, let count = elementCount(of: dimensions),
                let byteCount = dtype.byteCount(elementCount: count)
            else {
                throw .format(
                    "\(name): tensor `\(tensorName)` shape \(dimensions) does not fit \(dtype) blocks of \(dtype.blockSize)"
                )
            }
            guard offset % UInt64(alignment) == 0, offset <= UInt64(Int.max / 2) else {
                throw .format("\(name): tensor `\(tensorName)` offset \(offset) is not aligned to \(alignment)")
            }
            tensors.append(
                TensorInfo(
                    name: tensorName, dimensions: dimensions, dtype: dtype, offset: Int(offset), byteCount: byteCount))
        }
        let dataOffset = (cursor.offset + alignment - 1) / alignment * alignment
        for tensor in tensors {
            let end = dataOffset.addingReportingOverflow(tensor.offset).partialValue.addingReportingOverflow(
                tensor.byteCount)
            guard !end.overflow, end.partialValue <= fileSize else {
                throw .format(
                    "\(name): tensor `\(tensor.name)` (\(tensor.byteCount) bytes at data offset \(tensor.offset)) extends past the end of the \(fileSize)-byte file (truncated?)"
                )
            }
        }
        return GGUFFile(
            version: version, metadata: metadata, tensors: tensors, alignment: alignment, dataOffset: dataOffset)
    }

    private static func readValue(type: UInt32, cursor: inout ByteCursor, key: String, depth: Int)
        throws(CheckpointError) -> JSONValue
    {
        switch type {
        case 0: return .int(Int64(try cursor.read(UInt8.self, key)))
        case 1: return .int(Int64(try cursor.read(Int8.self, key)))
        case 2: return .int(Int64(try cursor.read(UInt16.self, key)))
        case 3: return .int(Int64(try cursor.read(Int16.self, key)))
        case 4: return .int(Int64(try cursor.read(UInt32.self, key)))
        case 5: return .int(Int64(try cursor.read(Int32.self, key)))
        case 6:
            // The shortest decimal that round-trips the f32, so 1e-5 stays 1e-5 and not 9.99999974e-06.
            let value = try cursor.readFloat(key)
            return .double(value.isFinite ? Double("\(value)") ?? Double(value) : 0)
        case 7:
            let raw = try cursor.read(UInt8.self, key)
            guard raw <= 1 else { throw .format("\(cursor.context): boolean `\(key)` has value \(raw)") }
            return .bool(raw == 1)
        case 8: return .string(try cursor.readString(key))
        case 9:
            guard depth < maxArrayDepth else { throw .format("\(cursor.context): `\(key)` nests arrays too deeply") }
            let elementType = try cursor.read(UInt32.self, "element type of `\(key)`")
            let count = try cursor.read(UInt64.self, "length of `\(key)`")
            let minimum = UInt64(minimumSize(ofType: elementType))
            guard minimum > 0 else {
                throw .format("\(cursor.context): `\(key)` has unknown element type \(elementType)")
            }
            guard count <= UInt64(cursor.remaining) / minimum else {
                throw .format("\(cursor.context): array `\(key)` claims \(count) elements, more than the file can hold")
            }
            var values: [JSONValue] = []
            values.reserveCapacity(Int(count))
            for _ in 0..<Int(count) {
                values.append(try readValue(type: elementType, cursor: &cursor, key: key, depth: depth + 1))
            }
            return .array(values)
        case 10:
            let value = try cursor.read(UInt64.self, key)
            return value <= UInt64(Int64.max) ? .int(Int64(value)) : .double(Double(value))
        case 11: return .int(try cursor.read(Int64.self, key))
        case 12: return .double(try cursor.readDouble(key))
        default: throw .format("\(cursor.context): metadata `\(key)` has unknown value type \(type)")
        }
    }

    /// Smallest encoding of one value of a GGUF type (0 for an unknown type).
    private static func minimumSize(ofType type: UInt32) -> Int {
        switch type {
        case 0, 1, 7: 1
        case 2, 3: 2
        case 4, 5, 6: 4
        case 8, 10, 11, 12: 8
        case 9: 12
        default: 0
        }
    }
}
