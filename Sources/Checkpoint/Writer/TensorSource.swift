/// A tensor to be written into a checkpoint, with a way to read its bytes.
public struct TensorSource: Sendable {
    public var name: String
    public var dtype: DType
    /// Row-major shape (outermost first).
    public var shape: [Int]
    public var byteCount: Int
    /// Fills `buffer` with the tensor's bytes starting at `offset` (relative to the tensor).
    public var read: @Sendable (_ offset: Int, _ buffer: UnsafeMutableRawBufferPointer) throws -> Void

    public init(
        name: String, dtype: DType, shape: [Int], byteCount: Int,
        read: @escaping @Sendable (_ offset: Int, _ buffer: UnsafeMutableRawBufferPointer) throws -> Void
    ) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.byteCount = byteCount
        self.read = read
    }

    /// A tensor whose bytes lie at `offset` in an open file.
    package static func slice(
        of file: SharedFile, at offset: Int64, name: String, dtype: DType, shape: [Int], byteCount: Int
    ) -> TensorSource {
        TensorSource(name: name, dtype: dtype, shape: shape, byteCount: byteCount) { start, buffer in
            guard let base = buffer.baseAddress else { return }
            try file.handle.read(into: base, count: buffer.count, at: offset + Int64(start))
        }
    }

    /// A tensor held in memory.
    public static func bytes(_ bytes: [UInt8], name: String, dtype: DType, shape: [Int]) -> TensorSource {
        TensorSource(name: name, dtype: dtype, shape: shape, byteCount: bytes.count) { start, buffer in
            bytes.withUnsafeBytes { source in
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[start..<(start + buffer.count)]))
            }
        }
    }
}

/// An open file shared by the tensor sources that read from it.
package final class SharedFile: Sendable {
    // FileHandle is only used through pread, which is safe from several threads.
    nonisolated(unsafe) package let handle: FileHandle

    package init(path: String) throws(CheckpointError) {
        self.handle = try FileHandle.openForReading(path)
    }
}
