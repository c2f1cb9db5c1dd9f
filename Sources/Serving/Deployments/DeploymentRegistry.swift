import Checkpoint
import Engine
import Foundation
import Logging
public import Scheduling
public import Store
import Synchronization
import Tokenizers

/// The deployment registry: creates, updates and deletes deployments (persisting each change),
/// has the worker pull models it does not hold in the background, and routes requests to a
/// deployment by name. It knows the node only through the ``Worker`` protocol: model facts,
/// inventories, pulls and instances, never the node's disk.
actor DeploymentRegistry {
    let configuration: ServeConfiguration
    /// The nodes instances run on (one for `sllm serve`), their memory budgets and the placement
    /// policy choosing among them.
    let pool: NodePool
    /// The node models are pulled to and inspected on (the first that joined and is still
    /// here; a cluster's nodes fetch from it and each other).
    func catalog(holding model: ModelName? = nil) async throws(ServingError) -> any Worker {
        try await pool.catalog(holding: model)
    }
    let state: any StateStore
    let metrics: ServingMetrics
    /// Tokenizers of deployed models (shared with the node's worker).
    let tokenizers: TokenizerCache
    /// The deployments' clock (keep-alive timers, last use): the system's, or a manual one in tests.
    let clock: any SchedulerClock
    private let logger: Logger
    private var deployments: [String: Deployment] = [:]
    /// Set once the stored deployments are back: from then on a joining node's running
    /// instances are adopted at once (before, `restore` adopts them).
    private var restored = false
    /// The loop that keeps checkpoints warm (`keepWarm`), from `restore` to `stopAll`/`detach`.
    private var warmKeeper: Task<Void, Never>?
    /// Deployments whose model is being pulled (or whose pull failed), with progress.
    private var pending: [String: PendingDeployment] = [:]
    /// Names of deployments being created (between their check and their activation).
    private var deploying: Set<String> = []

    struct PendingDeployment {
        var spec: DeploymentSpec
        var task: Task<Deployment, any Error>
        var progress: PullProgress?
        var failure: String?
    }

    /// - Parameters:
    ///   - placement: chooses the node of each instance start (`SingleNodePlacement` for one node).
    ///   - tokenizers: where tokenizers built from model facts are kept (in one process, the
    ///     worker's own, so a model's vocabulary is parsed once).
    init(
        configuration: ServeConfiguration, workers: [any Worker], placement: any Placement = SingleNodePlacement(),
        state: any StateStore, tokenizers: TokenizerCache = TokenizerCache(), clock: any SchedulerClock = SystemClock(),
        metrics: ServingMetrics, placementLog: (any PlacementLog)? = nil, logger: Logger
    ) {
        pool = NodePool(
            workers: workers, placement: placement, peerFetch: configuration.peerFetch, log: placementLog)
        self.configuration = configuration
        self.tokenizers = tokenizers
        self.clock = clock
        self.state = state
        self.metrics = metrics
        self.logger = logger
    }

    /// Brings back the stored deployments (scaled to zero, or to their minimum), deploys the
    /// default model on the very first start, and preloads the configured models.
    func restore() async throws {
        await pool.setIdleInstances(
            candidates: { [weak self] node in await self?.idleInstances(on: node) ?? [] },
            evict: { [weak self] candidate in await self?.evict(candidate) ?? 0 })
        if configuration.migration {
            await pool.setMigration(
                busy: { [weak self] node in await self?.busyInstances(on: node) ?? [] },
                migrate: { [weak self] instance, node in
                    guard let self else { throw ServingError(.shuttingDown, "the server is stopping") }
                    return try await self.migrate(instance: instance, to: node)
                })
        }
        if await pool.nodes.isEmpty {
            logger.info("waiting for a worker to join (`sllm worker --controller URL`)")
            try await pool.waitForNode()
        }
        var restoredNow: [Deployment] = []
        for spec in try await state.deployments() {
            // A pull cut short (crash, restart) resumes from the stored source; its download
            // continues where it stopped.
            let held = await pool.holder(of: try ModelName(spec.model)) != nil
            if let deployment = await activate(spec, pull: !held, source: spec.source, start: false) {
                restoredNow.append(deployment)
            }
        }
        // Instances still running on the nodes (this controller restarted, or took over from
        // another) are adopted before minimums are started, so none is started twice.
        restored = true
        for node in await pool.nodes { await adoptRunning(on: node, await node.worker.inventory().running) }
        for deployment in restoredNow { await deployment.activate() }
        if try await state.setting("default_deployed") == nil {
            try await state.setSetting("default_deployed", "1")
            if !configuration.defaultModel.isEmpty, deployments[configuration.defaultModel] == nil,
                pending[configuration.defaultModel] == nil
            {
                _ = try await deploy(DeploymentRequest(model: configuration.defaultModel))
            }
        }
        try await applyStartSettings()
        for name in configuration.preload {
            if deployments[name] == nil && pending[name] == nil { _ = try await deploy(DeploymentRequest(model: name)) }
            Task { try? await self.preload(name) }
        }
        warmKeeper?.cancel()
        warmKeeper = Task {
            while !Task.isCancelled {
                await self.keepWarm()
                try? await Task.sleep(for: Self.warmInterval)
            }
        }
    }

    /// Settings given at start (flag, environment, config file) win over the stored ones for the
    /// deployments the server makes itself (the default model, `preload`); what was not given
    /// keeps what `sllm update` stored. Each start logs which source won, setting by setting.
    private func applyStartSettings() async throws {
        let names = ([configuration.defaultModel] + configuration.preload).filter { !$0.isEmpty }
        for name in Set(names).sorted() {
            let stored: DeploymentSpec
            if let deployment = deployments[name] {
                stored = await deployment.spec
            } else if let spec = pending[name]?.spec {
                stored = spec
            } else {
                continue
            }
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
            take("min_instances", given.minInstances, stored.scaling.minInstances) {
                $0.minInstances = given.minInstances
            }
            take("max_instances", given.maxInstances, stored.scaling.maxInstances) {
                $0.maxInstances = given.maxInstances
            }
            take("target_concurrency", given.targetConcurrency, stored.scaling.targetConcurrency) {
                $0.targetConcurrency = given.targetConcurrency
            }
            take("keep_alive", given.keepAlive, stored.scaling.keepAlive) { $0.keepAlive = given.keepAlive }
            take("queue_limit", given.queueLimit, stored.scaling.queueLimit) { $0.queueLimit = given.queueLimit }
            do {
                if changed { _ = try await update(name, with: request) }
            } catch {
                logger.warning(
                    "the start settings do not fit the deployment; keeping its stored settings",
                    metadata: ["deployment": "\(name)", "error": "\(error)"])
                continue
            }
            logger.info(
                "deployment \(name): scaling from the start settings: \(won.isEmpty ? "none" : won.joined(separator: ", ")); stored (sllm update): \(kept.isEmpty ? "none" : kept.joined(separator: ", "))"
            )
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
            throw ServingError(
                .notFound,
                "the model `\(name)` does not exist (deployed: \(names.joined(separator: ", ")); `sllm deploy \(name)` deploys it)",
                param: "model")
        }
        if let failure = pending.failure {
            throw ServingError(.unavailable, "deployment `\(name)` is not ready: pulling its model failed: \(failure)")
        }
        do {
            return try await pending.task.value
        } catch {
            throw ServingError(
                .unavailable,
                "deployment `\(name)` is not ready: pulling its model failed: \(ServingError(error).message)")
        }
    }

    /// Pull progress of a deployment still pulling its model (0...1), nil otherwise.
    func pullProgress(of name: String) -> Double? { pending[name]?.progress?.fraction }

    var names: [String] { (Array(deployments.keys) + Array(pending.keys)).sorted() }

    // MARK: - Administration

    /// Creates a deployment; a model the worker does not hold is pulled in the background.
    func deploy(_ request: DeploymentRequest) async throws -> DeploymentSpec {
        var scaling = configuration.deploymentDefaults
        request.apply(to: &scaling)
        do { try scaling.validate() } catch { throw ServingError(error) }
        guard let source = request.model, !source.isEmpty else {
            throw ServingError(.invalidRequest, "a deployment needs a `model`", param: "model")
        }
        if let context = request.contextLength, context < 1 {
            throw ServingError(.invalidRequest, "context must be positive (got \(context))", param: "context_length")
        }
        // A source to pull is checked (by the worker, whose disk a path names) before the
        // deployment is accepted; it names the deployment as `sllm pull` would name the model.
        let worker = try await catalog(holding: try? ModelName(source))
        let resolution = try await worker.resolve(source)
        let name: String
        do {
            name = try request.name.map { try ModelName($0).rawValue } ?? resolution.pullName?.rawValue ?? source
        } catch {
            throw ServingError(.invalidRequest, "\(error)", param: "name")
        }
        // The name is taken from here on: the awaits below (the worker, the state store) let
        // other requests in, and a second deploy of the same name must see it.
        try checkFree(name)
        deploying.insert(name)
        defer { deploying.remove(name) }
        let local = resolution.local != nil
        let spec = DeploymentSpec(
            name: name, model: local ? source : name, scaling: scaling, contextLength: request.contextLength,
            source: local ? nil : resolution.pullableSource)
        let facts = local ? try? await worker.modelFacts(try ModelName(source)) : nil
        try await state.save(spec)
        await activate(spec, pull: !local, source: local ? nil : resolution.pullableSource ?? source, facts: facts)
        if spec.scaling.dramReplicas > 0 { Task { await self.keepWarm() } }
        return spec
    }

    private func checkFree(_ name: String) throws(ServingError) {
        guard deployments[name] == nil, pending[name] == nil, !deploying.contains(name) else {
            throw ServingError(
                .conflict, "deployment `\(name)` already exists (`sllm update \(name)` changes it)", param: "name")
        }
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
            guard context >= 1 else {
                throw ServingError(
                    .invalidRequest, "context must be positive (got \(context))", param: "context_length")
            }
            spec.contextLength = context
        }
        try await state.save(spec)
        if let deployment = deployments[name] {
            await deployment.update(spec)
        } else {
            pending[name]?.spec = spec
        }
        if spec.scaling.dramReplicas > 0 { Task { await self.keepWarm() } }
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
            try await state.deleteDeployment(name)
            await deployment.delete()
        } else if let pending = pending.removeValue(forKey: name) {
            try await state.deleteDeployment(name)
            pending.task.cancel()
        } else {
            throw ServingError(.notFound, "deployment `\(name)` does not exist")
        }
    }

    func statuses() async -> [DeploymentReport] {
        let inventories = await self.inventories()
        // The tiers holding a model on any node, fastest first.
        func tiers(of model: String) -> [Tier] {
            guard let name = try? ModelName(model) else { return [] }
            let held = inventories.flatMap { inventory in
                inventory.tiers.filter { tier in tier.models.contains { $0.name == name } }.map(\.tier)
            }
            return [Tier.dram, .ssd, .remote].filter(held.contains)
        }
        var reports: [DeploymentReport] = []
        for name in names {
            if let deployment = deployments[name] {
                let status = await deployment.snapshot()
                reports.append(
                    DeploymentReport(
                        status: status, state: "ready", pullProgress: nil, error: nil,
                        tiers: tiers(of: status.spec.model)))
            } else if let pending = pending[name] {
                reports.append(
                    DeploymentReport(
                        status: DeploymentStatus(
                            spec: pending.spec, contextLength: pending.spec.contextLength ?? 0, instances: [],
                            inFlight: 0, queued: 0),
                        state: pending.failure == nil ? "pulling" : "failed", pullProgress: pending.progress?.fraction,
                        pullPhase: pending.progress?.snapshot.phase,
                        pullBytes: pending.progress?.snapshot.completedBytes,
                        pullTotalBytes: pending.progress?.snapshot.totalBytes,
                        error: pending.failure, tiers: tiers(of: pending.spec.model)))
            }
        }
        return reports
    }

    /// Every node's inventory, asked of all at once (an unreachable node answers its last one).
    func inventories() async -> [NodeInventory] {
        let nodes = await pool.nodes
        return await withTaskGroup(of: (Int, NodeInventory).self) { group in
            for (index, node) in nodes.enumerated() {
                group.addTask { (index, await node.worker.inventory()) }
            }
            var answers: [(Int, NodeInventory)] = []
            for await answer in group { answers.append(answer) }
            return answers.sorted { $0.0 < $1.0 }.map(\.1)
        }
    }

    // MARK: - Nodes

    /// A worker joined (or came back): placement sees it from now on. The instances it runs
    /// (`running`, from its report) are adopted by their deployments, or stopped when none takes them.
    func join(_ worker: any Worker, running: [InstanceInfo]) async {
        await pool.add(worker)
        logger.info("node \(worker.node) joined")
        if restored, let node = await pool.node(worker.node) { await adoptRunning(on: node, running) }
        // Minimums that could not start for want of a node start now (after adopting, so an
        // instance that came back is not started twice).
        for deployment in deployments.values { await deployment.activate() }
        Task { await self.keepWarm() }
    }

    /// A worker was lost (its lease ran out): placement stops seeing it, and every deployment
    /// drops its instances there (their requests that had produced nothing run elsewhere, the
    /// others end with `worker_lost`; starts under way there are placed again).
    func leave(_ node: NodeID, reason: String, left: Bool = false) async {
        guard await pool.remove(node, reason: reason, left: left) != nil else { return }
        logger.warning("node \(node) lost: \(reason)")
        for deployment in deployments.values { await deployment.nodeLost(node, reason: reason) }
    }

    /// Every node, live ones first (in the order they joined), then the lost ones.
    func nodeReports() async -> [NodeReport] {
        let live = await inventories().map { inventory in
            NodeReport(
                node: inventory.node, state: inventory.unreachable == nil ? "alive" : "unreachable",
                reason: inventory.unreachable, since: nil, inventory: inventory)
        }
        let departed = await pool.departed.sorted { $0.key.rawValue < $1.key.rawValue }.map { node, lost in
            NodeReport(
                node: node, state: lost.left ? "left" : "lost", reason: lost.reason, since: lost.at, inventory: nil)
        }
        return live + departed
    }

    /// Gives each instance running on `node` that no deployment has to its deployment; stops
    /// those none takes (deleted meanwhile, at its maximum, another model).
    private func adoptRunning(on node: NodePool.Node, _ running: [InstanceInfo]) async {
        let known = await instances(on: node.id)
        for info in running where !known.contains(info.id) {
            if let deployment = deployments[info.deployment], await deployment.adopt(info, on: node) { continue }
            logger.info("stopping instance \(info.id) on \(node.id): no deployment takes it")
            await node.worker.stopInstance(info.id)
        }
    }

    /// Stops one instance (now when idle, else once its requests end); returns the requests it
    /// still serves.
    func stop(instance: String) async throws(ServingError) -> Int {
        for deployment in deployments.values where await deployment.runs(instance) {
            return try await deployment.stop(instance: instance)
        }
        throw ServingError(.notFound, "no instance \(instance) is running", param: "instance")
    }

    /// Moves a running instance to another node without interrupting its jobs (`node`: where;
    /// nil: the scheduler's choice among the other nodes).
    func migrate(instance: String, to node: NodeID?) async throws -> MigrationReport {
        for deployment in deployments.values where await deployment.runs(instance) {
            if let node, await pool.node(node) == nil {
                throw ServingError(
                    .notFound,
                    "node \(node) is not in the cluster (nodes: \(await pool.nodes.map(\.id.rawValue).joined(separator: ", ")))",
                    param: "node")
            }
            guard await pool.nodes.count > 1 else {
                throw ServingError(.conflict, "instance \(instance) cannot migrate: the cluster has no other node")
            }
            return try await deployment.migrate(instance, to: node)
        }
        throw ServingError(.notFound, "no deployment runs an instance \(instance)", param: "instance")
    }

    /// A node about to leave: placement passes it over from now on, and its busy instances
    /// migrate to other nodes (idle ones simply stop with the node).
    func drain(_ node: NodeID) async -> [MigrationReport] {
        await pool.cordon(node)
        guard await pool.nodes.count > 1 else { return [] }
        var reports: [MigrationReport] = []
        for deployment in deployments.values {
            for id in await deployment.busyInstances(on: node) {
                do {
                    reports.append(try await deployment.migrate(id, to: nil))
                } catch {
                    logger.warning("instance \(id) could not migrate off leaving node \(node): \(error)")
                }
            }
        }
        return reports
    }

    /// Every busy instance on a node, for locality-driven migration.
    private func busyInstances(on node: NodeID) async -> [NodePool.Busy] {
        var busy: [NodePool.Busy] = []
        for deployment in deployments.values { busy += await deployment.busyForMigration(on: node) }
        return busy
    }

    /// The instances the deployments have placed on `node` (running or starting).
    func instances(on node: NodeID) async -> Set<String> {
        var ids: Set<String> = []
        for deployment in deployments.values { ids.formUnion(await deployment.instances(on: node)) }
        return ids
    }

    /// Ends the pulls under way and leaves instances running (a controller stopping: its workers
    /// keep them, and the controller that runs next adopts them).
    func detach() {
        for pending in pending.values { pending.task.cancel() }
        warmKeeper?.cancel()
    }

    /// Stops every instance (server shutdown).
    func stopAll() async {
        warmKeeper?.cancel()
        for deployment in deployments.values { await deployment.delete() }
        for pending in pending.values { pending.task.cancel() }
    }

    /// Every idle instance on a node, for placement and memory admission.
    private func idleInstances(on node: NodeID) async -> [MemoryAdmission.Candidate] {
        var candidates: [MemoryAdmission.Candidate] = []
        for (name, deployment) in deployments {
            let model = await deployment.spec.model
            candidates += await deployment.idleInstances(on: node).map {
                MemoryAdmission.Candidate(
                    instance: $0.id, deployment: name, bytes: $0.bytes, lastUsed: $0.lastUsed.seconds, model: model)
            }
        }
        return candidates
    }

    // MARK: - Keeping checkpoints warm

    /// Keeps each deployment's checkpoint in the DRAM cache of its `dram_replicas` nodes (the
    /// prefetches are logged). Run after a deployment is made or changed, when a node joins, and
    /// every `warmInterval` (a node's cache may have let it go for another model's load).
    func keepWarm() async {
        for deployment in deployments.values {
            let spec = await deployment.spec
            guard spec.scaling.dramReplicas > 0, let model = try? ModelName(spec.model) else { continue }
            Self.log(await pool.keepWarm(model, replicas: spec.scaling.dramReplicas), of: model, logger: logger)
        }
    }

    static let warmInterval = Duration.seconds(10)

    /// Logs the prefetches that keep `model` warm.
    static func log(_ prefetches: [(NodeID, Result<LoadReport, ServingError>)], of model: ModelName, logger: Logger) {
        for (node, outcome) in prefetches {
            switch outcome {
            case .success(let report):
                logger.info(
                    "keeping \(model) warm: in node \(node)'s DRAM (\(formatBytes(Int64(report.bytes))) from \(report.tier.rawValue) in \(String(format: "%.2f", report.seconds)) s)"
                )
            case .failure(let error):
                logger.warning("keeping \(model) warm: node \(node) could not prefetch it: \(error.message)")
            }
        }
    }

    /// Stops an idle instance memory admission chose; returns the bytes freed (0 when it became busy).
    private func evict(_ candidate: MemoryAdmission.Candidate) async -> Int {
        await deployments[candidate.deployment]?.evict(candidate.instance) ?? 0
    }

    // MARK: - Activation

    /// Makes a deployment live: at once when the worker holds its model (`facts` known or
    /// found), else after a background pull (or a retry that records why it fails).
    /// - Parameter start: false to leave starting its minimum to the caller (restore adopts
    ///   running instances first); the deployment made live at once is returned.
    @discardableResult
    private func activate(
        _ spec: DeploymentSpec, pull: Bool, source: String? = nil, facts known: ModelFacts? = nil, start: Bool = true
    ) async -> Deployment? {
        var facts = known
        if !pull, facts == nil, let name = try? ModelName(spec.model) {
            facts = try? await catalog(holding: name).modelFacts(name)
        }
        if !pull, let facts, let deployment = try? makeDeployment(spec, facts: facts) {
            deployments[spec.name] = deployment
            if start { Task { await deployment.activate() } }
            return deployment
        }
        // A deployment of a store model that is gone (`sllm rm --force`) has nothing to pull
        // from: say so instead of taking its name for a path.
        if pull, source == nil, (try? await catalog(holding: try? ModelName(spec.model)).resolve(spec.model)) == nil {
            let message =
                "model `\(spec.model)` is no longer in the store (removed?); `sllm pull` it again, then restart or `sllm delete \(spec.name)`"
            let task = Task<Deployment, any Error> { throw ServingError(.unavailable, message) }
            pending[spec.name] = PendingDeployment(spec: spec, task: task, progress: nil, failure: message)
            logger.error("deployment \(spec.name): \(message)")
            return nil
        }
        // Pull first (or retry opening the checkpoint, to record why it fails).
        let progress = pull ? PullProgress() : nil
        let task = Task { () throws -> Deployment in
            if let progress {
                try await self.pull(source ?? spec.model, as: spec.name, progress: progress)
            }
            let model = try ModelName(spec.model)
            let facts = try await self.catalog(holding: model).modelFacts(model)
            return try self.makeDeployment(spec, facts: facts)
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
        return nil
    }

    private func finishActivation(_ deployment: Deployment) {
        guard let entry = pending.removeValue(forKey: deployment.name) else { return }
        deployments[deployment.name] = deployment
        let minimum = entry.spec.scaling.minInstances
        logger.info(
            "deployed \(deployment.name), \(minimum == 0 ? "scaled to zero (the first request starts an instance)" : "starting \(minimum) instance\(minimum == 1 ? "" : "s")")"
        )
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
        for try await event in try await catalog().pull(source, as: try ModelName(name)) {
            guard case .progress(let phase, let completed, let total) = event else { continue }
            let report = Checkpoint.Progress(phase: phase, completedBytes: completed, totalBytes: total)
            // The log shows each phase in steps of 10% (a server has no progress bar).
            if let step = progress.record(report) {
                logger.info(
                    "deployment \(name): \(phase) \(total > 0 ? "\(step)%" : "\(step) MiB")",
                    metadata: [
                        "bytes": "\(formatBytes(completed)) of \(total > 0 ? formatBytes(total) : "?")"
                    ])
            }
        }
    }

    /// A deployment of a model the worker holds: its tokenizer (built from the model's facts,
    /// once per tokenizer), context and sizes.
    nonisolated private func makeDeployment(_ spec: DeploymentSpec, facts: ModelFacts) throws -> Deployment {
        let tokenizer = try tokenizers.tokenizer(index: facts.index, name: facts.name.rawValue) {
            try Tokenizer(checkpoint: facts.index) { file in
                guard let data = facts.tokenizerFiles[file] else {
                    throw ServingError(
                        .internalError, "the worker's facts of `\(facts.name)` lack its tokenizer file `\(file)`")
                }
                return data
            }
        }
        return Deployment(
            spec: spec, tokenizer: tokenizer, facts: facts, pool: pool, clock: clock, metrics: metrics, logger: logger,
            rebalances: configuration.rebalance)
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
    /// Nodes that keep the checkpoint in DRAM (`ScalingSettings.dramReplicas`).
    public var dramReplicas: Int?

    public init(
        model: String? = nil, name: String? = nil, minInstances: Int? = nil, maxInstances: Int? = nil,
        targetConcurrency: Int? = nil,
        keepAlive: KeepAlive? = nil, queueLimit: Int? = nil, contextLength: Int? = nil, dramReplicas: Int? = nil
    ) {
        self.dramReplicas = dramReplicas
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
        if let dramReplicas { scaling.dramReplicas = dramReplicas }
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
    public var tiers: [Tier]
}

/// A pull's progress, written by the pull and read by status requests.
final class PullProgress: Sendable {
    private let storage = Mutex<(report: Checkpoint.Progress, loggedStep: Int)>(
        (Checkpoint.Progress(phase: "start", completedBytes: 0, totalBytes: 0), -1))

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
