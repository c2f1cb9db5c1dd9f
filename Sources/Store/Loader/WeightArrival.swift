import Checkpoint
import Foundation
import Synchronization

/// Which chunks of a streaming load have been handed out (read and verified), in file order, so
/// an engine can compute on the first layers while later ones are still being read.
///
/// Waiters block on a condition: an engine's forward pass is synchronous code on its own thread.
final class WeightArrival: @unchecked Sendable {
    // @unchecked: `delivered`, `readPrefix`, `failure` and `finished` are guarded by `condition`;
    // the map is immutable after init.
    private let condition = NSCondition()
    private var delivered = 0
    private var failure: (any Error)?
    private var finished = false
    private let cancelled = Atomic<Bool>(false)
    /// The chunk (in hand-out order) holding each tensor, and where in it the tensor starts.
    private let chunkOfTensor: [String: (chunk: Int, offset: Int)]
    /// Bytes of each chunk read so far from its start (unverified): a chunk larger than a read
    /// is read piece by piece.
    private var readPrefix: [Int]

    init(chunks: [ChunkPipeline.Chunk]) {
        var map: [String: (chunk: Int, offset: Int)] = [:]
        for (position, chunk) in chunks.enumerated() {
            for (record, offset) in chunk.tensors { map[record.name] = (position, offset) }
        }
        chunkOfTensor = map
        readPrefix = Array(repeating: 0, count: chunks.count)
    }

    /// The first `bytes` of chunk `k` have been read (not yet verified).
    func chunkRead(_ k: Int, upTo bytes: Int) {
        condition.withLock {
            guard readPrefix.indices.contains(k), bytes > readPrefix[k] else { return }
            readPrefix[k] = bytes
            condition.broadcast()
        }
    }

    /// The next chunk in order has been handed out.
    func chunkDelivered() {
        condition.withLock {
            delivered += 1
            condition.broadcast()
        }
    }

    /// Every chunk is in and the memory is committed: waits return at once from now on.
    func finish() {
        condition.withLock {
            finished = true
            condition.broadcast()
        }
    }

    /// The load stopped: waiters for what has not arrived get `error`.
    func fail(_ error: any Error) {
        condition.withLock {
            if failure == nil { failure = error }
            condition.broadcast()
        }
    }

    var isFinished: Bool { condition.withLock { finished } }

    /// Asks the load to stop (its model is no longer wanted).
    func cancel() { cancelled.store(true, ordering: .relaxed) }
    var isCancelled: Bool { cancelled.load(ordering: .relaxed) }

    /// Whether every named tensor has arrived (never blocks).
    func hasArrived(_ names: [String]) -> Bool {
        let last = lastChunk(holding: names)
        return condition.withLock { finished || delivered > last }
    }

    /// Blocks until the load has finished (every byte in, the memory committed).
    func waitUntilFinished() throws {
        try block { finished }
    }

    /// Blocks until every named tensor has arrived; names the load does not hold are ignored.
    func wait(for names: [String]) throws {
        let last = lastChunk(holding: names)
        try block { finished || delivered > last }
    }

    /// Blocks until the first `count` bytes of tensor `name` have been read, verified or not;
    /// false (at once) for a name the load does not hold.
    func waitForRead(_ name: String, count: Int) throws -> Bool {
        guard let (chunk, offset) = chunkOfTensor[name] else { return false }
        try block { finished || delivered > chunk || readPrefix[chunk] >= offset + count }
        return true
    }

    /// The last chunk (in hand-out order) holding one of `names`; -1 for none.
    private func lastChunk(holding names: [String]) -> Int {
        names.compactMap { chunkOfTensor[$0]?.chunk }.max() ?? -1
    }

    /// Waits on the condition until `ready` (read under it) holds; throws the load's failure if
    /// it comes first.
    private func block(until ready: () -> Bool) throws {
        condition.lock()
        defer { condition.unlock() }
        while !ready() {
            if let failure { throw failure }
            condition.wait()
        }
    }
}

/// Marks chunks as arrived as the pipeline hands them out.
struct ArrivalConsumer: LoadConsumer {
    /// Nil for a load that is not streamed: nothing to mark.
    let arrival: WeightArrival?
    func consume(_ chunk: LoadedChunk) throws { arrival?.chunkDelivered() }
}

/// The end of a streaming load, to wait for without holding its model (dropping the model still
/// stops the load).
public struct LoadCompletion: Sendable {
    let arrival: WeightArrival
    public let tier: Tier
    /// Bytes the load reads.
    public let byteCount: Int
    let timings: @Sendable () -> Double

    /// Blocks until every byte is in and verified; throws the load's error.
    public func wait() throws { try arrival.waitUntilFinished() }

    /// Seconds the whole load took, once it has finished (0 when its model is gone).
    public var seconds: Double { timings() }
}
