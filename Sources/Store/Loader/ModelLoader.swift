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
    /// Checkpoints being fetched, as peers may read them meanwhile: directory, index, arrivals.
    private var relays: [String: (directory: String, index: CheckpointIndex, relay: FetchRelay)] = [:] {
        didSet {
            for name in relays.keys where relayWaiters[name] != nil {
                relayWaiters.removeValue(forKey: name)?.forEach { $0.continuation.resume() }
            }
        }
    }
    /// Peers' reads waiting for a fetch of the model to begin (or for their time to run out).
    private var relayWaiters: [String: [(id: Int, continuation: CheckedContinuation<Void, Never>)]] = [:]
    private var nextRelayWaiter = 0
    /// Largest read of a streaming load (whole tensors; a larger tensor is one read): about a
    /// layer of a small model, so the first layers are handed out early.
    static let streamingChunkBytes = 4 << 20
    /// Range requests in flight to a remote store (a peer gets one).
    static let fetchStreamsPerRemote = 4

    public init(
        store: ModelStore, cache: DRAMCache, configuration: Configuration = .init(),
        logger: Logger = Logger(label: "sllm.loader")
    ) {
        self.store = store
        self.cache = cache
        self.configuration = configuration
        self.logger = logger
    }

    /// The index of `name` and its small files named in `files`, from the remote stores, for a
    /// model the local store lacks (nothing is written); nil when no remote store has it.
    public func remoteDescription(of name: ModelName, files: Set<String>) async throws
        -> (index: CheckpointIndex, files: [String: [UInt8]])?
    {
        guard !configuration.remotes.isEmpty else { return nil }
        let now = ContinuousClock.now
        described = described.filter { now - $0.value.at < Self.describedFor }
        if let kept = described[name.rawValue],
            Set(kept.index.files.map(\.name)).intersection(files).isSubset(of: kept.files.keys)
        {
            return (kept.index, kept.files.filter { files.contains($0.key) })
        }
        guard
            let fetched = try await RemoteCheckpoint.describe(
                name, files: files, from: configuration.remotes.map { CheckpointSource(base: $0) })
        else { return nil }
        described[name.rawValue] = (ContinuousClock.now, fetched.index, fetched.files)
        return fetched
    }

    /// Remote descriptions fetched moments ago, by model: placing a model that only a remote
    /// store holds asks for its description twice in a row (whether it exists, then its facts).
    private var described: [String: (at: ContinuousClock.Instant, index: CheckpointIndex, files: [String: [UInt8]])] =
        [:]
    static let describedFor = Duration.seconds(10)

    /// Loads `name` into memory from the fastest tier that holds it.
    ///
    /// - Parameters:
    ///   - streaming: serve while loading. A load from the SSD returns as soon as its memory is
    ///     reserved, before the bytes arrive: the model's `isComplete` is false and
    ///     `waitForTensors` blocks until the tensors asked for are read and verified (the
    ///     checkpoint lays them out in the order a forward pass uses them). A DRAM hit, or a
    ///     load from a remote store, returns complete as without it.
    ///   - plan: where to fetch the checkpoint when the store lacks it (peers holding it), before
    ///     the configured remote stores. A load already under way for the model is joined whatever
    ///     its plan: concurrent cold starts of one model fetch once.
    ///   - progress: called from reader threads with bytes handed out so far.
    /// - Throws: `StoreError.notFound` when no tier has the model, `CheckpointError.corrupt`
    ///   naming the tensor whose bytes fail their checksum (nothing is cached then; a streaming
    ///   model's waits throw it), `CancellationError` when cancelled.
    public func load(
        _ name: ModelName, streaming: Bool = false, from plan: FetchPlan = FetchPlan(), progress: ProgressHandler? = nil
    ) async throws
        -> LoadedModel
    {
        let start = ContinuousClock.now
        // A streamed load whose model was dropped is stopping: it is not joined but waited out.
        while let existing = inFlight[name.rawValue], !existing.isSettled, existing.isAbandoned {
            await existing.task?.value
        }
        let ticket: LoadTicket
        if let existing = inFlight[name.rawValue], !existing.isSettled {
            ticket = existing
        } else {
            ticket = LoadTicket()
            ticket.task = Task {
                do {
                    ticket.finish(
                        .success(
                            try await self.performLoad(
                                name, start: start, ticket: ticket, streaming: streaming, plan: plan,
                                progress: progress)))
                } catch {
                    ticket.finish(.failure(error))
                }
            }
            inFlight[name.rawValue] = ticket
        }
        ticket.join()
        var abandonedAlready = false
        if streaming {
            // The model as soon as a streaming load hands it out (this or an earlier caller's).
            let abandoned = Mutex(false)
            let early = await withTaskCancellationHandler {
                await ticket.firstModel()
            } onCancel: {
                abandoned.withLock { $0 = true }
                ticket.abandon()
            }
            if let early {
                ticket.leave(active: !abandoned.withLock { $0 })
                try Task.checkCancellation()
                return early
            }
            abandonedAlready = abandoned.withLock { $0 }
        }
        let task = ticket.task!
        if abandonedAlready {
            await task.value  // this caller has already left the load's count
        } else {
            await withTaskCancellationHandler {
                await task.value
            } onCancel: {
                ticket.abandon()
            }
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

    /// A file of `name`'s checkpoint as this node serves it to peers: from the store, or from a
    /// fetch under way (reads of its partitions wait for their bytes to arrive and be verified).
    /// Nil when this node has no such checkpoint or the checkpoint no such file (only the index,
    /// its small files and its partitions are served: never a path).
    ///
    /// With `awaiting`, a checkpoint neither held nor being fetched is waited for that long: a
    /// node told to relay from this one may ask before this node's own fetch has begun.
    public func checkpointFile(_ name: ModelName, file: String, awaiting: Duration? = nil) async throws
        -> CheckpointFile?
    {
        if let awaiting, try reader(for: name) == nil, relays[name.rawValue] == nil {
            await waitForRelay(name, upTo: awaiting)
        }
        return try openCheckpointFile(name, file: file)
    }

    private func openCheckpointFile(_ name: ModelName, file: String) throws -> CheckpointFile? {
        func open(_ directory: String, _ index: CheckpointIndex, relay: FetchRelay?) throws -> CheckpointFile? {
            if file == CheckpointIndex.fileName {
                guard let size = FileSystem.fileSize(directory + "/" + file) else { return nil }
                return try CheckpointFile(
                    path: directory + "/" + file, name: file, byteCount: Int(size), relay: nil, partition: nil)
            }
            if let record = index.files.first(where: { $0.name == file }) {
                return try CheckpointFile(
                    path: directory + "/" + file, name: file, byteCount: record.byteCount, relay: nil, partition: nil)
            }
            if let partition = index.partitions.firstIndex(where: { $0.file == file }) {
                return try CheckpointFile(
                    path: directory + "/" + file, name: file, byteCount: index.partitions[partition].byteCount,
                    relay: relay, partition: partition)
            }
            return nil
        }
        if let reader = try reader(for: name) { return try open(reader.directory, reader.index, relay: nil) }
        if let fetching = relays[name.rawValue] {
            return try open(fetching.directory, fetching.index, relay: fetching.relay)
        }
        return nil
    }

    /// Returns when a fetch of `name` begins, after `limit`, or when the caller is cancelled.
    private func waitForRelay(_ name: ModelName, upTo limit: Duration) async {
        nextRelayWaiter += 1
        let id = nextRelayWaiter
        let timer = Task { [weak self] in
            try? await Task.sleep(for: limit)
            await self?.endRelayWait(name, id)
        }
        defer { timer.cancel() }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                relayWaiters[name.rawValue, default: []].append((id, continuation))
            }
        } onCancel: {
            Task { await self.endRelayWait(name, id) }
        }
    }

    private func endRelayWait(_ name: ModelName, _ id: Int) {
        guard let index = relayWaiters[name.rawValue]?.firstIndex(where: { $0.id == id }) else { return }
        relayWaiters[name.rawValue]!.remove(at: index).continuation.resume()
        if relayWaiters[name.rawValue]!.isEmpty { relayWaiters[name.rawValue] = nil }
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
        _ name: ModelName, start: ContinuousClock.Instant, ticket: LoadTicket, streaming: Bool, plan: FetchPlan,
        progress: ProgressHandler?
    ) async throws -> LoadedModel {
        var reader = try self.reader(for: name)
        var remote: RemoteCheckpoint?
        if reader == nil {
            let sources = plan.sources + configuration.remotes.map { CheckpointSource(base: $0) }
            guard !sources.isEmpty else {
                throw StoreError(
                    .notFound, "model `\(name)` is not in the store (\(store.modelsDirectory)); `sllm pull` fetches it")
            }
            remote = try await RemoteCheckpoint.open(
                name, store: store, plan: FetchPlan(sources: sources, spread: plan.spread), logger: logger)
            reader = remote!.reader
            relays[name.rawValue] = (remote!.temporary, remote!.reader.index, remote!.source.relay)
        }
        defer {
            if let remote, relays[name.rawValue]?.relay === remote.source.relay { relays[name.rawValue] = nil }
        }
        let tier: Tier = remote == nil ? .ssd : remote!.fromPeer ? .peer : .remote
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
        // A streaming load reads in chunks of about a layer, so each layer is handed out as it
        // arrives; the model goes to the caller now, and `arrival` tracks what is in.
        let streamed = streaming && remote == nil
        // A fetch moves layer-sized chunks too, so nodes relaying from this one get each chunk
        // soon after it arrives, and reads from several sources (which wait on the network, not
        // on a disk) run side by side.
        let chunks = ChunkPipeline.chunks(
            index: checkpoint.index, segments: segments, bases: bases,
            maxChunkBytes: streamed || remote != nil ? Self.streamingChunkBytes : .max)
        // One stream per peer: a cluster's links are short and one TCP stream fills them, and a
        // node relaying what it receives must receive it in order (parallel streams share a
        // shaped link unfairly, so one chunk can trail the others by seconds and hold up every
        // node down the chain). A remote store, far away, gets several streams.
        let readers =
            remote.map { fetch in
                let spread = fetch.source.sources.prefix(fetch.source.spread)
                return max(
                    configuration.threads, spread.reduce(0) { $0 + ($1.isPeer ? 1 : Self.fetchStreamsPerRemote) })
            }
            ?? configuration.threads
        let pipeline = ChunkPipeline(threads: readers, verifiers: configuration.verifiers)
        // Slabs new to this process get their pages while the reads run, not before them.
        let populating = reservation.map { cache.startPopulating($0, threads: configuration.populateThreads) }
        defer { populating?.cancel() }
        timings.queue = seconds(since: start)
        let arrival = streamed ? WeightArrival(chunks: chunks) : nil
        // A streamed load says how much of a large chunk is read (a pass multiplies the first
        // rows of the output matrix while the rest still comes in).
        let readProgress: (@Sendable (Int, Int) -> Void)? =
            arrival.map { arrival in { @Sendable k, bytes in arrival.chunkRead(k, upTo: bytes) } }
        if let arrival {
            // Held by the ticket until the reading thread hands it to the callers.
            ticket.stage(
                LoadedModel(
                    reader: checkpoint, name: name.rawValue, tier: tier, timings: timings, cached: reservation != nil,
                    storage: (reservation as (any Sendable)?) ?? anonymous!, segments: segments,
                    bases: bases.map { UnsafeRawPointer($0) }, arrival: arrival))
        }
        // A streamed model's load stops when the model is dropped and no other caller waits.
        let isCancelled: @Sendable () -> Bool
        if let arrival {
            isCancelled = { arrival.isCancelled && ticket.activeCount == 0 }
        } else {
            isCancelled = { ticket.isCancelled }
        }

        // Discarded once, by whichever side sees the failure first: a streamed load's reading
        // thread (before its waiters hear of it), or this task.
        let discarded = Mutex(false)
        let discard: @Sendable () -> Void = { [cache] in
            guard let reservation,
                !discarded.withLock({ done in
                    defer { done = true }
                    return done
                })
            else { return }
            cache.discard(reservation)
        }
        let storage: any Sendable
        do {
            let source: any ChunkSource =
                try remote?.source
                ?? LocalChunkSource(
                    directory: checkpoint.directory, index: checkpoint.index, directIO: configuration.directIO,
                    logger: logger)
            let boxedChunks = UncheckedSendable(chunks)
            let (cache, queued, memory) = (cache, timings.queue, anonymous)
            let (timing, streamedStorage) = try await runBlocking {
                () throws -> (ChunkPipeline.Timing, (any Sendable)?) in
                // A streamed model is handed out and completed from this thread, so a caller
                // blocked on its tensors never waits for the load to get a thread of the
                // concurrency pool.
                if arrival != nil { ticket.publish() }
                do {
                    let timing = try pipeline.run(
                        boxedChunks.value, source: source, partitionFiles: checkpoint.index.partitions.map(\.file),
                        consumer: ArrivalConsumer(arrival: arrival), isCancelled: isCancelled, progress: progress,
                        readProgress: readProgress)
                    guard let arrival else { return (timing, nil) }
                    let committing = ContinuousClock.now
                    let storage: any Sendable = try reservation.map { try cache.commit($0) } ?? memory!
                    ticket.streamedModel?.complete(
                        storage: storage,
                        timings: LoadTimings(
                            queue: queued, pipeline: timing, handOut: seconds(since: committing),
                            total: seconds(since: start)))
                    arrival.finish()
                    return (timing, storage)
                } catch {
                    if arrival != nil { discard() }
                    arrival?.fail(error)
                    throw error
                }
            }
            timings = LoadTimings(queue: timings.queue, pipeline: timing)
            timings.fetched = remote?.source.bytesBySource
            timings.fetchSeconds = remote?.source.secondsBySource
            if let remote {
                // Every chunk is verified and on the SSD: publish the checkpoint in the store.
                installed = try await runBlocking { try remote.install() }
                indexes[name.rawValue] = (
                    FileSystem.modificationTime(directory + "/" + CheckpointIndex.fileName) ?? 0, installed
                )
            }
            let handOutStart = ContinuousClock.now
            // The pin (cached) or the anonymous memory (not cached) keeps the bytes alive.
            storage = try streamedStorage ?? reservation.map { try cache.commit($0) } ?? anonymous!
            if streamedStorage == nil { timings.handOut = seconds(since: handOutStart) }
        } catch {
            discard()
            remote?.source.relay.fail("\(error)")
            remote?.abandon()
            throw error
        }
        timings.total = seconds(since: start)
        let model =
            ticket.streamedModel
            ?? LoadedModel(
                reader: installed, name: name.rawValue, tier: tier, timings: timings,
                cached: reservation != nil, storage: storage, segments: segments,
                bases: bases.map { UnsafeRawPointer($0) })
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
        var settled = false
        /// A streaming load's model, handed out before the load ends; weak, so that dropping it
        /// stops the load.
        weak var early: LoadedModel?
        /// The streamed model, held from `stage` until a caller takes it (it may be published
        /// before any caller waits) or the load ends.
        var held: LoadedModel?
        var published = false
        /// Streaming callers waiting for the model or the end of the load.
        var firstWaiters: [CheckedContinuation<LoadedModel?, Never>] = []
    }
    private let state = Mutex(State())

    func join() {
        state.withLock {
            $0.waiters += 1
            $0.active += 1
        }
    }

    /// A streaming caller took the early model and leaves (`active`: it was not abandoned).
    func leave(active: Bool) {
        state.withLock {
            $0.waiters -= 1
            if active { $0.active -= 1 }
            // The load may have ended before this caller took the model: its result must not
            // stay here holding the model (and its pin) for nobody.
            if $0.waiters == 0 { $0.result = nil }
        }
    }

    /// A caller was cancelled; when no caller is left before the load ends, the load stops.
    func abandon() {
        let cancel = state.withLock { state -> Bool in
            state.active -= 1
            if state.active <= 0 && !state.settled { state.cancelled = true }
            return state.cancelled
        }
        if cancel { task?.cancel() }
    }

    /// A streaming load's model, made before its bytes arrive and held until `publish`.
    func stage(_ model: LoadedModel) {
        state.withLock {
            $0.early = model
            $0.held = model
        }
    }

    /// Hands the staged model to the streaming callers waiting and to those still to come.
    func publish() {
        let (model, waiters) = state.withLock { state in
            state.published = true
            let model = state.held
            // Held on only when nobody has taken it yet.
            if !state.firstWaiters.isEmpty { state.held = nil }
            defer { state.firstWaiters = [] }
            return (model, state.firstWaiters)
        }
        waiters.forEach { $0.resume(returning: model) }
    }

    /// The streamed model while anyone holds it (nil for a load that is not streamed).
    var streamedModel: LoadedModel? { state.withLock { $0.held ?? $0.early } }

    /// The streaming model once published, or nil when the load ended without one (a DRAM hit,
    /// a remote load, an error, or a streamed model already dropped): then take the result.
    func firstModel() async -> LoadedModel? {
        await withCheckedContinuation { continuation in
            let ready: (Bool, LoadedModel?) = state.withLock { state in
                if state.published || state.settled {
                    defer { state.held = nil }
                    return (true, state.held ?? state.early)
                }
                state.firstWaiters.append(continuation)
                return (false, nil)
            }
            if ready.0 { continuation.resume(returning: ready.1) }
        }
    }

    func finish(_ result: Result<LoadedModel, any Error>) {
        let waiters = state.withLock { state in
            state.settled = true
            state.held = nil
            // Kept only for callers still to take it: a streamed model nobody waits for must not
            // be held (its pin would keep it from being evicted).
            if state.waiters > 0 { state.result = result }
            defer { state.firstWaiters = [] }
            return state.firstWaiters
        }
        waiters.forEach { $0.resume(returning: nil) }
    }

    /// The result for one caller; the last caller's take releases it.
    func take() -> Result<LoadedModel, any Error> {
        state.withLock { state in
            let result = state.result ?? .failure(CancellationError())
            state.waiters -= 1
            if state.waiters == 0 { state.result = nil }
            return result
        }
    }

    var isSettled: Bool { state.withLock { $0.settled } }
    var isCancelled: Bool { state.withLock { $0.cancelled } || (task?.isCancelled ?? false) }
    /// A streamed load whose model is gone and that nobody waits for: it is stopping.
    var isAbandoned: Bool {
        state.withLock { $0.published && $0.early == nil && $0.held == nil && $0.active == 0 && !$0.settled }
    }
    /// Callers still waiting for the load's end.
    var activeCount: Int { state.withLock { $0.active } }
}

/// Wraps a value whose sharing is made safe by the caller (here: chunk pointers into memory
/// that outlives the pipeline, each chunk written by one thread).
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
