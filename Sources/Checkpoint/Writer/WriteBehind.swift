import Foundation

/// Writes staging buffers to a partition file on a thread of its own, so that reading the
/// source (disk-bound) overlaps with checksumming and `pwrite` (memory-bound).
///
/// The producer takes a free buffer, fills it, submits it; buffers are written and block-hashed
/// strictly in submission order. A write error is reported to the producer at its next call.
final class WriteBehind: @unchecked Sendable {
    // All mutable state is guarded by `condition`; buffers are owned by exactly one side at a time.
    private let condition = NSCondition()
    private var free: [UnsafeAlignedBuffer]
    private var queue: [(buffer: UnsafeAlignedBuffer, count: Int, offset: Int)] = []
    private var closed = false
    private var failure: CheckpointError?
    private var done = false
    private var checksums: [UInt32] = []
    private let file: FileHandle
    private let blockSize: Int
    private let calls: SystemCalls

    init(file: FileHandle, blockSize: Int, calls: SystemCalls, bufferCount: Int, bufferSize: Int) {
        self.file = file
        self.blockSize = blockSize
        self.calls = calls
        self.free = (0..<bufferCount).map { _ in UnsafeAlignedBuffer(byteCount: bufferSize) }
        let thread = Thread { [self] in self.run() }
        thread.name = "sllm.checkpoint.write"
        thread.start()
    }

    /// A buffer to fill; waits while all are being written.
    func takeBuffer() throws(CheckpointError) -> UnsafeAlignedBuffer {
        condition.lock()
        defer { condition.unlock() }
        while free.isEmpty && failure == nil { condition.wait() }
        if let failure { throw failure }
        return free.removeLast()
    }

    /// Queues `count` bytes of `buffer` for writing at partition offset `offset`.
    func submit(_ buffer: UnsafeAlignedBuffer, count: Int, at offset: Int) throws(CheckpointError) {
        condition.lock()
        defer { condition.unlock() }
        if let failure { throw failure }
        queue.append((buffer, count, offset))
        condition.broadcast()
    }

    /// Waits for every queued write and returns the partition's block checksums.
    func finish() throws(CheckpointError) -> [UInt32] {
        condition.lock()
        defer { condition.unlock() }
        closed = true
        condition.broadcast()
        while !done { condition.wait() }
        if let failure { throw failure }
        return checksums
    }

    /// Stops the writer after what is queued; used when the producer fails.
    func abandon() {
        condition.lock()
        closed = true
        queue.removeAll()
        condition.broadcast()
        while !done { condition.wait() }
        condition.unlock()
    }

    private func run() {
        var hashes: [UInt32] = []
        while true {
            condition.lock()
            while queue.isEmpty && !closed { condition.wait() }
            if queue.isEmpty || failure != nil {
                checksums = hashes
                done = true
                condition.broadcast()
                condition.unlock()
                return
            }
            let job = queue.removeFirst()
            condition.unlock()

            let bytes = UnsafeRawBufferPointer(start: job.buffer.base, count: job.count)
            CRC32C.blockChecksums(bytes, blockSize: blockSize, into: &hashes)
            var error: CheckpointError?
            do {
                try file.write(bytes, at: Int64(job.offset), calls: calls)
            } catch let writeError {
                error = writeError
            }

            condition.lock()
            if let error, failure == nil { failure = error }
            free.append(job.buffer)
            condition.broadcast()
            condition.unlock()
        }
    }
}
