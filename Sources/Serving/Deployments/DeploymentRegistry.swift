public import Scheduling
import Checkpoint
import Engine
import Foundation
import Logging
import Store
import Synchronization
import Tokenizers

/// The node's deployments: creates, updates and deletes them (persisting each change), pulls
/// models that are not local in the background, and routes requests to a deployment by name.
actor Controller {
    let configuration: ServeConfiguration
    let store: ModelStore
    let loader: ModelLoader
    let worker: any Worker
    let state: StateStore
    let metrics: ServingMetrics
    let resources: NodeResources
    /// Tokenizers of deployed models (shared with the node's worker).
    let tokenizers: TokenizerCache
    /// The deployments' clock (keep-alive timers, last use): the system's, or a manual one in tests.
    let clock: any SchedulerClock
    private let logger: Logger
    private var deployments: [String: Deployment] = [:]
    /// Deployments whose model is being pulled (or whose pull failed), with progress.
    private var pending: [String: PendingDeployment] = [:]

    struct PendingDeployment {
        var spec: DeploymentSpec
        var task: Task<Deployment, any Error>
        var progress: PullProgress?
        var failure: String?
    }

    init(configuration: ServeConfiguration, store: ModelStore, loader: ModelLoader, worker: any Worker,
         state: StateStore, tokenizers: TokenizerCache = TokenizerCache(), clock: any SchedulerClock = SystemClock(),
         metrics: ServingMetrics, logger: Logger) {
        self.configuration = configuration
        self.tokenizers = tokenizers
        self.clock = clock
        self.store = store
        self.loader = loader
        self.worker = worker
        self.state = state
        self.metrics = metrics
        self.logger = logger
        resources = NodeResources(budgetBytes: configuration.memoryBudgetBytes)
    }

    /// Brings back the stored deployments (scaled to zero, or to their minimum), deploys the
    /// default model on the very first start, and preloads the configured models.
    func restore() async throws {
        await resources.setIdleInstances(
            candidates: { [weak self] in await self?.idleInstances() ?? [] },
            evict: { [weak self] candidate in await self?.evict(candidate) ?? 0 })
        for spec in try state.deployments() {
            // A pull cut short (crash, restart) resumes from the stored source; its download
            // continues where it stopped.
            activate(spec, pull: !store.contains(try ModelName(spec.model)), source: spec.source)
        }
        if try state.setting("default_deployed") == nil {
            try state.setSetting("default_deployed", "1")
            if !configuration.defaultModel.isEmpty, deployments[configuration.defaultModel] == nil, pending[configuration.defaultModel] == nil {
                _ = try deploy(DeploymentRequest(model: configuration.defaultModel))
            }
        }
        try await applyStartSettings()
        for name in configuration.preload {
            if deployments[name] == nil && pending[name] == nil { _ = try deploy(DeploymentRequest(model: name)) }
            Task { try? await self.preload(name) }
        }
    }

    /// Settings given at start (flag, environment, config file) win over the stored ones for the
    /// deployments the server makes itself (the default model, `preload`); what was not given
    /// keeps what `sllm update` stored. Each start logs which source won, setting by setting.
    private func applyStartSettings() async throws {
        let names = ([configuration.defaultModel] + configuration.preload).filter { !$0.isEmpty }
        for name in Set(names).sorted() {
            let stored: DeploymentSpec
            if let deployment = deployments[name] { stored = await deployment.spec } else if let spec = pending[name]?.spec { stored = spec } else { continue }
            let given = configuration.deploymentDefaults
            var request = DeploymentRequest()
            var changed = false
            var won: [String] = [], kept: [String] = []
            func take<T: Equatable>(_ key: String, _ value: T, _ current: T, _ set: (inout DeploymentRequest) -> Void) {
                if configuration.explicitScaling.contains(key) {
                    if value != current {
                        set(&request)
                        changed = true
                    }
                    won.append("\(key)=\(value)")
                } else {
                    kept.append("\(key)=\(current)")
                }
            }
            take("min_instances", given.minInstances, stored.scaling.minInstances) { $0.minInstances = given.minInstances }
            take("max_instances", given.maxInstances, stored.scaling.maxInstances) { $0.maxInstances = given.maxInstances }
            take("target_concurrency", given.targetConcurrency, stored.scaling.targetConcurrency) { $0.targetConcurrency = given.targetConcurrency }
            take("keep_alive", given.keepAlive, stored.scaling.keepAlive) { $0.keepAlive = given.keepAlive }
            take("queue_limit", given.queueLimit, stored.scaling.queueLimit) { $0.queueLimit = given.queueLimit }
            do {
                if changed { _ = try await update(name, with: request) }
            } catch {
                logger.warning("the start settings do not fit the deployment; keeping its stored settings", metadata: ["deployment": "\(name)", "error": "\(error)"])
                continue
            }
            logger.info("deployment \(name): scaling from the start settings: \(won.isEmpty ? "none" : won.joined(separator: ", ")); stored (sllm update): \(kept.isEmpty ? "none" : kept.joined(separator: ", "))")
        }
    }

    /// Starts one instance of a deployment ahead of requests (keeps it for its keep-alive).
    func preload(_ name: String) async throws {
        let deployment = try await self.deployment(named: name)
        let lease = try await deployment.acquire()
        await deployment.release(lease, keepAlive: nil)
    }

    // MARK: - Routing

    /// The deployment serving `name`, waiting for its model's pull when one is under way.
    func deployment(named name: String) async throws -> Deployment {
        if let deployment = deployments[name] { return deployment }
        guard let pending = pending[name] else {
            throw ServingError(.notFound, "the model `\(name)` does not exist (deployed: \(names.joined(separator: ", ")); `sllm deploy \(name)` deploys it)", param: "model")
        }
        if let failure = pending.failure {
            throw ServingError(.unavailable, "deployment `\(name)` is not ready: pulling its model failed: \(failure)")
        }
        do {
            return try await pending.task.value
        } catch {
            throw ServingError(.unavailable, "deployment `\(name)` is not ready: pulling its model failed: \(ServingError(error).message)")
        }
    }

    /// Pull progress of a deployment still pulling its model (0...1), nil otherwise.
    func pullProgress(of name: String) -> Double? { pending[name]?.progress?.fraction }

    var names: [String] { (Array(deployments.keys) + Array(pending.keys)).sorted() }

    // MARK: - Administration

    /// Creates a deployment; a model that is not in the store is pulled in the background.
    func deploy(_ request: DeploymentRequest) throws -> DeploymentSpec {
        var scaling = configuration.deploymentDefaults
        request.apply(to: &scaling)
        do { try scaling.validate() } catch { throw ServingError(error) }
        guard let source = request.model, !source.isEmpty else { throw ServingError(.invalidRequest, "a deployment needs a `model`", param: "model") }
        let local = (try? ModelName(source)).map { store.contains($0) } ?? false
        // A source to pull is checked before the deployment is accepted; it names the
        // deployment as `sllm pull` would name the model.
        var pulledName: ModelName?
        if !local {
            let parsed: (source: ModelSource, aliasName: String?)
            do { parsed = try ModelSource.parse(source) } catch {
                throw ServingError(.invalidRequest, "model `\(source)` is not in the store and is not something `sllm pull` can fetch: \(error.description)", param: "model")
            }
            if case .local(let path) = parsed.source, !FileManager.default.fileExists(atPath: path) {
                throw ServingError(.invalidRequest, "model `\(source)` is neither in the store (`sllm list`), an alias (\(ModelSource.aliases.map(\.name).joined(separator: ", "))), a URL, a pip: source nor an existing file", param: "model")
            }
            do {
                pulledName = try parsed.aliasName.map { try ModelName($0) } ?? parsed.source.defaultName()
            } catch {
                throw ServingError(.invalidRequest, "\(error)", param: "model")
            }
        }
        let name: String
        do {
            name = try request.name.map { try ModelName($0).rawValue } ?? pulledName?.rawValue ?? source
        } catch {
            throw ServingError(.invalidRequest, "\(error)", param: "name")
        }
        guard deployments[name] == nil, pending[name] == nil else {
            throw ServingError(.conflict, "deployment `\(name)` already exists (`sllm update \(name)` changes it)", param: "name")
        }
        if let context = request.contextLength, context < 1 {
            throw ServingError(.invalidRequest, "context must be positive (got \(context))", param: "context_length")
        }
        let spec = DeploymentSpec(name: name, model: local ? source : name, scaling: scaling, contextLength: request.contextLength,
                                  source: local ? nil : Self.pullableSource(source))
        try state.save(spec)
        activate(spec, pull: !local, source: source)
        return spec
    }

    /// A source as it can be pulled again later: a relative path made absolute (the server's
    /// working directory), anything else as given.
    static func pullableSource(_ source: String) -> String {
        guard case .local(let path)? = try? ModelSource.parse(source).source else { return source }
        return FileSystem.absolute(path)
    }

    func update(_ name: String, with request: DeploymentRequest) async throws -> DeploymentSpec {
        var spec: DeploymentSpec
        if let deployment = deployments[name] {
            spec = await deployment.spec
        } else if let pendingSpec = pending[name]?.spec {
            spec = pendingSpec
        } else {
            throw ServingError(.notFound, "deployment `\(name)` does not exist")
        }
        request.apply(to: &spec.scaling)
        do { try spec.scaling.validate() } catch { throw ServingError(error) }
        if let context = request.contextLength {
            guard context >= 1 else { throw ServingError(.invalidRequest, "context must be positive (got \(context))", param: "context_length") }
            spec.contextLength = context
        }
        try state.save(spec)
        if let deployment = deployments[name] {
            await deployment.update(spec)
        } else {
            pending[name]?.spec = spec
        }
        return spec
    }

    /// Stops a deployment's idle instances now (it stays deployed and starts again on demand).
    func unload(_ name: String) async throws -> (stopped: Int, busy: Int) {
        guard let deployment = deployments[name] else {
            if pending[name] != nil { return (0, 0) }
            throw ServingError(.notFound, "deployment `\(name)` does not exist")
        }
        return await deployment.unload()
    }

    func delete(_ name: String) async throws {
        if let deployment = deployments.removeValue(forKey: name) {
            try state.deleteDeployment(name)
            await deployment.delete()
        } else if let pending = pending.removeValue(forKey: name) {
            try state.deleteDeployment(name)
            pending.task.cancel()
        } else {
            throw ServingError(.notFound, "deployment `\(name)` does not exist")
        }
    }

    func statuses() async -> [DeploymentReport] {
        var reports: [DeploymentReport] = []
        for name in names {
            if let deployment = deployments[name] {
                let status = await deployment.snapshot()
                reports.append(DeploymentReport(status: status, state: "ready", pullProgress: nil, error: nil, tiers: tiers(of: status.spec.model)))
            } else if let pending = pending[name] {
                reports.append(DeploymentReport(
                    status: DeploymentStatus(spec: pending.spec, contextLength: pending.spec.contextLength ?? 0, instances: [], inFlight: 0, queued: 0),
                    state: pending.failure == nil ? "pulling" : "failed", pullProgress: pending.progress?.fraction,
                    pullPhase: pending.progress?.snapshot.phase, pullBytes: pending.progress?.snapshot.completedBytes,
                    pullTotalBytes: pending.progress?.snapshot.totalBytes,
                    error: pending.failure, tiers: tiers(of: pending.spec.model)))
            }
        }
        return reports
    }

    /// Where the checkpoint sits: local store (SSD), DRAM cache.
    private func tiers(of model: String) -> [String] {
        guard let name = try? ModelName(model), store.contains(name) else { return [] }
        return (loader.cache.contains(name: name.rawValue) ? ["dram"] : []) + ["ssd"]
    }

    /// Stops every instance (server shutdown).
    func stopAll() async {
        for deployment in deployments.values { await deployment.delete() }
        for pending in pending.values { pending.task.cancel() }
    }

    /// Every idle instance of the node, for memory admission.
    private func idleInstances() async -> [MemoryAdmission.Candidate] {
        var candidates: [MemoryAdmission.Candidate] = []
        for (name, deployment) in deployments {
            candidates += await deployment.idleInstances().map {
                MemoryAdmission.Candidate(instance: $0.id, deployment: name, bytes: $0.bytes, lastUsed: $0.lastUsed.seconds)
            }
        }
        return candidates
    }

    /// Stops an idle instance memory admission chose; returns the bytes freed (0 when it became busy).
    private func evict(_ candidate: MemoryAdmission.Candidate) async -> Int {
        await deployments[candidate.deployment]?.evict(candidate.instance) ?? 0
    }

    // MARK: - Activation

    private func activate(_ spec: DeploymentSpec, pull: Bool, source: String? = nil) {
        if !pull, let deployment = try? makeDeploymentNow(spec) {
            deployments[spec.name] = deployment
            Task { await deployment.activate() }
            return
        }
        // A deployment of a store model that is gone (`sllm rm --force`) has nothing to pull
        // from: say so instead of taking its name for a path.
        if pull, source == nil, case .local(let path)? = try? ModelSource.parse(spec.model).source, !FileManager.default.fileExists(atPath: path) {
            let message = "model `\(spec.model)` is no longer in the store (removed?); `sllm pull` it again, then restart or `sllm delete \(spec.name)`"
            let task = Task<Deployment, any Error> { throw ServingError(.unavailable, message) }
            pending[spec.name] = PendingDeployment(spec: spec, task: task, progress: nil, failure: message)
            logger.error("deployment \(spec.name): \(message)")
            return
        }
        // Pull first (or retry opening the checkpoint, to record why it fails).
        let progress = pull ? PullProgress() : nil
        let task = Task { () throws -> Deployment in
            if let progress {
                try await self.pull(source ?? spec.model, as: spec.name, progress: progress)
            }
            return try await self.makeDeployment(spec)
        }
        pending[spec.name] = PendingDeployment(spec: spec, task: task, progress: progress)
        Task {
            do {
                let deployment = try await task.value
                self.finishActivation(deployment)
            } catch {
                self.failActivation(spec.name, error: error)
            }
        }
    }

    private func finishActivation(_ deployment: Deployment) {
        guard let entry = pending.removeValue(forKey: deployment.name) else { return }
        deployments[deployment.name] = deployment
        let minimum = entry.spec.scaling.minInstances
        logger.info("deployed \(deployment.name), \(minimum == 0 ? "scaled to zero (the first request starts an instance)" : "starting \(minimum) instance\(minimum == 1 ? "" : "s")")")
        Task {
            await deployment.update(entry.spec)
            await deployment.activate()
        }
    }

    private func failActivation(_ name: String, error: any Error) {
        guard pending[name] != nil else { return }
        let message = ServingError(error).message
        logger.error("deployment \(name): \(message)")
        pending[name]?.failure = message
    }

    private func pull(_ source: String, as name: String, progress: PullProgress) async throws {
        logger.info("deployment \(name): pulling \(source)")
        var puller = Puller(store: store, logger: logger)
        puller.validate = { try Engine.validate($0) }
        let logger = self.logger
        _ = try await puller.pull(source, as: try ModelName(name), force: false) { report in
            // The log shows each phase in steps of 10% (a server has no progress bar).
            if let step = progress.record(report) {
                logger.info("deployment \(name): \(report.phase) \(report.totalBytes > 0 ? "\(step)%" : "\(step) MiB")", metadata: [
                    "bytes": "\(formatBytes(report.completedBytes)) of \(report.totalBytes > 0 ? formatBytes(report.totalBytes) : "?")",
                ])
            }
        }
    }

    private func makeDeployment(_ spec: DeploymentSpec) async throws -> Deployment {
        try await Task.detached { try self.makeDeploymentNow(spec) }.value
    }

    /// Opens the model's checkpoint in the store: tokenizer, context length and the memory one
    /// instance needs.
    nonisolated private func makeDeploymentNow(_ spec: DeploymentSpec) throws -> Deployment {
        let reader = try store.reader(for: try ModelName(spec.model))
        let tokenizer = try tokenizers.tokenizer(of: reader)
        let config = reader.index.config
        let weights = reader.index.partitions.reduce(0) { $0 + $1.byteCount }
        return Deployment(spec: spec, tokenizer: tokenizer, modelContextLength: config.contextLength, weightBytes: weights,
                          kvBytesPerPosition: Engine.kvBytesPerPosition(config), worker: worker, resources: resources, clock: clock, metrics: metrics, logger: logger)
    }
}

/// `POST /admin/deployments` and `PATCH /admin/deployments/{name}`: every field but `model` optional.
public struct DeploymentRequest: Sendable, Codable {
    /// The model to serve: a store name, an alias or a source `sllm pull` takes (ignored by updates).
    public var model: String?
    public var name: String?
    public var minInstances: Int?
    public var maxInstances: Int?
    public var targetConcurrency: Int?
    public var keepAlive: KeepAlive?
    public var queueLimit: Int?
    public var contextLength: Int?

    public init(model: String? = nil, name: String? = nil, minInstances: Int? = nil, maxInstances: Int? = nil, targetConcurrency: Int? = nil,
                keepAlive: KeepAlive? = nil, queueLimit: Int? = nil, contextLength: Int? = nil) {
        self.model = model
        self.name = name
        self.minInstances = minInstances
        self.maxInstances = maxInstances
        self.targetConcurrency = targetConcurrency
        self.keepAlive = keepAlive
        self.queueLimit = queueLimit
        self.contextLength = contextLength
    }

    func apply(to scaling: inout ScalingSettings) {
        if let minInstances { scaling.minInstances = minInstances }
        if let maxInstances { scaling.maxInstances = maxInstances }
        if let targetConcurrency { scaling.targetConcurrency = targetConcurrency }
        if let keepAlive { scaling.keepAlive = keepAlive }
        if let queueLimit { scaling.queueLimit = queueLimit }
    }
}

/// One row of `sllm status`.
public struct DeploymentReport: Sendable, Codable {
    public var status: DeploymentStatus
    /// `ready`, `pulling` or `failed`.
    public var state: String
    public var pullProgress: Double?
    /// What the pull does now (`download`, `convert`), with its bytes.
    public var pullPhase: String?
    public var pullBytes: Int64?
    public var pullTotalBytes: Int64?
    public var error: String?
    /// Tiers holding the checkpoint, fastest first.
    public var tiers: [String]
}

/// A pull's progress, written by the pull and read by status requests.
final class PullProgress: Sendable {
    private let storage = Mutex<(report: Checkpoint.Progress, loggedStep: Int)>((Checkpoint.Progress(phase: "start", completedBytes: 0, totalBytes: 0), -1))

    var snapshot: Checkpoint.Progress { storage.withLock { $0.report } }
    var fraction: Double {
        let report = snapshot
        return report.totalBytes > 0 ? Double(report.completedBytes) / Double(report.totalBytes) : 0
    }

    /// Records a report; returns the percentage (a multiple of 10) when it crossed a new step.
    func record(_ report: Checkpoint.Progress) -> Int? {
        storage.withLock { state in
            if state.report.phase != report.phase { state.loggedStep = -1 }
            state.report = report
            // Without a total (pip), a line every 16 MiB, shown as the MiB so far.
            guard report.totalBytes > 0 else {
                let mebibytes = Int(report.completedBytes >> 24) * 16
                guard mebibytes > state.loggedStep else { return nil }
                state.loggedStep = mebibytes
                return mebibytes
            }
            let step = Int(Double(report.completedBytes) / Double(report.totalBytes) * 10) * 10
            guard step > state.loggedStep else { return nil }
            state.loggedStep = step
            return step
        }
    }
}

