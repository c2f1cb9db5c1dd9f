/// The tensor records of a version-2 index, in binary (all integers little-endian):
/// a u32 count, then per tensor: the name (u64 length, UTF-8 bytes), u32 dtype (GGML's type
/// number), u8 rank (at most 8) and that many i64 dimensions, u32 partition, i64 offset, i64 byte
/// count, u32 CRC-32C. Nothing may follow the last record.
///
/// Decoding checks only that each field is there and well formed; `CheckpointIndex.validate`
/// checks the records against each other and the partitions, as for a JSON index.
enum TensorTable {
    static let maxRank = 8
    /// The bytes of a record with an empty name and rank 0.
    static let minimumRecordBytes = 8 + 4 + 1 + 4 + 8 + 8 + 4

    static func append(_ tensors: [CheckpointIndex.TensorRecord], to bytes: inout [UInt8]) {
        Checkpoint.append(UInt32(tensors.count), to: &bytes)
        for tensor in tensors {
            precondition(tensor.shape.count <= maxRank, "tensor `\(tensor.name)` has rank \(tensor.shape.count)")
            Checkpoint.append(UInt64(tensor.name.utf8.count), to: &bytes)
            bytes += tensor.name.utf8
            Checkpoint.append(tensor.dtype.rawValue, to: &bytes)
            bytes.append(UInt8(tensor.shape.count))
            for dimension in tensor.shape { Checkpoint.append(UInt64(bitPattern: Int64(dimension)), to: &bytes) }
            Checkpoint.append(UInt32(truncatingIfNeeded: tensor.partition), to: &bytes)
            Checkpoint.append(UInt64(bitPattern: Int64(tensor.offset)), to: &bytes)
            Checkpoint.append(UInt64(bitPattern: Int64(tensor.byteCount)), to: &bytes)
            Checkpoint.append(tensor.crc32c, to: &bytes)
        }
    }

    static func decode(_ bytes: ArraySlice<UInt8>, path: String) throws(CheckpointError)
        -> [CheckpointIndex.TensorRecord]
    {
        do {
            return try bytes.withUnsafeBytes { (buffer) throws(CheckpointError) in
                try decode(buffer, path: path)
            }
        } catch let error as CheckpointError {
            throw error
        } catch {
            throw .format("\(path): \(error)")
        }
    }

    private static func decode(_ buffer: UnsafeRawBufferPointer, path: String) throws(CheckpointError)
        -> [CheckpointIndex.TensorRecord]
    {
        var cursor = ByteCursor(buffer, context: "the tensor table of \(path)")
        let count = Int(try cursor.read(UInt32.self, "the tensor count"))
        guard count <= cursor.remaining / minimumRecordBytes else {
            throw .format("\(path): its tensor table claims \(count) tensors in \(cursor.remaining) bytes")
        }
        var tensors: [CheckpointIndex.TensorRecord] = []
        tensors.reserveCapacity(count)
        for number in 0..<count {
            let name = try cursor.readString("the name of tensor \(number)")
            let type = try cursor.read(UInt32.self, "the dtype of `\(name)`")
            guard let dtype = DType(rawValue: type) else {
                throw .format("\(path): tensor `\(name)` has unknown dtype number \(type)")
            }
            let rank = Int(try cursor.read(UInt8.self, "the rank of `\(name)`"))
            guard rank <= maxRank else { throw .format("\(path): tensor `\(name)` has rank \(rank), above \(maxRank)") }
            var shape: [Int] = []
            shape.reserveCapacity(rank)
            for _ in 0..<rank { shape.append(Int(try cursor.read(Int64.self, "the shape of `\(name)`"))) }
            let partition = Int(try cursor.read(UInt32.self, "the partition of `\(name)`"))
            let offset = Int(try cursor.read(Int64.self, "the offset of `\(name)`"))
            let byteCount = Int(try cursor.read(Int64.self, "the byte count of `\(name)`"))
            let crc = try cursor.read(UInt32.self, "the checksum of `\(name)`")
            tensors.append(
                CheckpointIndex.TensorRecord(
                    name: name, dtype: dtype, shape: shape, partition: partition, offset: offset, byteCount: byteCount,
                    crc32c: crc))
        }
        guard cursor.remaining == 0 else {
            throw .format("\(path): \(cursor.remaining) bytes follow its tensor table")
        }
        return tensors
    }
}
