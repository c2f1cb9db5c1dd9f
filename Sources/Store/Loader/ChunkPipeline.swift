import Checkpoint
import Foundation

/// Reads a checkpoint's partitions into destination memory with N threads.
///
/// Chunks are assigned to threads interleaved in file order (chunk k to thread k mod N), so the
/// first bytes arrive first (ServerlessLLM gives each thread one contiguous slice instead). Each
/// thread reads its chunk, verifies the chunk's block checksums, and marks it done; whichever
/// thread completes the next chunk in file order hands it, and any done chunks after it, to the
/// consumer. Nothing unverified is handed out; the first error stops every thread.
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

    let threads: Int

    /// One chunk per cache segment (a run of whole tensors), read into `bases[i]`.
    static func chunks(index: CheckpointIndex, segments: [DRAMCache.Segment], bases: [UnsafeMutableRawPointer]) -> [Chunk] {
        var byPartition: [Int: [CheckpointIndex.TensorRecord]] = [:]
        for tensor in index.tensors { byPartition[tensor.partition, default: []].append(tensor) }
        return zip(segments, bases).map { segment, base in
            let inside = (byPartition[segment.partition] ?? []).filter {
                $0.offset >= segment.offset && $0.offset + $0.byteCount <= segment.offset + segment.byteCount
            }
            return Chunk(
                partition: segment.partition, offset: segment.offset, length: segment.byteCount, destination: base,
                tensors: inside.map { ($0, $0.offset - segment.offset) })
        }
    }

    /// Runs the load on `threads` dedicated threads and returns when every chunk is handed out.
    func run(
        _ chunks: [Chunk], source: some ChunkSource, partitionFiles: [String],
        consumer: some LoadConsumer, isCancelled: @escaping @Sendable () -> Bool,
        progress: ProgressHandler?
    ) throws -> Timing {
        let state = PipelineState(count: chunks.count)
        let total = Int64(chunks.reduce(0) { $0 + $1.length })
        let boxed = UncheckedChunks(chunks: chunks)
        let start = DispatchTime.now().uptimeNanoseconds
        let group = DispatchGroup()
        let threadCount = max(1, min(threads, chunks.count))
        for thread in 0..<threadCount {
            group.enter()
            let worker = Thread {
                defer { group.leave() }
                var k = thread
                while k < boxed.chunks.count {
                    if state.failed || isCancelled() {
                        state.fail(CancellationError())
                        return
                    }
                    let chunk = boxed.chunks[k]
                    do {
                        let t0 = DispatchTime.now().uptimeNanoseconds
                        try source.read(partition: chunk.partition, offset: chunk.offset, length: chunk.length, into: chunk.destination)
                        let t1 = DispatchTime.now().uptimeNanoseconds
                        for (record, offset) in chunk.tensors {
                            let bytes = UnsafeRawBufferPointer(start: chunk.destination + offset, count: record.byteCount)
                            guard CRC32C.checksum(bytes) == record.crc32c else {
                                throw CheckpointError(
                                    .corrupt,
                                    "tensor `\(record.name)` is corrupt: \(partitionFiles[chunk.partition]) bytes \(record.offset)..<\(record.offset + record.byteCount) fail their checksum")
                            }
                        }
                        let t2 = DispatchTime.now().uptimeNanoseconds
                        state.addTimes(read: t1 - t0, verify: t2 - t1)
                        try state.complete(k) { ready in
                            let c = boxed.chunks[ready]
                            try consumer.consume(LoadedChunk(
                                partition: c.partition, offset: c.offset,
                                bytes: UnsafeRawBufferPointer(start: c.destination, count: c.length)))
                            let done = state.addDelivered(Int64(c.length))
                            progress?(Progress(phase: "load", completedBytes: done, totalBytes: total))
                        }
                    } catch {
                        state.fail(error)
                        return
                    }
                    k += threadCount
                }
            }
            worker.name = "sllm.load.\(thread)"
            worker.stackSize = 1 << 20
            worker.start()
        }
        group.wait()
        if let error = state.error { throw error }
        let times = state.times
        return Timing(
            wallSeconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9,
            readSeconds: Double(times.read) / 1e9, verifySeconds: Double(times.verify) / 1e9)
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
            if firstError == nil || (firstError is CancellationError && !(error is CancellationError)) { firstError = error }
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
