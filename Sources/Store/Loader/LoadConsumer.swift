import Checkpoint

/// A chunk of checkpoint bytes that has been read and verified, handed out in file order.
public struct LoadedChunk: @unchecked Sendable {
    // Sendable: the bytes are immutable once verified and live as long as the load's memory.
    public var partition: Int
    /// Offset inside the partition.
    public var offset: Int
    public var bytes: UnsafeRawBufferPointer
}

/// Receives the verified chunks of a load, in file order, while later chunks are still being
/// read. The seam for a device consumer (a CUDA or Metal target copies each chunk to device
/// memory with an async copy): the reader does not change.
public protocol LoadConsumer: Sendable {
    /// Called once per chunk, in order, on a reader thread; must not block for long.
    func consume(_ chunk: LoadedChunk) throws
}

/// Hands out nothing: for loads whose destination is host memory, where the bytes are already
/// in place.
public struct InPlaceConsumer: LoadConsumer {
    public init() {}
    public func consume(_ chunk: LoadedChunk) throws {}
}
