public import Checkpoint
public import Foundation
public import Logging
import Synchronization

/// Loads checkpoints into memory through the tiers: DRAM cache, local store (SSD), remote.
///
/// `load(_:)` hands out a ``LoadedModel`` whose tensors are views into memory the store owns.
/// A DRAM hit maps the cached partitions and returns without reading or copying. A miss reads
/// the partitions from the SSD with N threads straight into a new cache entry (or anonymous
/// memory when the model does not fit the DRAM budget), verifying every chunk on the way.
/// Concurrent loads of one model share one read. Cancelling every caller of a load stops its
/// reads and frees its memory.
public actor ModelLoader {
    /// Loader settings.
    public struct Configuration: Sendable {
        /// Reader threads (default: half the cores, at least 1; one sequential stream measured
        /// fastest on this project's virtual disks, more help devices that want deep queues).
        public var threads: Int
        /// Checksum threads, which run beside the readers.
        public var verifiers: Int
        /// Read with `O_DIRECT` (where the file system allows it) instead of buffered reads.
        /// Buffered reads let the kernel's readahead keep the device busy ahead of the reader and
        /// measured about twice as fast on this project's virtual disks (`sllm bench load`: 2.5
        /// vs 1.2 GB/s for SmolLM2, 3.2 vs 1.8 for 512 MiB); the page-cache copy of each chunk is
        /// dropped once read, so memory is not held twice. `O_DIRECT` suits devices that
        /// prefer it (`--direct-io`).
        public var directIO: Bool
        /// Base URLs of remote stores holding checkpoint directories (`BASE/NAME/index`), tried
        /// in order for a model that is not local.
        public var remotes: [URL]
        /// Threads that allocate and map fresh DRAM-cache pages beside the reads
        /// (`madvise(MADV_POPULATE_WRITE)`; two measured fastest here, `sllm bench populate`).
        public var populateThreads: Int

        /// Reads are the DRAM cache's segments: runs of whole tensors up to its slab size.
        public init(
            threads: Int? = nil, verifiers: Int = 1, directIO: Bool = false, remotes: [URL] = [],
            populateThreads: Int = 2
        ) {
            self.threads = threads ?? max(1, ProcessInfo.processInfo.activeProcessorCount / 2)
            self.verifiers = verifiers
            self.directIO = directIO
            self.remotes = remotes
            self.populateThreads = max(1, populateThreads)
        }
    }

    public nonisolated let store: ModelStore
    public nonisolated let cache: DRAMCache
    public nonisolated let configuration: Configuration
    private let logger: Logger
    private var indexes: [String: (stamp: Double, reader: CheckpointReader)] = [:]
    private var inFlight: [String: LoadTicket] = [:]

    public init(
        store: ModelStore, cache: DRAMCache, configuration: Configuration = .init(),
        logger: Logger = Logger(label: "sllm.loader")
    ) {
        self.store = store
        self.cache = cache
        self.configuration = configuration
        self.logger = logger
    }

    /// Loads `name` into memory from the fastest tier that holds it.
    ///
    /// - Parameter progress: called from reader threads with bytes handed out so far.
    /// - Throws: `StoreError.notFound` when no tier has the model, `CheckpointError.corrupt`
    ///   naming the tensor whose bytes fail their checksum (nothing is cached then),
    ///   `CancellationError` when cancelled.
    public func load(_ name: ModelName, progress: ProgressHandler? = nil) async throws -> LoadedModel {
        let start = ContinuousClock.now
        let ticket: LoadTicket
        if let existing = inFlight[name.rawValue], !existing.isSettled {
            ticket = existing
        } else {
            ticket = LoadTicket()
            ticket.task = Task {
                do {
                    ticket.finish(
                        .success(try await self.performLoad(name, start: start, cancelled: ticket, progress: progress)))
                } catch {
                    ticket.finish(.failure(error))
                }
            }
            inFlight[name.rawValue] = ticket
        }
        ticket.join()
        let task = ticket.task!
        await withTaskCancellationHandler {
            await task.value
        } onCancel: {
            ticket.abandon()
        }
        if inFlight[name.rawValue] === ticket { inFlight[name.rawValue] = nil }
        return try ticket.take().get()
    }

    /// Moves `name` into the DRAM cache ahead of a request (the scheduler's prefetch).
    @discardableResult
    public func warm(_ name: ModelName, progress: ProgressHandler? = nil) async throws -> LoadedModel {
        try await load(name, progress: progress)
    }

    /// Drops `name` from the DRAM cache. Throws when it is in use.
    @discardableResult
    public func evict(_ name: ModelName) throws -> Int {
        try cache.evict(name: name.rawValue)
    }

    // MARK: - The load itself

    private func reader(for name: ModelName) throws -> CheckpointReader? {
        let directory = store.directory(for: name)
        guard let stamp = FileSystem.modificationTime(directory + "/" + CheckpointIndex.fileName) else { return nil }
        if let cached = indexes[name.rawValue], cached.stamp == stamp { return cached.reader }
        let reader = try CheckpointReader(directory: directory)
        indexes[name.rawValue] = (stamp, reader)
        return reader
    }

    private func performLoad(
        _ name: ModelName, start: ContinuousClock.Instant, cancelled: LoadTicket, progress: ProgressHandler?
    ) async throws -> LoadedModel {
        var reader = try self.reader(for: name)
        var remote: RemoteCheckpoint?
        if reader == nil {
            guard !configuration.remotes.isEmpty else {
                throw StoreError(
                    .notFound, "model `\(name)` is not in the store (\(store.modelsDirectory)); `sllm pull` fetches it")
            }
            remote = try await RemoteCheckpoint.open(name, store: store, remotes: configuration.remotes, logger: logger)
            reader = remote!.reader
        }
        let tier: Tier = remote == nil ? .ssd : .remote
        let checkpoint = reader!
        let directory = store.directory(for: name)
        var installed = checkpoint
        var timings = LoadTimings()

        // A model fetched from a remote is streamed even if a cache entry matches: the store
        // must end up holding it (its tokenizer files live there).
        if remote == nil, let pin = cache.lookup(name: name.rawValue, indexChecksum: checkpoint.indexChecksum) {
            timings.total = seconds(since: start)
            FileSystem.touch(checkpoint.directory)
            return LoadedModel(
                reader: checkpoint, name: name.rawValue, tier: .dram, timings: timings,
                cached: true, storage: pin, segments: pin.segments, bases: pin.bases.map { UnsafeRawPointer($0) })
        }

        // The background pool fill stands aside while a load reads.
        cache.loadsInFlight.add(1, ordering: .relaxed)
        defer { cache.loadsInFlight.subtract(1, ordering: .relaxed) }
        let reservation = try cache.reserve(
            name: name.rawValue, indexChecksum: checkpoint.indexChecksum, index: checkpoint.index)
        var segments = reservation?.meta.segments ?? []
        var anonymous: UnsafeAnonymousMemory?
        var bases = reservation?.bases ?? []
        if reservation == nil {
            // Not cacheable: the same segments, consecutive in anonymous memory.
            segments = DRAMCache.plan(checkpoint.index, slabBytes: cache.slabBytes)
            let memory = try UnsafeAnonymousMemory(byteCount: segments.reduce(0) { $0 + $1.byteCount })
            var position = 0
            bases = segments.map { segment in
                defer { position += segment.byteCount }
                return memory.base + position
            }
            anonymous = memory
            logger.warning(
                "model does not fit the DRAM cache; loading without caching",
                metadata: ["model": "\(name)", "bytes": "\(memory.byteCount)", "budget": "\(cache.budgetBytes)"])
        }
        let chunks = ChunkPipeline.chunks(index: checkpoint.index, segments: segments, bases: bases)
        let pipeline = ChunkPipeline(threads: configuration.threads, verifiers: configuration.verifiers)
        // Slabs new to this process get their pages while the reads run, not before them.
        let populating = reservation.map { cache.startPopulating($0, threads: configuration.populateThreads) }
        defer { populating?.cancel() }
        timings.queue = seconds(since: start)

        do {
            let source: any ChunkSource =
                try remote?.source
                ?? LocalChunkSource(
                    directory: checkpoint.directory, index: checkpoint.index, directIO: configuration.directIO,
                    logger: logger)
            let boxedChunks = UncheckedSendable(chunks)
            let timing = try await runBlocking {
                try pipeline.run(
                    boxedChunks.value, source: source, partitionFiles: checkpoint.index.partitions.map(\.file),
                    consumer: InPlaceConsumer(), isCancelled: { cancelled.isCancelled }, progress: progress)
            }
            timings.read = timing.wallSeconds
            timings.verify = timing.verifySeconds
            timings.io = timing.readSeconds
            if let remote {
                // Every chunk is verified and on the SSD: publish the checkpoint in the store.
                installed = try await runBlocking { try remote.install() }
                indexes[name.rawValue] = (
                    FileSystem.modificationTime(directory + "/" + CheckpointIndex.fileName) ?? 0, installed
                )
            }
        } catch {
            if let reservation { cache.discard(reservation) }
            remote?.abandon()
            throw error
        }
        let handOutStart = ContinuousClock.now
        // The pin (cached) or the anonymous memory (not cached) keeps the bytes alive.
        let storage: any Sendable = try reservation.map { try cache.commit($0) } ?? anonymous!
        timings.handOut = seconds(since: handOutStart)
        timings.total = seconds(since: start)
        let model = LoadedModel(
            reader: installed, name: name.rawValue, tier: tier, timings: timings,
            cached: reservation != nil, storage: storage, segments: segments, bases: bases.map { UnsafeRawPointer($0) })
        FileSystem.touch(directory)
        logger.debug(
            "loaded",
            metadata: [
                "model": "\(name)", "tier": "\(tier)", "seconds": "\(timings.total)", "queue": "\(timings.queue)",
                "read": "\(timings.read)",
                "io": "\(timings.io)", "verify": "\(timings.verify)", "handOut": "\(timings.handOut)",
            ])
        return model
    }
}

/// One in-flight load shared by every caller that asked for the same model.
///
/// The result is kept here, not in the task, and dropped when the last caller has taken it, so
/// a finished load never keeps its model (and the model's pin on the DRAM cache) alive.
final class LoadTicket: @unchecked Sendable {
    // @unchecked: `state` is a Mutex; `task` is set once by the actor before the ticket is shared.
    var task: Task<Void, Never>?
    private struct State {
        var waiters = 0
        var active = 0
        var cancelled = false
        var result: Result<LoadedModel, any Error>?
    }
    private let state = Mutex(State())

    func join() {
        state.withLock {
            $0.waiters += 1
            $0.active += 1
        }
    }

    /// A caller was cancelled; when no caller is left before the load ends, the load stops.
    func abandon() {
        let cancel = state.withLock { state -> Bool in
            state.active -= 1
            if state.active <= 0 && state.result == nil { state.cancelled = true }
            return state.cancelled
        }
        if cancel { task?.cancel() }
    }

    func finish(_ result: Result<LoadedModel, any Error>) { state.withLock { $0.result = result } }

    /// The result for one caller; the last caller's take releases it.
    func take() -> Result<LoadedModel, any Error> {
        state.withLock { state in
            let result = state.result ?? .failure(CancellationError())
            state.waiters -= 1
            if state.waiters == 0 { state.result = nil }
            return result
        }
    }

    var isSettled: Bool { state.withLock { $0.result != nil } }
    var isCancelled: Bool { state.withLock { $0.cancelled } || (task?.isCancelled ?? false) }
}

/// Wraps a value whose sharing is made safe by the caller (here: chunk pointers into memory
/// that outlives the pipeline, each chunk written by one thread).
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
