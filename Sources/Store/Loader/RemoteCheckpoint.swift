import AsyncHTTPClient
import Checkpoint
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A checkpoint being fetched from remote stores or peers (`BASE/NAME/index`,
/// `BASE/NAME/data-0000`, …: any HTTP server with range support over a data directory's
/// `models/`, or another node's worker).
///
/// The index and small files come first, into a hidden directory in the local store. Then the
/// loader's reader threads fetch partition chunks with range requests straight into the
/// destination memory, spread over the plan's sources; each chunk is checked against its
/// tensors' checksums before it is accepted (a source that fails or sends bad bytes is passed
/// over, and the chunk comes from the next one), then written to the SSD file and offered to
/// the nodes relaying from this one. `install()` publishes the checkpoint in the store (atomic
/// rename) once every byte is in and verified; `abandon()` removes it.
final class RemoteCheckpoint: Sendable {
    let reader: CheckpointReader
    let source: RemoteChunkSource
    let temporary: String
    let destination: String
    /// Whether the index came from another node (the load's tier is then `.peer`).
    let fromPeer: Bool

    private init(
        reader: CheckpointReader, source: RemoteChunkSource, temporary: String, destination: String, fromPeer: Bool
    ) {
        self.reader = reader
        self.source = source
        self.temporary = temporary
        self.destination = destination
        self.fromPeer = fromPeer
    }

    static func open(_ name: ModelName, store: ModelStore, plan: FetchPlan, logger: Logger) async throws
        -> RemoteCheckpoint
    {
        var failures: [String] = []
        for (position, origin) in plan.sources.enumerated() {
            let indexURL = origin.url(name, CheckpointIndex.fileName)
            let indexBytes: [UInt8]
            do {
                guard let bytes = try await get(indexURL, from: origin, limit: 1 << 28) else {
                    failures.append("\(origin): HTTP 404")
                    continue
                }
                indexBytes = bytes
            } catch {
                failures.append("\(origin): \(error)")
                continue
            }
            let index: CheckpointIndex
            do {
                index = try CheckpointIndex.decode(indexBytes, path: indexURL.absoluteString)
            } catch {
                failures.append("\(origin): \(error)")
                continue
            }

            try FileSystem.makeDirectories(store.modelsDirectory)
            let destination = store.directory(for: name)
            let temporary =
                store.modelsDirectory + "/." + name.rawValue + ".partial-\(getpid())-" + FileSystem.randomSuffix()
            try FileSystem.makeDirectory(temporary)
            do {
                // Sources after this one in the plan may still serve chunks; those before it did not answer.
                let usable = Array(plan.sources[position...])
                for file in index.files {
                    let bytes = try await smallFile(file, of: name, from: usable)
                    let handle = try Checkpoint.FileHandle.create(temporary + "/" + file.name)
                    try bytes.withUnsafeBytes { try handle.write($0, at: 0) }
                    try handle.sync()
                }
                var descriptors: [Int32] = []
                for partition in index.partitions {
                    let fd = Glibc.open(temporary + "/" + partition.file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
                    guard fd >= 0, ftruncate(fd, off_t(partition.byteCount)) == 0 else {
                        if fd >= 0 { close(fd) }
                        descriptors.forEach { close($0) }
                        throw StoreError.system("cannot create \(temporary)/\(partition.file)", "open")
                    }
                    descriptors.append(fd)
                }
                let handle = try Checkpoint.FileHandle.create(temporary + "/" + CheckpointIndex.fileName)
                try indexBytes.withUnsafeBytes { try handle.write($0, at: 0) }
                let source = RemoteChunkSource(
                    model: name, index: index, sources: usable, spread: position == 0 ? plan.spread : 1,
                    descriptors: descriptors, logger: logger)
                let reader = try CheckpointReader(directory: temporary)
                logger.info(
                    "fetching a checkpoint",
                    metadata: [
                        "model": "\(name)",
                        "from": "\(usable.prefix(source.spread).map(\.label).joined(separator: ", "))",
                    ])
                return RemoteCheckpoint(
                    reader: reader, source: source, temporary: temporary, destination: destination,
                    fromPeer: origin.isPeer)
            } catch {
                FileSystem.removeTree(temporary)
                throw error
            }
        }
        throw StoreError(
            .notFound,
            "model `\(name)` is neither in the store nor at any source (\(failures.joined(separator: "; ")))")
    }

    /// A checkpoint's index and those of its small files named in `files`, from the first source
    /// that has it (what a controller needs to deploy a model no node holds yet); nothing is
    /// written. Nil when no source has it.
    static func describe(_ name: ModelName, files: Set<String>, from sources: [CheckpointSource]) async throws
        -> (index: CheckpointIndex, files: [String: [UInt8]])?
    {
        for (position, origin) in sources.enumerated() {
            let url = origin.url(name, CheckpointIndex.fileName)
            guard let bytes = try? await get(url, from: origin, limit: 1 << 28),
                let index = try? CheckpointIndex.decode(bytes, path: url.absoluteString)
            else { continue }
            var contents: [String: [UInt8]] = [:]
            for file in index.files where files.contains(file.name) {
                contents[file.name] = try await smallFile(file, of: name, from: Array(sources[position...]))
            }
            return (index, contents)
        }
        return nil
    }

    /// A small file of the checkpoint (tokenizer, vocabulary) from the first source whose copy
    /// matches the index.
    private static func smallFile(
        _ file: CheckpointIndex.FileRecord, of name: ModelName, from sources: [CheckpointSource]
    )
        async throws -> [UInt8]
    {
        var failures: [String] = []
        for origin in sources {
            let url = origin.url(name, file.name)
            do {
                guard let bytes = try await get(url, from: origin, limit: 64 << 20) else {
                    failures.append("\(origin): HTTP 404")
                    continue
                }
                guard bytes.count == file.byteCount, CRC32C.checksum(bytes) == file.crc32c else {
                    failures.append("\(origin): \(file.name) does not match its checksum in the index")
                    continue
                }
                return bytes
            } catch {
                failures.append("\(origin): \(error)")
            }
        }
        throw StoreError(.download, "cannot fetch \(file.name) of `\(name)`: \(failures.joined(separator: "; "))")
    }

    /// GETs a small file, retrying broken connections; nil on 404.
    private static func get(_ url: URL, from origin: CheckpointSource, limit: Int) async throws -> [UInt8]? {
        var lastError: (any Error)?
        for attempt in 1...3 {
            do {
                var request = origin.request(url)
                if origin.relays, url.lastPathComponent == CheckpointIndex.fileName {
                    request.headers.add(name: CheckpointSource.awaitFetchHeader, value: "10")
                }
                let response = try await (origin.client ?? .shared).execute(request, timeout: .seconds(60))
                if response.status == .notFound { return nil }
                guard response.status == .ok else {
                    throw StoreError(.download, "\(url.absoluteString): HTTP \(response.status.code)")
                }
                return [UInt8](buffer: try await response.body.collect(upTo: limit))
            } catch let error as StoreError {
                throw error
            } catch {
                lastError = error
                try await Task.sleep(for: .milliseconds(50 * attempt))
            }
        }
        throw StoreError(.download, "\(url.absoluteString): \(lastError.map { "\($0)" } ?? "failed")")
    }

    /// fsyncs every file and renames the checkpoint into the store. Returns its reader there.
    func install() throws -> CheckpointReader {
        try source.syncAll()
        let index = Checkpoint.FileHandle(
            fd: Glibc.open(temporary + "/" + CheckpointIndex.fileName, O_RDONLY | O_CLOEXEC), path: temporary)
        try index.sync()
        try FileSystem.syncDirectory(temporary)
        if FileSystem.exists(destination) { FileSystem.removeTree(destination) }
        try FileSystem.rename(temporary, to: destination)
        try FileSystem.syncDirectory(FileSystem.directoryName(destination))
        return try CheckpointReader(directory: destination)
    }

    func abandon() { FileSystem.removeTree(temporary) }
}

/// Reads chunks with HTTP range requests (bridged to the reader threads, which block) from the
/// plan's sources, checks each against its tensors' checksums, writes it to the SSD copy and
/// tells the relay it is in.
final class RemoteChunkSource: ChunkSource {
    let model: ModelName
    let sources: [CheckpointSource]
    /// The first `spread` sources share the chunks; the others stand by.
    let spread: Int
    /// Per partition, its tensors by offset (a chunk is checked against those it holds).
    private let tensors: [[CheckpointIndex.TensorRecord]]
    private let files: [String]
    private let partitionBytes: [Int]
    /// The index's checksum of every block of each partition: a block that has arrived whole is
    /// checked, written and relayed at once, before the rest of its chunk (a chunk holds at
    /// least one whole tensor, and an embedding table is tens of megabytes).
    private let blockChecksums: [[UInt32]]
    private let blockSize: Int
    private let descriptors: [Int32]
    private let logger: Logger
    private let turn = Atomic<Int>(0)
    /// Sources that failed a chunk: later chunks go to the others first.
    private let failed = Mutex<Set<Int>>([])
    /// What each source delivered, by label.
    private let taken = Mutex<[String: Delivered]>([:])

    /// A source's verified bytes, and the time from its first chunk's request to its last
    /// chunk's arrival (its link's rate, with every reader fetching from it in parallel).
    private struct Delivered {
        var bytes = 0
        var first: ContinuousClock.Instant
        var last: ContinuousClock.Instant
    }
    let relay: FetchRelay
    var isDirect: Bool { false }

    init(
        model: ModelName, index: CheckpointIndex, sources: [CheckpointSource], spread: Int, descriptors: [Int32],
        logger: Logger
    ) {
        self.model = model
        self.sources = sources
        self.spread = max(1, min(spread, sources.count))
        var byPartition = Array(repeating: [CheckpointIndex.TensorRecord](), count: index.partitions.count)
        for tensor in index.tensors where byPartition.indices.contains(tensor.partition) {
            byPartition[tensor.partition].append(tensor)
        }
        tensors = byPartition.map { $0.sorted { $0.offset < $1.offset } }
        files = index.partitions.map(\.file)
        partitionBytes = index.partitions.map(\.byteCount)
        blockChecksums = index.partitions.map(\.blockChecksums)
        blockSize = index.checksumBlockSize
        self.descriptors = descriptors
        self.logger = logger
        relay = FetchRelay(partitions: index.partitions.count)
    }

    deinit { descriptors.forEach { close($0) } }

    /// Bytes taken from each source so far, by label.
    var bytesBySource: [String: Int] { taken.withLock { $0.mapValues(\.bytes) } }

    /// Seconds from each source's first chunk request to its last chunk's arrival, by label.
    var secondsBySource: [String: Double] {
        taken.withLock { $0.mapValues { Double(($0.last - $0.first) / .microseconds(1)) / 1e6 } }
    }

    func syncAll() throws {
        for fd in descriptors where fsync(fd) != 0 {
            throw StoreError.system("fsync failed", "fsync")
        }
    }

    /// The order to try the sources in for the next chunk: one of the spread sources in turn,
    /// then the others; sources that have failed go last.
    private func order() -> [Int] {
        let first = turn.add(1, ordering: .relaxed).oldValue % spread
        let preferred = [first] + Array(0..<spread).filter { $0 != first } + Array(spread..<sources.count)
        let failed = failed.withLock { $0 }
        return preferred.filter { !failed.contains($0) } + preferred.filter { failed.contains($0) }
    }

    func read(partition: Int, offset: Int, length: Int, into destination: UnsafeMutableRawPointer) throws {
        var failures: [String] = []
        var corrupt = false
        for choice in order() {
            let origin = sources[choice]
            let asked = ContinuousClock.now
            // What the fetch wrote to the SSD copy as its blocks arrived (checked and relayed).
            let written: [Range<Int>]
            do {
                written = try fetch(
                    from: origin, partition: partition, offset: offset, length: length, into: destination)
                try check(partition: partition, offset: offset, length: length, at: destination)
            } catch {
                let already = failed.withLock { !$0.insert(choice).inserted }
                if !already {
                    logger.warning(
                        "a checkpoint source failed; its chunks go to the next source",
                        metadata: ["model": "\(model)", "source": "\(origin)", "error": "\(error)"])
                }
                failures.append("\(origin): \(error)")
                if let error = error as? CheckpointError, error.code == .corrupt { corrupt = true }
                continue
            }
            let arrived = ContinuousClock.now
            taken.withLock { taken in
                var delivered = taken[origin.label] ?? Delivered(first: asked, last: arrived)
                delivered.bytes += length
                delivered.first = min(delivered.first, asked)
                delivered.last = max(delivered.last, arrived)
                taken[origin.label] = delivered
            }
            // Only what the blocks left (a block running into the next chunk, a chunk's first
            // part whose block began in the previous one): each byte is written once.
            for gap in Self.gaps(in: offset..<offset + length, besides: written) {
                try write(
                    partition: partition,
                    UnsafeRawBufferPointer(start: destination + (gap.lowerBound - offset), count: gap.count),
                    at: gap.lowerBound)
            }
            relay.arrived(partition: partition, range: offset..<offset + length)
            return
        }
        let message =
            "no source could deliver \(files[partition]) bytes \(offset)..<\(offset + length) of `\(model)`: \(failures.joined(separator: "; "))"
        // Bytes that fail their checksums are corruption, whatever else failed.
        if corrupt { throw CheckpointError(.corrupt, message) }
        throw StoreError(.download, message)
    }

    /// The parts of `range` that `covered` (ranges inside it) leaves, in order.
    static func gaps(in range: Range<Int>, besides covered: [Range<Int>]) -> [Range<Int>] {
        var gaps: [Range<Int>] = []
        var at = range.lowerBound
        for part in covered.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            let part = part.clamped(to: range)
            if part.lowerBound > at { gaps.append(at..<part.lowerBound) }
            at = max(at, part.upperBound)
        }
        if at < range.upperBound { gaps.append(at..<range.upperBound) }
        return gaps
    }

    /// Fetches the chunk into `destination`, writing and relaying its blocks as they arrive
    /// whole; returns the ranges of the partition written so.
    private func fetch(
        from origin: CheckpointSource, partition: Int, offset: Int, length: Int,
        into destination: UnsafeMutableRawPointer
    ) throws -> [Range<Int>] {
        let url = origin.url(model, files[partition])
        let target = UncheckedSendable(destination)
        let outcome = Mutex<Result<[Range<Int>], any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        // The first block starting inside the chunk (or, when the chunk starts mid-block, that
        // block: checked with the part before the chunk once that part is in), and the next one
        // to check as bytes arrive.
        let firstBlock = offset / blockSize
        Task {
            do {
                var nextBlock = firstBlock
                var written: [Range<Int>] = []
                try await RangeRequest.fetch(
                    url, start: Int64(offset), length: Int64(length), client: origin.client ?? .shared,
                    headers: origin.headers, attempts: 2, backoff: .milliseconds(50)
                ) { at, bytes in
                    if at == 0 { nextBlock = firstBlock }  // an attempt starts the range over
                    (target.value + Int(at)).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
                    try self.relayBlocks(
                        partition: partition, chunk: offset, received: Int(at) + bytes.count, length: length,
                        at: target.value, next: &nextBlock, written: &written)
                }
                outcome.withLock { [written] in $0 = .success(written) }
            } catch {
                outcome.withLock { $0 = .failure(error) }
            }
            done.signal()
        }
        done.wait()
        return try outcome.withLock { $0! }.get()
    }

    /// Checks, writes and relays the blocks of the chunk (at `chunk` in `partition`) that its
    /// first `received` bytes now hold whole, from block `next` on; adds what it wrote to `written`.
    private func relayBlocks(
        partition: Int, chunk: Int, received: Int, length: Int, at base: UnsafeMutableRawPointer, next: inout Int,
        written: inout [Range<Int>]
    ) throws {
        let checksums = blockChecksums[partition]
        while next < checksums.count {
            let start = next * blockSize
            let end = min(start + blockSize, partitionBytes[partition])
            guard end <= chunk + length else { return }  // ends in the next chunk: relayed with it
            guard end <= chunk + received else { return }
            if start < chunk {
                // The block began in the previous chunk: checked whole once that part is written.
                guard relay.has(partition: partition, range: start..<chunk) else {
                    next += 1
                    continue
                }
                var whole = [UInt8](repeating: 0, count: end - start)
                try whole.withUnsafeMutableBytes { buffer in
                    var done = 0
                    while done < chunk - start {
                        let n = pread(
                            descriptors[partition], buffer.baseAddress! + done, chunk - start - done,
                            off_t(start + done))
                        if n < 0 && errno == EINTR { continue }
                        guard n > 0 else { throw StoreError.system("read of the local copy failed", "pread") }
                        done += n
                    }
                    (buffer.baseAddress! + (chunk - start)).copyMemory(from: base, byteCount: end - chunk)
                }
                guard CRC32C.checksum(whole) == checksums[next] else {
                    throw CheckpointError(
                        .corrupt, "\(files[partition]) block \(next) arrived with bytes that fail its checksum")
                }
                try write(partition: partition, UnsafeRawBufferPointer(start: base, count: end - chunk), at: chunk)
                written.append(chunk..<end)
                relay.arrived(partition: partition, range: start..<end)
                next += 1
                continue
            }
            let bytes = UnsafeRawBufferPointer(start: base + (start - chunk), count: end - start)
            guard CRC32C.checksum(bytes) == checksums[next] else {
                throw CheckpointError(
                    .corrupt, "\(files[partition]) block \(next) arrived with bytes that fail its checksum")
            }
            try write(partition: partition, bytes, at: start)
            written.append(start..<end)
            relay.arrived(partition: partition, range: start..<end)
            next += 1
        }
    }

    /// Writes `bytes` at `offset` of the partition's SSD file.
    private func write(partition: Int, _ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        var written = 0
        while written < bytes.count {
            let n = pwrite(
                descriptors[partition], bytes.baseAddress! + written, bytes.count - written, off_t(offset + written))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw StoreError.system("write to the local store failed", "pwrite") }
            written += n
        }
    }

    /// Checks the tensors lying wholly inside the chunk against their checksums.
    private func check(partition: Int, offset: Int, length: Int, at bytes: UnsafeMutableRawPointer) throws {
        let records = tensors[partition]
        var low = 0
        var high = records.count
        while low < high {
            let middle = (low + high) / 2
            if records[middle].offset < offset { low = middle + 1 } else { high = middle }
        }
        for record in records[low...] {
            guard record.offset + record.byteCount <= offset + length else { break }
            let view = UnsafeRawBufferPointer(start: bytes + (record.offset - offset), count: record.byteCount)
            guard CRC32C.checksum(view) == record.crc32c else {
                throw CheckpointError(.corrupt, "tensor `\(record.name)` arrived with bytes that fail its checksum")
            }
        }
    }
}
