public import Checkpoint
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Which tier served a load.
public enum Tier: String, Sendable, Codable {
    /// Already in the DRAM cache: handed out without reading or copying.
    case dram
    /// Read from the local store (SSD).
    case ssd
    /// Fetched from another node of the cluster (which held it, or was fetching it) while
    /// streaming into memory and the SSD.
    case peer
    /// Fetched from a remote store while streaming into memory and the SSD.
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
    /// Bytes of a fetched checkpoint's partitions by source (a peer node's name or a remote
    /// store's URL); nil for a load from this node's tiers.
    public var fetched: [String: Int]?
    /// For each of those sources, the seconds from its first chunk's request to its last
    /// chunk's arrival: its bytes over them are the link's rate.
    public var fetchSeconds: [String: Double]?

    init() {}

    /// The stages of a load whose read pipeline ran.
    init(queue: Double, pipeline timing: ChunkPipeline.Timing, handOut: Double = 0, total: Double = 0) {
        self.queue = queue
        read = timing.wallSeconds
        verify = timing.verifySeconds
        io = timing.readSeconds
        self.handOut = handOut
        self.total = total
    }
}

/// A model in memory, ready for an engine: named tensor views, config and tokenizer.
///
/// Holding it pins the memory: a cached model cannot be evicted from DRAM while any
/// `LoadedModel` of it is alive (in this or another process). Views are valid for the
/// object's lifetime.
///
/// A streaming load (`ModelLoader.load(_:streaming:)`) hands it out before the bytes arrive:
/// `isComplete` is false and `waitForTensors` blocks until the named tensors are read and
/// verified. Dropping such a model before its load ends stops the load.
public final class LoadedModel: ModelWeights {
    public let name: String
    public let index: CheckpointIndex
    /// The checkpoint directory in the local store (tokenizer files are read from there).
    public let directory: String
    public let tier: Tier
    /// Whether the bytes live in the DRAM cache (false when the model did not fit its budget).
    public let cached: Bool
    /// What keeps the bytes alive: the pin (cached), the anonymous memory (not cached), or
    /// while a streaming load runs, its reservation (the pin joins it at the end).
    private let storage: Mutex<[any Sendable]>
    private let loadTimings: Mutex<LoadTimings>
    /// Set while a streaming load may still be reading.
    let arrival: WeightArrival?
    /// The store's reader, whose already-decoded index serves `fileContents`.
    private let reader: CheckpointReader
    /// Where each tensor (in index order) starts.
    private let starts: [UncheckedSendable<UnsafeRawPointer>]
    private let positions: [String: Int]

    /// `segments[i]` (a run of whole tensors of one partition) lies at `bases[i]`.
    init(
        reader: CheckpointReader, name: String, tier: Tier, timings: LoadTimings, cached: Bool,
        storage: any Sendable, segments: [DRAMCache.Segment], bases: [UnsafeRawPointer], arrival: WeightArrival? = nil
    ) {
        self.reader = reader
        self.name = name
        self.index = reader.index
        self.directory = reader.directory
        self.tier = tier
        self.loadTimings = Mutex(timings)
        self.cached = cached
        self.storage = Mutex([storage])
        self.arrival = arrival
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

    deinit {
        // Nobody computes on it any more: a load still reading into it stops.
        if let arrival, !arrival.isFinished { arrival.cancel() }
    }

    /// Per-stage timings; a streaming load's are final once it completes.
    public var timings: LoadTimings { loadTimings.withLock { $0 } }

    /// A streaming load has finished: what keeps the bytes alive from now on, and the timings.
    func complete(storage: any Sendable, timings: LoadTimings) {
        self.storage.withLock { $0.append(storage) }
        loadTimings.withLock { $0 = timings }
    }

    public var isComplete: Bool { arrival?.isFinished ?? true }

    public func waitForTensors(_ names: [String]) throws {
        try arrival?.wait(for: names)
    }

    public func hasArrived(_ names: [String]) -> Bool {
        arrival?.hasArrived(names) ?? true
    }

    public func waitForReadBytes(of tensor: String, count: Int) throws -> Bool {
        guard let arrival else { return true }
        return try arrival.waitForRead(tensor, count: count)
    }

    /// Reads the ranges from the tensor's partition file, unverified (the prompt's embedding rows
    /// while the load still reads the layers before them). Every range is handed to the device
    /// at once (`POSIX_FADV_WILLNEED`), then read in turn: the reads queue behind the load's
    /// sequential stream once, not once per row (on this project's virtual disk 45 rows of Gemma
    /// took 4–17 ms read one by one on eight threads, and 0–1 ms so). Nil when the tensor is
    /// unknown, the ranges leave it, or a read fails.
    public func unverifiedBytes(of tensor: String, ranges: [Range<Int>]) -> [[UInt8]]? {
        guard let position = positions[tensor] else { return nil }
        let record = index.tensors[position]
        guard ranges.allSatisfy({ $0.lowerBound >= 0 && $0.upperBound <= record.byteCount }) else { return nil }
        let path = directory + "/" + index.partitions[record.partition].file
        guard let file = try? Checkpoint.FileHandle.openForReading(path) else { return nil }
        // No readahead around a row: only its own pages.
        posix_fadvise(file.fd, 0, 0, POSIX_FADV_RANDOM)
        for range in ranges {
            posix_fadvise(file.fd, off_t(record.offset + range.lowerBound), off_t(range.count), POSIX_FADV_WILLNEED)
        }
        var rows: [[UInt8]] = []
        rows.reserveCapacity(ranges.count)
        for range in ranges {
            guard let bytes = try? file.readBytes(count: range.count, at: Int64(record.offset + range.lowerBound))
            else { return nil }
            rows.append(bytes)
        }
        return rows
    }

    /// A streaming load still running: what to wait on for its end; nil when complete.
    public var completion: LoadCompletion? {
        guard let arrival, !arrival.isFinished else { return nil }
        return LoadCompletion(arrival: arrival, tier: tier, byteCount: byteCount) { [weak self] in
            self?.timings.total ?? 0
        }
    }

    /// Waits until a streaming load has every byte in memory and verified (at once for a load
    /// that was not streamed); throws the load's error.
    public func waitUntilComplete() throws {
        try arrival?.waitUntilFinished()
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
