import Checkpoint
public import Engine
import Foundation
public import Logging
import Scheduling
public import ServiceLifecycle
public import Store
import Synchronization
import Tokenizers

/// The in-process worker of `sllm serve`: instances are engines in this process, loaded through
/// the node's tiered loader; the store, the DRAM cache and the pulls are this node's.
public final class LocalWorker: Worker {
    public let loader: ModelLoader
    public var store: ModelStore { loader.store }
    public let node: NodeID
    /// Compute threads per instance.
    public let threads: Int
    /// Memory instances may take on this node (weights + KV caches).
    public let memoryBudgetBytes: Int
    private let instances = Mutex<[String: InstanceRunner]>([:])
    /// Tokenizers of the models this node serves, built once each.
    let tokenizers: TokenizerCache
    /// Jobs submitted and not yet finished; background work (the DRAM pool fill) waits for zero.
    let runningJobs = Atomic<Int>(0)
    var isBusy: Bool { runningJobs.load(ordering: .relaxed) > 0 }
    /// Checkpoint bytes of the store's models by name, with their index's modification time:
    /// an inventory re-reads only the indexes that changed (status pages ask for it often).
    private let storeSizes = StoreSizes()
    /// Load bandwidth per tier, measured on this node's real loads.
    private let bandwidth = Mutex<[Tier: BandwidthAverage]>([:])
    /// Fetch bandwidth per source (peer node or remote store), with the bytes fetched from it.
    private let links = Mutex<[String: (rate: BandwidthAverage, bytes: Int)]>([:])
    /// Start engines on weights that are still being read from the SSD (serve while loading).
    public let serveWhileLoading: Bool
    /// How this node reaches another's checkpoints (with the cluster token, over its TLS); nil
    /// where it has no peers (`sllm serve`), and a start's peer sources are then passed over.
    private let peers: (@Sendable (PeerSource) -> CheckpointSource)?
    /// Keep the checkpoints this node fetched after their last instance stops (else they are
    /// dropped from the store and the DRAM cache then, as a pod's `emptyDir` is).
    public let keepFetched: Bool
    /// Models whose checkpoint this node fetched while `keepFetched` is off (dropped when their
    /// last instance stops).
    private let fetchedHere = Mutex<Set<ModelName>>([])
    private let logger: Logger

    public init(
        loader: ModelLoader, threads: Int, memoryBudgetBytes: Int, node: NodeID? = nil,
        serveWhileLoading: Bool = true, peers: (@Sendable (PeerSource) -> CheckpointSource)? = nil,
        keepFetched: Bool = true, logger: Logger = Logger(label: "sllm.worker")
    ) {
        self.peers = peers
        self.keepFetched = keepFetched
        self.loader = loader
        self.serveWhileLoading = serveWhileLoading
        self.memoryBudgetBytes = memoryBudgetBytes
        tokenizers = TokenizerCache()
        self.threads = max(1, threads)
        self.node = node ?? NodeID(ProcessInfo.processInfo.hostName)
        self.logger = logger
    }

    /// The node's worker for `sllm serve`: its data directory's store, its DRAM cache (slabs of
    /// loads that died mid-way, by a crash or kill -9, go back to the pool) and its loader.
    /// `node` names it (default: the host name).
    public convenience init(
        configuration: ServeConfiguration, node: NodeID? = nil,
        peers: (@Sendable (PeerSource) -> CheckpointSource)? = nil, logger: Logger
    ) throws {
        let store = ModelStore(root: configuration.dataDirectory)
        try FileManager.default.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true)
        // Caches of data directories that no longer exist (and that nobody uses) go first.
        DRAMCache.removeOrphans(logger: logger)
        let cache = try DRAMCache(
            directory: configuration.cacheDirectory ?? DRAMCache.defaultDirectory(forDataDirectory: store.root),
            budgetBytes: configuration.dramCacheBytes, owner: store.root)
        cache.reclaim()
        let loader = ModelLoader(
            store: store, cache: cache,
            configuration: .init(directIO: configuration.directIO, remotes: configuration.remotes))
        self.init(
            loader: loader, threads: configuration.threads, memoryBudgetBytes: configuration.memoryBudgetBytes,
            node: node, serveWhileLoading: configuration.serveWhileLoading, peers: peers,
            keepFetched: configuration.keepFetched, logger: logger)
    }

    // MARK: - The node

    public func inventory() async -> NodeInventory {
        let (store, cache) = (store, loader.cache)
        let sizes = storeSizes
        let (ssd, entries) =
            await (try? runBlocking { (Self.storeContents(store, sizes: sizes), cache.listEntries()) }) ?? ([], [])
        let rates = bandwidth.withLock { $0 }
        func tier(_ tier: Tier, _ held: [HeldModel]) -> TierInventory {
            TierInventory(
                tier: tier, models: held.sorted { $0.name < $1.name }, usedBytes: held.reduce(0) { $0 + $1.bytes },
                loadBytesPerSecond: rates[tier]?.bytesPerSecond, loads: rates[tier]?.count ?? 0)
        }
        let dram = entries.filter(\.complete).compactMap { entry in
            (try? ModelName(entry.name)).map { HeldModel(name: $0, bytes: entry.bytes) }
        }
        let running = instances.withLock { $0 }
        return NodeInventory(
            node: node, cores: ProcessInfo.processInfo.activeProcessorCount, threadsPerInstance: threads,
            memoryBudgetBytes: memoryBudgetBytes,
            reservedBytes: running.values.reduce(0) { $0 + $1.info.weightBytes + $1.info.kvCacheBytes },
            dramBudgetBytes: cache.budgetBytes,
            tiers: [tier(.dram, dram), tier(.ssd, ssd), tier(.peer, []), tier(.remote, [])],
            instances: running.keys.sorted(), running: running.values.map(\.info).sorted { $0.id < $1.id },
            runningJobs: runningJobs.load(ordering: .relaxed),
            usage: running.values.map { $0.usage() }.sorted { $0.id < $1.id },
            links: links.withLock { $0 }.sorted { $0.key < $1.key }.compactMap { source, link in
                link.rate.bytesPerSecond.map {
                    LinkInventory(source: source, bytesPerSecond: $0, fetches: link.rate.count, bytes: link.bytes)
                }
            })
    }

    /// The store's complete models (hidden partial and trash directories skipped) and their
    /// checkpoint bytes; an unreadable index leaves its model out.
    private static func storeContents(_ store: ModelStore, sizes: StoreSizes) -> [HeldModel] {
        let names = (try? FileSystem.listDirectory(store.modelsDirectory)) ?? []
        return names.filter { !$0.hasPrefix(".") }.compactMap { entry in
            guard let name = try? ModelName(entry),
                let stamp = FileSystem.modificationTime(store.directory(for: name) + "/" + CheckpointIndex.fileName)
            else { return nil }
            if let bytes = sizes.bytes(of: entry, stamp: stamp) { return HeldModel(name: name, bytes: bytes) }
            guard let reader = try? store.reader(for: name) else { return nil }
            let bytes = reader.index.partitions.reduce(0) { $0 + $1.byteCount }
            sizes.record(entry, stamp: stamp, bytes: bytes)
            return HeldModel(name: name, bytes: bytes)
        }
    }

    public func modelFacts(_ model: ModelName) async throws -> ModelFacts {
        let store = store
        // A model only the remote stores hold: its index and tokenizer files from there.
        if !store.contains(model),
            let (index, files) = try await loader.remoteDescription(
                of: model, files: Set(Tokenizer.checkpointFileNames))
        {
            return Self.facts(of: model, index: index, tokenizerFiles: files.mapValues { Data($0) })
        }
        return try await runBlocking {
            let reader = try store.reader(for: model)
            let index = reader.index
            var files: [String: Data] = [:]
            for file in index.files where Tokenizer.checkpointFileNames.contains(file.name) {
                files[file.name] = Data(try reader.fileContents(file.name))
            }
            return Self.facts(of: model, index: index, tokenizerFiles: files)
        }
    }

    /// A model's facts from its checkpoint's index and tokenizer files.
    private static func facts(of model: ModelName, index: CheckpointIndex, tokenizerFiles: [String: Data]) -> ModelFacts
    {
        ModelFacts(
            name: model, architecture: index.config.architecture, contextLength: index.config.contextLength,
            weightBytes: index.partitions.reduce(0) { $0 + $1.byteCount },
            kvBytesPerPosition: Engine.kvBytesPerPosition(index.config), index: index, tokenizerFiles: tokenizerFiles)
    }

    public func resolve(_ source: String) async throws -> SourceResolution {
        if let name = try? ModelName(source), store.contains(name) { return SourceResolution(local: name) }
        // In a remote store: every node can fetch it at its first start. The tokenizer files come
        // along: the model's facts, asked next, are then read from what this fetched. (A file
        // that fails to arrive is the facts' error to report, not a reason to look elsewhere.)
        if let name = try? ModelName(source) {
            let onRemote: Bool
            do {
                onRemote =
                    try await loader.remoteDescription(of: name, files: Set(Tokenizer.checkpointFileNames)) != nil
            } catch {
                onRemote = (try? await loader.remoteDescription(of: name, files: [])) != nil
            }
            if onRemote { return SourceResolution(local: name) }
        }
        let parsed: (source: ModelSource, aliasName: String?)
        do { parsed = try ModelSource.parse(source) } catch {
            throw ServingError(
                .invalidRequest,
                "model `\(source)` is not in the store and is not something `sllm pull` can fetch: \(error.description)",
                param: "model")
        }
        if case .local(let path) = parsed.source, !FileManager.default.fileExists(atPath: path) {
            throw ServingError(
                .invalidRequest,
                "model `\(source)` is neither in the store (`sllm list`), an alias (\(ModelSource.aliases.map(\.name).joined(separator: ", "))), a URL, a pip: source nor an existing file",
                param: "model")
        }
        let name: ModelName
        do { name = try parsed.aliasName.map { try ModelName($0) } ?? parsed.source.defaultName() } catch {
            throw ServingError(.invalidRequest, "\(error)", param: "model")
        }
        var pullable = source
        if case .local(let path) = parsed.source { pullable = FileSystem.absolute(path) }
        return SourceResolution(local: nil, pullName: name, pullableSource: pullable)
    }

    public func pull(_ source: String, as name: ModelName) -> AsyncThrowingStream<PullEvent, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: PullEvent.self, throwing: (any Error).self)
        var puller = Puller(store: store, logger: logger)
        puller.validate = { try Engine.validate($0) }
        let task = Task { [puller] in
            do {
                let outcome = try await puller.pull(source, as: name, force: false) { report in
                    continuation.yield(
                        .progress(
                            phase: report.phase, completedBytes: report.completedBytes, totalBytes: report.totalBytes))
                }
                continuation.yield(
                    .finished(name: outcome.name, bytes: outcome.index.partitions.reduce(0) { $0 + $1.byteCount }))
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    public func prefetch(_ model: ModelName, into tier: Tier) async throws -> LoadReport {
        guard tier == .dram else {
            throw ServingError(
                .invalidRequest, "models are prefetched into the DRAM cache (`dram`), not `\(tier.rawValue)`")
        }
        let loaded = try await loader.warm(model)
        record(loaded)
        return LoadReport(model: model, tier: loaded.tier, bytes: loaded.byteCount, seconds: loaded.timings.total)
    }

    public func evict(_ model: ModelName, from tier: Tier) async throws -> Int {
        switch tier {
        case .dram: return try await loader.evict(model)
        case .ssd, .peer, .remote:
            throw ServingError(
                .invalidRequest,
                "a worker evicts from the DRAM cache (`dram`); `sllm rm` removes a model from the store")
        }
    }

    public func verifyCache(_ model: ModelName?) async throws -> [DRAMVerification] {
        let (store, cache) = (store, loader.cache)
        return try await runBlocking { () throws -> [DRAMVerification] in
            guard let model else { return cache.verifyAll(store: store) }
            let reader: CheckpointReader
            do { reader = try store.reader(for: model) } catch {
                throw ServingError(.notFound, "model `\(model)` is not in the store", param: "model")
            }
            return cache.verify(name: model.rawValue, reader: reader).map { [$0] } ?? []
        }
    }

    /// Adds a real load to its tier's bandwidth average (a DRAM hit maps memory; it is its own tier).
    private func record(_ model: LoadedModel) {
        record(model.tier, bytes: model.byteCount, seconds: model.timings.total)
        recordLinks(model.timings)
    }

    /// Adds a fetch's sources to their links' averages (a fetched checkpoint is never streamed:
    /// its load has ended when the model comes back).
    private func recordLinks(_ timings: LoadTimings) {
        guard let fetched = timings.fetched, let seconds = timings.fetchSeconds else { return }
        links.withLock { links in
            for (source, bytes) in fetched {
                guard bytes > 0, let time = seconds[source], time > 0 else { continue }
                links[source, default: (BandwidthAverage(), 0)].rate.add(Double(bytes) / time)
                links[source]?.bytes += bytes
            }
        }
    }

    private func record(_ tier: Tier, bytes: Int, seconds: Double) {
        guard seconds > 0, bytes > 0 else { return }
        bandwidth.withLock { $0[tier, default: BandwidthAverage()].add(Double(bytes) / seconds) }
    }

    // MARK: - Instances

    public func startInstance(_ spec: InstanceSpec) -> AsyncThrowingStream<StartEvent, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: StartEvent.self, throwing: (any Error).self)
        let task = Task {
            do {
                continuation.yield(.started(try await start(spec) { continuation.yield(.loading($0)) }))
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    private func start(_ spec: InstanceSpec, progress: @escaping @Sendable (Double) -> Void) async throws
        -> InstanceInfo
    {
        let name = spec.model
        let start = ContinuousClock.now
        var plan = FetchPlan()
        if let peers, !spec.sources.isEmpty {
            plan = FetchPlan(sources: spec.sources.filter { $0.node != node }.map(peers), spread: spec.spread)
        }
        let model = try await loader.load(name, streaming: serveWhileLoading, from: plan) { report in
            if report.totalBytes > 0 { progress(Double(report.completedBytes) / Double(report.totalBytes)) }
        }
        if !keepFetched, model.tier == .peer || model.tier == .remote { fetchedHere.withLock { _ = $0.insert(name) } }
        // A streamed load returns once its memory is reserved: this is the time to start serving,
        // and the rest of the load overlaps the first prompt's pass.
        let loadSeconds = seconds(since: start)
        try Task.checkCancellation()
        var options = Engine.Options()
        options.threads = threads
        options.contextLength = spec.sizing.contextLength
        options.kvCacheBytes = spec.sizing.kvCacheBytes
        let engine = try Engine(model: model, tokenizer: try tokenizers.tokenizer(of: model), options: options)
        let info = InstanceInfo(
            id: spec.id, deployment: spec.deployment, model: spec.model, startedAt: Date(), tier: model.tier,
            loadSeconds: loadSeconds, engineInitSeconds: engine.startupSeconds, weightBytes: model.byteCount,
            kvCacheBytes: options.kvCacheBytes, contextLength: engine.contextLength,
            fetchedBytes: model.timings.fetched, fetchSeconds: model.timings.fetchSeconds,
            verifySeconds: model.timings.verify > 0 ? model.timings.verify : nil)
        let instance = InstanceRunner(
            info: info, engine: engine, model: model, maxSequences: spec.sizing.maxSequences, logger: logger)
        instances.withLock { $0[spec.id] = instance }
        instance.start()
        if let completion = model.completion {
            logger.info(
                "instance \(spec.id) of \(spec.deployment) serving from \(model.tier.rawValue) while its weights load (\(String(format: "%.1f", loadSeconds * 1000)) ms to start)"
            )
            watch(completion, instance: spec.id)
        } else {
            record(model)
            logger.info(
                "instance \(spec.id) of \(spec.deployment) started from \(model.tier.rawValue) in \(String(format: "%.1f", loadSeconds * 1000)) ms"
            )
        }
        return info
    }

    /// Waits (on a thread of its own, holding neither the model nor the instance) for a streamed
    /// load to end: a load that finished counts towards its tier's bandwidth; one that failed (a
    /// checksum, a read error) is logged. Its instance's passes fail with the error, which makes
    /// the deployment stop it (`ServingError.Kind.instanceFailed`).
    private func watch(_ completion: LoadCompletion, instance id: String) {
        Thread.detachNewThread { [self] in
            do {
                try completion.wait()
                record(completion.tier, bytes: completion.byteCount, seconds: completion.seconds)
                logger.debug("instance \(id): weights loaded", metadata: ["seconds": "\(completion.seconds)"])
            } catch is CancellationError {
                // Stopped before its weights were in.
            } catch {
                logger.error("instance \(id): its weights did not load: \(error)")
            }
        }
    }

    public func stopInstance(_ id: String) async {
        guard let handoff = instances.withLock({ $0.removeValue(forKey: id) }).map(Handoff.init) else { return }
        let info = handoff.info
        // Waits for the batching thread to leave its current step; off the cooperative pool. The
        // thread lets go of the instance before the wait ends, so its model is no longer in use
        // when this returns (`sllm store evict` right after `sllm stop` finds it free).
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread {
                handoff.take()?.stop()
                done.resume()
            }
        }
        logger.info("instance \(id) of \(info.deployment) stopped")
        if !keepFetched { await dropFetched(info.model) }
    }

    /// Passes an instance to the thread that stops it, which lets go of it when done.
    private final class Handoff: Sendable {
        private let runner: Mutex<InstanceRunner?>
        let info: InstanceInfo
        init(_ runner: InstanceRunner) {
            self.runner = Mutex(runner)
            info = runner.info
        }
        func take() -> InstanceRunner? { runner.withLock { $0.take() } }
    }

    /// Drops a checkpoint this node fetched once no instance of it runs (`keepFetched` off).
    private func dropFetched(_ model: ModelName) async {
        let drop = fetchedHere.withLock { fetched in
            guard fetched.contains(model), !instances.withLock({ $0.values.contains { $0.info.model == model } })
            else { return false }
            fetched.remove(model)
            return true
        }
        guard drop else { return }
        let cached = (try? await loader.evict(model)) ?? 0
        do {
            try store.remove(model)
            logger.info(
                "dropped the fetched checkpoint of \(model) (its last instance stopped; keep_fetched is off)",
                metadata: ["dram_bytes": "\(cached)"])
        } catch {
            logger.warning("could not drop the fetched checkpoint of \(model): \(error)")
        }
    }

    public func run(_ job: GenerationJob, on instanceID: String) -> AsyncThrowingStream<GenerationEvent, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(
            of: GenerationEvent.self, throwing: (any Error).self)
        guard let instance = instances.withLock({ $0[instanceID] }) else {
            continuation.finish(throwing: ServingError(.unavailable, "instance \(instanceID) is not running"))
            return stream
        }
        runningJobs.add(1, ordering: .relaxed)
        continuation.onTermination = { [self] termination in
            runningJobs.subtract(1, ordering: .relaxed)
            if case .cancelled = termination { instance.cancel(job.id) }
        }
        instance.submit(job, continuation: continuation)
        return stream
    }

    public func cancel(job: String, on instanceID: String) async {
        instances.withLock { $0[instanceID] }?.cancel(job)
    }

    public func snapshot(job: String, on instanceID: String) async -> SequenceSnapshot? {
        guard let instance = instances.withLock({ $0[instanceID] }) else { return nil }
        return await instance.snapshot(of: job)
    }

    public func warm(_ tokens: [Int], on instanceID: String) async throws -> WarmReport {
        guard let instance = instances.withLock({ $0[instanceID] }) else {
            throw ServingError(.unavailable, "instance \(instanceID) is not running")
        }
        return try await instance.warm(tokens)
    }

    public func detach(job: String, on instanceID: String) async -> Bool {
        guard let instance = instances.withLock({ $0[instanceID] }) else { return false }
        return await instance.detach(job)
    }
}

/// An exponentially weighted average of load bandwidths: recent loads count most (weight 0.3),
/// so a tier that slows down (a busy disk, memory pressure) shows it within a few loads.
struct BandwidthAverage: Sendable {
    private(set) var bytesPerSecond: Double?
    private(set) var count = 0
    static let weight = 0.3

    mutating func add(_ rate: Double) {
        bytesPerSecond = bytesPerSecond.map { $0 + Self.weight * (rate - $0) } ?? rate
        count += 1
    }
}

/// Checkpoint sizes by model, valid while the index's modification time is unchanged.
final class StoreSizes: Sendable {
    private let sizes = Mutex<[String: (stamp: Double, bytes: Int)]>([:])

    func bytes(of name: String, stamp: Double) -> Int? {
        sizes.withLock { $0[name] }.flatMap { $0.stamp == stamp ? $0.bytes : nil }
    }

    func record(_ name: String, stamp: Double, bytes: Int) {
        sizes.withLock { $0[name] = (stamp, bytes) }
    }
}

extension LocalWorker {
    /// The node's background work while it serves: the DRAM pool's fill (`dram_fill`) and the
    /// DRAM cache's check (`dram_scrub_rate`); `sllm serve` and `sllm worker` both run them.
    public func backgroundServices(configuration: ServeConfiguration, logger: Logger) -> [any Service] {
        backgroundServices(configuration: configuration, metrics: ServingMetrics(), logger: logger)
    }

    func backgroundServices(configuration: ServeConfiguration, metrics: ServingMetrics, logger: Logger)
        -> [any Service]
    {
        [
            DRAMPoolService(
                cache: loader.cache, enabled: configuration.dramFill, busy: { [self] in isBusy }, logger: logger),
            DRAMScrubber(
                cache: loader.cache, store: store, bytesPerSecond: configuration.dramScrubBytesPerSecond,
                interval: configuration.dramScrubInterval, metrics: metrics, logger: logger),
        ]
    }
}
