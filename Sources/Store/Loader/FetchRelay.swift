import Checkpoint
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A checkpoint this node is fetching, as other nodes may read it meanwhile: the byte ranges of
/// each partition that have arrived and passed their checksums. A chained scale-out reads from a
/// node that is still receiving, so k nodes take about one transfer; a reader asking for a range
/// not in yet waits for it. When the fetch fails, waiting readers fail (and move to another source).
final class FetchRelay: Sendable {
    private struct Waiter {
        let id: Int
        let partition: Int
        let range: Range<Int>
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        /// Verified ranges per partition, sorted and merged.
        var arrived: [[Range<Int>]]
        var waiters: [Waiter] = []
        var nextWaiter = 0
        var failure: String?
    }

    private let state: Mutex<State>

    init(partitions: Int) {
        state = Mutex(State(arrived: Array(repeating: [], count: partitions)))
    }

    /// `range` of `partition` is written and verified.
    func arrived(partition: Int, range: Range<Int>) {
        let ready = state.withLock { state -> [Waiter] in
            var ranges = state.arrived[partition]
            ranges.append(range)
            ranges.sort { $0.lowerBound < $1.lowerBound }
            var merged: [Range<Int>] = []
            for next in ranges {
                if let last = merged.last, next.lowerBound <= last.upperBound {
                    merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, next.upperBound)
                } else {
                    merged.append(next)
                }
            }
            state.arrived[partition] = merged
            let ready = state.waiters.filter { $0.partition == partition && Self.covered($0.range, by: merged) }
            state.waiters.removeAll { waiter in ready.contains { $0.id == waiter.id } }
            return ready
        }
        for waiter in ready { waiter.continuation.resume() }
    }

    /// Whether `range` of `partition` has arrived.
    func has(partition: Int, range: Range<Int>) -> Bool {
        state.withLock { Self.covered(range, by: $0.arrived[partition]) }
    }

    /// The fetch stopped: readers waiting, and later ones, fail with `reason`.
    func fail(_ reason: String) {
        let waiters = state.withLock { state in
            state.failure = state.failure ?? reason
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters {
            waiter.continuation.resume(throwing: StoreError(.download, "the relayed fetch stopped: \(reason)"))
        }
    }

    /// Returns once `range` of `partition` has arrived and been verified.
    func wait(partition: Int, range: Range<Int>) async throws {
        let id = state.withLock { state -> Int in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome = state.withLock { state -> Result<Bool, any Error> in
                    if let failure = state.failure {
                        return .failure(StoreError(.download, "the relayed fetch stopped: \(failure)"))
                    }
                    if Self.covered(range, by: state.arrived[partition]) {
                        return .success(true)
                    }
                    state.waiters.append(Waiter(id: id, partition: partition, range: range, continuation: continuation))
                    return .success(false)
                }
                switch outcome {
                case .success(true): continuation.resume()
                case .success(false): break
                case .failure(let error): continuation.resume(throwing: error)
                }
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index)
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    private static func covered(_ range: Range<Int>, by ranges: [Range<Int>]) -> Bool {
        range.isEmpty || ranges.contains { $0.lowerBound <= range.lowerBound && range.upperBound <= $0.upperBound }
    }
}

/// One file of a checkpoint as this node serves it to peers: a file of a checkpoint in the store,
/// or of one still being fetched (a partition's reads then wait for the bytes to arrive).
public final class CheckpointFile: Sendable {
    public let name: String
    public let byteCount: Int
    private let descriptor: Int32
    private let relay: FetchRelay?
    private let partition: Int?

    init(path: String, name: String, byteCount: Int, relay: FetchRelay?, partition: Int?) throws {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw StoreError.system("cannot open \(path)", "open") }
        descriptor = fd
        self.name = name
        self.byteCount = byteCount
        self.relay = relay
        self.partition = partition
    }

    deinit { close(descriptor) }

    /// True while the file's checkpoint is still arriving (reads may wait).
    public var isRelayed: Bool { relay != nil }

    /// Reads `count` bytes at `offset` (within the file), waiting for them when the checkpoint is
    /// still being fetched.
    /// - Throws: `StoreError` when the fetch being relayed fails, or the read does.
    public func read(offset: Int, count: Int) async throws -> [UInt8] {
        precondition(offset >= 0 && count >= 0 && offset + count <= byteCount)
        if let relay, let partition { try await relay.wait(partition: partition, range: offset..<offset + count) }
        let fd = descriptor
        return try await runBlocking {
            var bytes = [UInt8](repeating: 0, count: count)
            var done = 0
            try bytes.withUnsafeMutableBytes { buffer in
                while done < count {
                    let n = pread(fd, buffer.baseAddress! + done, count - done, off_t(offset + done))
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { throw StoreError.system("read of a served checkpoint file failed", "pread") }
                    done += n
                }
            }
            return bytes
        }
    }
}
