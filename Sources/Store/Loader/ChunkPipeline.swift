import Checkpoint
import Foundation

/// Reads a checkpoint's partitions into destination memory with N reader threads.
///
/// Chunks are assigned to readers interleaved in file order (chunk k to reader k mod N), so the
/// first bytes arrive first (ServerlessLLM gives each thread one contiguous slice instead). A
/// reader only reads and queues the chunk; verifier threads check each tensor of it against its
/// checksum and mark it done; whichever completes the next chunk in file order hands it, and any
/// done chunks after it, to the consumer. Nothing unverified is handed out; the first error
/// stops every thread.
struct ChunkPipeline {
    struct Chunk {
        var partition: Int
        var offset: Int
        var length: Int
        var destination: UnsafeMutableRawPointer
        /// The tensors inside, verified against their own checksums once the chunk is read.
        var tensors: [(record: CheckpointIndex.TensorRecord, offsetInChunk: Int)]
    }

    struct Timing {
        /// Wall time from start to the last chunk handed out.
        var wallSeconds: Double
        /// Thread time spent in reads and in verification.
        var readSeconds: Double
        var verifySeconds: Double
    }

    /// Reader threads.
    let threads: Int
    /// Checksum threads.
    let verifiers: Int

    /// One chunk per cache segment (a run of whole tensors), read into `bases[i]`; with
    /// `maxChunkBytes`, segments are cut at tensor boundaries into chunks of at most that many
    /// bytes (a tensor larger stays whole), so a streaming load hands out layer by layer.
    static func chunks(
        index: CheckpointIndex, segments: [DRAMCache.Segment], bases: [UnsafeMutableRawPointer],
        maxChunkBytes: Int = .max
    ) -> [Chunk] {
        var byPartition: [Int: [CheckpointIndex.TensorRecord]] = [:]
        for tensor in index.tensors { byPartition[tensor.partition, default: []].append(tensor) }
        for key in byPartition.keys { byPartition[key]!.sort { $0.offset < $1.offset } }
        var chunks: [Chunk] = []
        for (segment, base) in zip(segments, bases) {
            let inside = (byPartition[segment.partition] ?? []).filter {
                $0.offset >= segment.offset && $0.offset + $0.byteCount <= segment.offset + segment.byteCount
            }
            guard !inside.isEmpty else {
                chunks.append(
                    Chunk(
                        partition: segment.partition, offset: segment.offset, length: segment.byteCount,
                        destination: base, tensors: []))
                continue
            }
            var first = 0
            while first < inside.count {
                // Take whole tensors while the chunk (up to the next tensor's start) stays small;
                // the first chunk starts with the segment, the last ends with it.
                let start = first == 0 ? segment.offset : inside[first].offset
                var last = first
                while last + 1 < inside.count
                    && inside[last + 1].offset + inside[last + 1].byteCount - start <= maxChunkBytes
                {
                    last += 1
                }
                let stop = last + 1 < inside.count ? inside[last + 1].offset : segment.offset + segment.byteCount
                chunks.append(
                    Chunk(
                        partition: segment.partition, offset: start, length: stop - start,
                        destination: base + (start - segment.offset),
                        tensors: inside[first...last].map { ($0, $0.offset - start) }))
                first = last + 1
            }
        }
        return chunks
    }

    /// Runs the load on `threads` dedicated threads and returns when every chunk is handed out.
    /// With `readProgress`, a chunk larger than `pieceBytes` is read piece by piece, and after
    /// each piece (or a smaller chunk's one read) `readProgress(k, bytes)` says how much of chunk
    /// `k` is in, not yet verified: an engine computes on the first rows of a large matrix while
    /// the rest is still read.
    func run(
        _ chunks: [Chunk], source: some ChunkSource, partitionFiles: [String],
        consumer: some LoadConsumer, isCancelled: @escaping @Sendable () -> Bool,
        progress: ProgressHandler?, readProgress: (@Sendable (Int, Int) -> Void)? = nil,
        pieceBytes: Int = 2 << 20
    ) throws -> Timing {
        let state = PipelineState(count: chunks.count)
        let total = Int64(chunks.reduce(0) { $0 + $1.length })
        let boxed = UncheckedChunks(chunks: chunks)
        let start = DispatchTime.now().uptimeNanoseconds
        let group = DispatchGroup()
        let threadCount = max(1, min(threads, chunks.count))
        let queue = VerifyQueue(readers: threadCount)
        // Readers only read, in file order, so the device sees few sequential streams and is
        // never idle while a checksum is computed; verifiers check and hand out in order.
        for thread in 0..<threadCount {
            group.enter()
            let reader = Thread {
                defer {
                    queue.readerFinished()
                    group.leave()
                }
                var k = thread
                while k < boxed.chunks.count {
                    if state.failed || isCancelled() {
                        state.fail(CancellationError())
                        return
                    }
                    let chunk = boxed.chunks[k]
                    do {
                        let t0 = DispatchTime.now().uptimeNanoseconds
                        if let readProgress, chunk.length > pieceBytes {
                            // Pieces of whole pages: a chunk's offset and length are 4 KiB multiples.
                            let piece = max(4096, pieceBytes / 4096 * 4096)
                            var done = 0
                            while done < chunk.length {
                                if state.failed || isCancelled() { throw CancellationError() }
                                let count = min(piece, chunk.length - done)
                                try source.read(
                                    partition: chunk.partition, offset: chunk.offset + done, length: count,
                                    into: chunk.destination + done)
                                done += count
                                readProgress(k, done)
                            }
                        } else {
                            try source.read(
                                partition: chunk.partition, offset: chunk.offset, length: chunk.length,
                                into: chunk.destination)
                            readProgress?(k, chunk.length)
                        }
                        state.addTimes(read: DispatchTime.now().uptimeNanoseconds - t0, verify: 0)
                        queue.push(k)
                    } catch {
                        state.fail(error)
                        return
                    }
                    k += threadCount
                }
            }
            reader.name = "sllm.load.read.\(thread)"
            reader.stackSize = 1 << 20
            reader.start()
        }
        for thread in 0..<max(1, verifiers) {
            group.enter()
            let verifier = Thread {
                defer { group.leave() }
                while let k = queue.pop() {
                    if state.failed { continue }
                    // Reads may all be done; cancellation still stops verification and hand-out.
                    if isCancelled() {
                        state.fail(CancellationError())
                        continue
                    }
                    let chunk = boxed.chunks[k]
                    do {
                        let t0 = DispatchTime.now().uptimeNanoseconds
                        for (record, offset) in chunk.tensors {
                            let bytes = UnsafeRawBufferPointer(
                                start: chunk.destination + offset, count: record.byteCount)
                            guard CRC32C.checksum(bytes) == record.crc32c else {
                                throw CheckpointError(
                                    .corrupt,
                                    "tensor `\(record.name)` is corrupt: \(partitionFiles[chunk.partition]) bytes \(record.offset)..<\(record.offset + record.byteCount) fail their checksum"
                                )
                            }
                        }
                        state.addTimes(read: 0, verify: DispatchTime.now().uptimeNanoseconds - t0)
                        try state.complete(k) { ready in
                            let c = boxed.chunks[ready]
                            try consumer.consume(
                                LoadedChunk(
                                    partition: c.partition, offset: c.offset,
                                    bytes: UnsafeRawBufferPointer(start: c.destination, count: c.length)))
                            let done = state.addDelivered(Int64(c.length))
                            progress?(Progress(phase: "load", completedBytes: done, totalBytes: total))
                        }
                    } catch {
                        state.fail(error)
                    }
                }
            }
            verifier.name = "sllm.load.verify.\(thread)"
            verifier.stackSize = 1 << 20
            verifier.start()
        }
        group.wait()
        if let error = state.error { throw error }
        let times = state.times
        return Timing(
            wallSeconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9,
            readSeconds: Double(times.read) / 1e9, verifySeconds: Double(times.verify) / 1e9)
    }
}

/// Chunk indices read and waiting for verification; closed when every reader is done.
private final class VerifyQueue: @unchecked Sendable {
    // @unchecked: all state is guarded by `condition`.
    private let condition = NSCondition()
    private var items: [Int] = []
    private var head = 0
    private var readersLeft: Int

    init(readers: Int) { readersLeft = readers }

    func push(_ k: Int) {
        condition.lock()
        items.append(k)
        condition.signal()
        condition.unlock()
    }

    func readerFinished() {
        condition.lock()
        readersLeft -= 1
        condition.broadcast()
        condition.unlock()
    }

    /// The next chunk to verify, or nil when every reader is done and nothing is left.
    func pop() -> Int? {
        condition.lock()
        defer { condition.unlock() }
        while head == items.count && readersLeft > 0 { condition.wait() }
        guard head < items.count else { return nil }
        head += 1
        return items[head - 1]
    }
}

/// The chunk list, read-only while threads run.
private struct UncheckedChunks: @unchecked Sendable {
    // Sendable: immutable after construction; each chunk's memory is written by one thread.
    let chunks: [ChunkPipeline.Chunk]
}

/// Shared progress of a pipeline: which chunks are done, the next one to hand out, the first
/// error. Guarded by one lock; the hand-out itself runs under a second lock to keep order.
private final class PipelineState: @unchecked Sendable {
    // @unchecked: every field is guarded by `lock` (or `delivery` for handing out in order).
    private let lock = NSLock()
    private let delivery = NSLock()
    private var done: [Bool]
    private var next = 0
    private var delivered: Int64 = 0
    private var firstError: (any Error)?
    private var readNanos: UInt64 = 0
    private var verifyNanos: UInt64 = 0

    init(count: Int) { done = Array(repeating: false, count: count) }

    var failed: Bool { lock.withLock { firstError != nil } }
    var error: (any Error)? { lock.withLock { firstError } }
    var times: (read: UInt64, verify: UInt64) { lock.withLock { (readNanos, verifyNanos) } }

    func fail(_ error: any Error) {
        lock.withLock {
            // A cancellation caused by another thread's failure must not hide that failure.
            if firstError == nil || (firstError is CancellationError && !(error is CancellationError)) {
                firstError = error
            }
        }
    }

    func addTimes(read: UInt64, verify: UInt64) {
        lock.withLock {
            readNanos += read
            verifyNanos += verify
        }
    }

    func addDelivered(_ bytes: Int64) -> Int64 {
        lock.withLock {
            delivered += bytes
            return delivered
        }
    }

    /// Marks chunk `k` done and hands out every chunk that is now next in order.
    func complete(_ k: Int, handOut: (Int) throws -> Void) throws {
        lock.withLock { done[k] = true }
        try delivery.withLock {
            while true {
                let ready: Int? = lock.withLock {
                    guard next < done.count, done[next], firstError == nil else { return nil }
                    next += 1
                    return next - 1
                }
                guard let ready else { return }
                try handOut(ready)
            }
        }
    }
}
