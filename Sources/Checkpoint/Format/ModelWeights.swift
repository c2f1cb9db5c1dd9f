/// A tensor of a model in memory: a read-only view into memory its owner keeps alive.
public struct TensorView: @unchecked Sendable {
    // Sendable: a read-only view; the `ModelWeights` that handed it out keeps the memory alive.
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    public var bytes: UnsafeRawBufferPointer

    public init(name: String, dtype: DType, shape: [Int], bytes: UnsafeRawBufferPointer) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
    }
}

/// A checkpoint's weights in memory, as an engine computes on them: named tensor views, the
/// index (config, tokenizer facts) and the checkpoint's small files. The memory stays valid as
/// long as the object lives. The store's `LoadedModel` is one; an engine needs nothing else of
/// the store.
public protocol ModelWeights: AnyObject, Sendable {
    /// The model's name (for messages).
    var name: String { get }
    var index: CheckpointIndex { get }
    /// The tensor named `name`, or nil.
    func tensor(_ name: String) -> TensorView?
    /// A small file of the checkpoint (tokenizer, configs), checksum-verified.
    func fileContents(_ name: String) throws -> [UInt8]
    /// A file of the checkpoint mapped read-only, checksum-verified (`vocabulary.bin`).
    func mappedFile(_ name: String) throws -> MappedFile
}
