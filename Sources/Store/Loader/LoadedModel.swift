public import Checkpoint

/// Which tier served a load.
public enum Tier: String, Sendable, Codable {
    /// Already in the DRAM cache: handed out without reading or copying.
    case dram
    /// Read from the local store (SSD).
    case ssd
    /// Fetched from a remote store while streaming into memory.
    case remote
}

/// Per-stage timings of one load, in seconds.
public struct LoadTimings: Sendable, Codable {
    /// Waiting for another load of the same model (coalescing) or for the index.
    public var queue: Double = 0
    /// Wall time of the read pipeline (reads, verification and hand-out overlap).
    public var read: Double = 0
    /// Thread time spent verifying checksums (overlapped with reads).
    public var verify: Double = 0
    /// Thread time spent in reads.
    public var io: Double = 0
    /// From the last chunk to the model being handed to the caller.
    public var handOut: Double = 0
    /// Everything, request to return.
    public var total: Double = 0
}

/// A model in memory, ready for an engine: named tensor views, config and tokenizer.
///
/// Holding it pins the memory: a cached model cannot be evicted from DRAM while any
/// `LoadedModel` of it is alive (in this or another process). Views are valid for the
/// object's lifetime.
public final class LoadedModel: ModelWeights {
    public let name: String
    public let index: CheckpointIndex
    /// The checkpoint directory in the local store (tokenizer files are read from there).
    public let directory: String
    public let tier: Tier
    public let timings: LoadTimings
    /// Whether the bytes live in the DRAM cache (false when the model did not fit its budget).
    public let cached: Bool
    private let storage: any Sendable
    /// The store's reader, whose already-decoded index serves `fileContents`.
    private let reader: CheckpointReader
    /// Where each tensor (in index order) starts.
    private let starts: [UncheckedSendable<UnsafeRawPointer>]
    private let positions: [String: Int]

    /// `segments[i]` (a run of whole tensors of one partition) lies at `bases[i]`.
    init(
        reader: CheckpointReader, name: String, tier: Tier, timings: LoadTimings, cached: Bool,
        storage: any Sendable, segments: [DRAMCache.Segment], bases: [UnsafeRawPointer]
    ) {
        self.reader = reader
        self.name = name
        self.index = reader.index
        self.directory = reader.directory
        self.tier = tier
        self.timings = timings
        self.cached = cached
        self.storage = storage
        var starts: [UncheckedSendable<UnsafeRawPointer>] = []
        var positions: [String: Int] = [:]
        var segment = 0
        let order = zip(segments, bases).sorted { ($0.0.partition, $0.0.offset) < ($1.0.partition, $1.0.offset) }
        for (position, tensor) in index.tensors.enumerated() {
            // Tensors and segments are both in file order; find the segment holding this tensor.
            if segment >= order.count || !order[segment].0.holds(tensor) {
                segment = order.firstIndex { $0.0.holds(tensor) }!
            }
            starts.append(.init(order[segment].1 + (tensor.offset - order[segment].0.offset)))
            positions[tensor.name] = position
        }
        self.starts = starts
        self.positions = positions
    }

    /// The tensor named `name`, or nil.
    public func tensor(_ name: String) -> TensorView? {
        positions[name].map(view)
    }

    /// Every tensor, in checkpoint order.
    public var tensors: [TensorView] { index.tensors.indices.map(view) }

    private func view(_ position: Int) -> TensorView {
        let record = index.tensors[position]
        return TensorView(
            name: record.name, dtype: record.dtype, shape: record.shape,
            bytes: UnsafeRawBufferPointer(start: starts[position].value, count: record.byteCount))
    }

    /// A small file of the checkpoint (tokenizer, configs), checksum-verified.
    public func fileContents(_ name: String) throws -> [UInt8] {
        try reader.fileContents(name)
    }

    public func mappedFile(_ name: String) throws -> MappedFile {
        try reader.mappedFile(name)
    }

    /// Total bytes of the partitions in memory.
    public var byteCount: Int { index.partitions.reduce(0) { $0 + $1.byteCount } }
}
