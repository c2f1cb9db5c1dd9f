/// Reads little-endian values from untrusted bytes, checking every bound.
///
/// Every read throws `CheckpointError.invalidFormat` instead of reading past the end, so a parser
/// built on it cannot crash on truncated or hostile input.
struct ByteCursor {
    let bytes: UnsafeRawBufferPointer
    var offset: Int
    /// What is being parsed, for messages (`GGUF header of model.gguf`).
    let context: String

    init(_ bytes: UnsafeRawBufferPointer, offset: Int = 0, context: String) {
        self.bytes = bytes
        self.offset = offset
        self.context = context
    }

    var remaining: Int { bytes.count - offset }

    mutating func need(_ count: Int, for what: @autoclosure () -> String) throws(CheckpointError) {
        guard count >= 0, count <= remaining else {
            throw .format(
                "\(context): \(what()) needs \(count) bytes at offset \(offset) but only \(max(remaining, 0)) remain (truncated file?)"
            )
        }
    }

    mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws(CheckpointError) -> T
    {
        try need(MemoryLayout<T>.size, for: what())
        let value = bytes.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += MemoryLayout<T>.size
        return T(littleEndian: value)
    }

    mutating func readFloat(_ what: @autoclosure () -> String) throws(CheckpointError) -> Float {
        Float(bitPattern: try read(UInt32.self, what()))
    }

    mutating func readDouble(_ what: @autoclosure () -> String) throws(CheckpointError) -> Double {
        Double(bitPattern: try read(UInt64.self, what()))
    }

    /// A length-prefixed (u64) UTF-8 string; invalid UTF-8 is repaired with U+FFFD.
    mutating func readString(_ what: @autoclosure () -> String) throws(CheckpointError) -> String {
        let length = try read(UInt64.self, what())
        guard length <= UInt64(remaining) else {
            throw .format(
                "\(context): \(what()) claims \(length) bytes at offset \(offset) but only \(remaining) remain")
        }
        let start = offset
        offset += Int(length)
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<offset]), as: UTF8.self)
    }
}
