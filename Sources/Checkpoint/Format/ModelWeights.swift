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
    /// Whether every tensor's bytes are in memory and verified. False while a streaming load
    /// (serve while loading) still reads: views are valid addresses, but their bytes may not
    /// have arrived; `waitForTensors` says when they have.
    var isComplete: Bool { get }
    /// Blocks until the named tensors' bytes are in memory and verified. Throws the load's error
    /// when it failed or was cancelled before they arrived. Returns at once when `isComplete`.
    func waitForTensors(_ names: [String]) throws
    /// Whether the named tensors have arrived (never blocks).
    func hasArrived(_ names: [String]) -> Bool
    /// Byte ranges of a tensor that has not arrived, read straight from where the load reads
    /// it and **not verified**: for a pass that computes on a few rows before the tensor
    /// arrives (a prompt's embeddings), and then compares these bytes with the verified tensor
    /// before anything it computed is used. Nil when the weights cannot provide them.
    func unverifiedBytes(of tensor: String, ranges: [Range<Int>]) -> [[UInt8]]?
    /// Blocks until the first `count` bytes of a tensor that has not arrived are in its memory,
    /// read but **not verified**: a pass may compute on them (the rows of a large output matrix
    /// as they come in) and uses nothing it computed until `waitForTensors` says the tensor has
    /// arrived, verified. The bytes in memory do not change after they are read, so what the
    /// pass computed on is then the verified tensor. False when the weights cannot tell (wait
    /// for the whole tensor instead); throws the load's error.
    func waitForReadBytes(of tensor: String, count: Int) throws -> Bool
}

extension ModelWeights {
    /// Weights handed out whole: nothing arrives later.
    public var isComplete: Bool { true }
    public func waitForTensors(_ names: [String]) throws {}
    public func hasArrived(_ names: [String]) -> Bool { true }
    public func unverifiedBytes(of tensor: String, ranges: [Range<Int>]) -> [[UInt8]]? { nil }
    public func waitForReadBytes(of tensor: String, count: Int) throws -> Bool { isComplete }
}
