import Checkpoint
import Engine
public import Foundation
import Logging
public import Scheduling
public import Store
import Synchronization
import Tokenizers

/// A deployed model as stored and reported: its name (the API's `model`), the checkpoint it
/// serves and how it scales.
public struct DeploymentSpec: Sendable, Codable, Equatable {
    public var name: String
    /// The model in the store.
    public var model: String
    public var scaling: ScalingSettings
    /// Context length per sequence (nil: the model's, at most 8192).
    public var contextLength: Int?
    public var createdAt: Date
    /// Where the model is pulled from when it is not in the store (an alias, an absolute path, a
    /// URL or a `pip:` source); kept so that a pull cut short by a restart resumes from it.
    public var source: String?

    public init(
        name: String, model: String, scaling: ScalingSettings = .init(), contextLength: Int? = nil,
        createdAt: Date = Date(), source: String? = nil
    ) {
        self.name = name
        self.model = model
        self.source = source
        self.scaling = scaling
        self.contextLength = contextLength
        self.createdAt = createdAt
    }
}

/// A slot on an instance, held for the length of one request.
struct Lease: Sendable {
    var instance: InstanceInfo
    /// The node the instance runs on.
    var node: NodePool.Node
    /// From the request reaching the deployment to getting the slot.
    var waitedSeconds: Double
    /// Whether the request waited for this instance to start.
    var coldStart: Bool
}

/// One deployment at run time: the router and autoscaler over its instances. Decisions come from
/// ``DeploymentStateMachine``; this actor carries them out (starts and stops instances through the
/// worker, wakes waiting requests, arms keep-alive timers).
actor Deployment {
    nonisolated let name: String
    private(set) var spec: DeploymentSpec
    private var machine: DeploymentStateMachine
    /// The nodes instances are placed on, and their memory budgets.
    private let pool: NodePool
    /// Keep-alive timers and last-use stamps run on it (a manual clock in tests).
    private let clock: any SchedulerClock
    nonisolated let metrics: ServingMetrics
    private let gauges: ServingMetrics.DeploymentGauges
    private let logger: Logger
    /// The model's tokenizer (requests are tokenized and checked before they wait for an instance).
    let tokenizer: Tokenizer
    /// The model's facts (context, sizes), as its worker reported them.
    private let facts: ModelFacts
    /// Where each instance was placed, with the memory it reserved from that node's budget
    /// (released when it stops).
    private var placed: [String: NodePool.Placed] = [:]

    /// A request waiting for a slot: the decision may come before or after it starts waiting.
    private struct Waiter {
        var arrival: ContinuousClock.Instant
        var continuation: CheckedContinuation<Lease, any Error>?
        var outcome: Result<Lease, any Error>?
    }

    /// A place in line: a slot right away, or a number to `wait(for:)`.
    enum Ticket: Sendable {
        case granted(Lease)
        case waiting(Int)
    }

    private var waiters: [Int: Waiter] = [:]
    private var nextWaiter = 0
    private var started: [String: InstanceInfo] = [:]
    /// Rebalancing between running instances is on (`rebalance`), and one is under way.
    private let rebalances: Bool
    private var rebalancing = false
    /// Whether a rebalance is handing jobs over now (tests).
    var isRebalancing: Bool { rebalancing }
    /// Keep-alive timers of idle instances, with when each fires (what `sllm ps` shows as the
    /// instance's expiry); none while busy or kept forever.
    private var timers: [String: (task: Task<Void, Never>, expiresAt: Duration)] = [:]
    /// When each instance was last used, on `clock`.
    private var lastUsed: [String: Duration] = [:]
    /// Load progress of instances being started, written from loader threads.
    private nonisolated let progress = Mutex<[String: Double]>([:])
    private var deleted = false
    /// A retry of the minimum after a start failed (a load error, its node lost twice, no room
    /// within `roomWait`), and the wait before the next one: 1 s, doubled after each failure up
    /// to a minute, reset by a start.
    private var minimumRetry: Task<Void, Never>?
    private var retryDelay = Deployment.firstRetry
    /// Jobs running through `run`, by the instance they run on (what a migration moves).
    private var jobs: [String: Set<String>] = [:]
    /// Where a job continues once its instance detached it (set by a migration before detaching).
    private var moves: [String: Lease] = [:]
    /// Tokens each running job holds (prompt and generated so far, as its instance's sequence
    /// holds them), written by the jobs' relays: what migrating their instance would recompute,
    /// and what a migration's first stage warms its target with.
    private nonisolated let jobTokens = Mutex<[String: [Int]]>([:])
    /// Hand-overs a migration waits for, by job: expected, awaited, or already reported.
    private var handovers: [String: HandoverSlot] = [:]

    private enum HandoverSlot {
        case expected
        case awaited(CheckedContinuation<Handover, Never>)
        case reported(Handover)
    }

    /// How one job's hand-over went.
    enum Handover: Sendable {
        /// It continues on the target; the client's stream paused this long between the last
        /// token from the source and the first from the target.
        case continued(pauseSeconds: Double)
        /// The target failed before continuing it: it continues on the source.
        case cameBack
        /// It ended before continuing anywhere (its client went away, or both instances failed).
        case ended
    }
    static let firstRetry = Duration.seconds(1)
    static let lastRetry = Duration.seconds(60)

    init(
        spec: DeploymentSpec, tokenizer: Tokenizer, facts: ModelFacts, pool: NodePool, clock: any SchedulerClock,
        metrics: ServingMetrics, logger: Logger, rebalances: Bool = false
    ) {
        name = spec.name
        self.rebalances = rebalances
        self.spec = spec
        self.tokenizer = tokenizer
        self.facts = facts
        self.pool = pool
        self.clock = clock
        self.metrics = metrics
        gauges = metrics.gauges(deployment: spec.name)
        self.logger = logger
        let prefix = spec.name
        let counter = Atomic<Int>(0)
        machine = DeploymentStateMachine(settings: spec.scaling) {
            "\(prefix)-\(counter.add(1, ordering: .relaxed).newValue)-\(UInt32.random(in: 0...UInt32.max) & 0xffff)"
        }
    }

    /// An instance under the current settings: the context, and the memory it needs (weights +
    /// a KV cache for `targetConcurrency` sequences of the context).
    var sizing: InstanceSizing {
        InstanceSizing(
            requestedContext: spec.contextLength, modelContext: facts.contextLength,
            maxSequences: spec.scaling.targetConcurrency,
            weightBytes: facts.weightBytes, kvBytesPerPosition: facts.kvBytesPerPosition)
    }

    /// The context length requests are checked against.
    var contextLength: Int { sizing.contextLength }

    /// Starts the minimum instances.
    func activate() {
        perform(machine.ensureMinimum())
    }

    // MARK: - Requests

    /// Asks for a slot: granted at once when an instance has one, else a place in the queue
    /// (starting an instance when demand calls for one, a cold start when there is none).
    ///
    /// - Throws: `ServingError` `.queueFull` when the queue is full (before anything is sent to
    ///   the client, so it becomes an HTTP 429).
    func enqueue() throws(ServingError) -> Ticket {
        guard !deleted else { throw ServingError(.notFound, "deployment `\(name)` was deleted") }
        let id = nextWaiter
        nextWaiter += 1
        waiters[id] = Waiter(arrival: .now)
        perform(machine.requestArrived(id))
        switch waiters[id]?.outcome {
        case nil: return .waiting(id)
        case .success(let lease)?:
            waiters[id] = nil
            return .granted(lease)
        case .failure(let error)?:
            waiters[id] = nil
            throw ServingError(error)
        }
    }

    /// Waits for the slot of a queued ticket.
    ///
    /// - Throws: the start failure when the instance could not start, `CancellationError` when
    ///   the caller is cancelled while waiting (its place is given up).
    func wait(for id: Int) async throws -> Lease {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Lease, any Error>) in
                guard let waiter = waiters[id] else {
                    continuation.resume(throwing: CancellationError())
                    return
                }
                if let outcome = waiter.outcome {
                    waiters[id] = nil
                    continuation.resume(with: outcome)
                } else {
                    waiters[id]!.continuation = continuation
                }
            }
        } onCancel: {
            Task { await self.cancelWaiter(id) }
        }
    }

    /// `enqueue` then `wait`.
    func acquire() async throws -> Lease {
        switch try enqueue() {
        case .granted(let lease): return lease
        case .waiting(let id): return try await wait(for: id)
        }
    }

    /// Returns a slot; `keepAlive` is the request's override of how long the instance stays loaded.
    func release(_ lease: Lease, keepAlive: KeepAlive?) {
        lastUsed[lease.instance.id] = clock.now
        perform(machine.requestFinished(on: lease.instance.id, keepAlive: keepAlive))
        rebalanceSoon()
        // An instance that went idle may be stopped to make room for a start waiting for it.
        if machine.instances[lease.instance.id]?.inFlight == 0, pool.startsAwaitRoom {
            Task { [pool] in await pool.roomMayHaveFreed() }
        }
    }

    /// Runs `job` on the slot `lease` holds and owns the rest of its life: the returned stream
    /// carries the worker's events, and the slot is released whatever ends it (the last event,
    /// an error, the consumer cancelling or dropping the stream). Release happens before the
    /// stream ends, so a caller that saw the end may count on the slot being free. The output
    /// belongs to this handle, not to one instance's stream: live migration re-points a job here.
    nonisolated func run(_ job: GenerationJob, on lease: Lease, keepAlive: KeepAlive?) -> AsyncThrowingStream<
        GenerationEvent, any Error
    > {
        let (events, output) = AsyncThrowingStream.makeStream(of: GenerationEvent.self, throwing: (any Error).self)
        let task = Task {
            var lease = lease
            var job = job
            var failure: (any Error)?
            await self.jobBegan(job.id, on: lease.instance.id)
            self.jobTokens.withLock { $0[job.id] = job.resume?.tokens ?? job.prompt }
            var lastEvent = ContinuousClock.now
            // After a hand-over, until the target's first event: the lease it came from.
            var handedFrom: Lease?
            while true {
                var detached: SequenceSnapshot?
                failure = nil
                do {
                    for try await event in lease.node.worker.run(job, on: lease.instance.id) {
                        if case .detached(let snapshot) = event {
                            detached = snapshot
                            continue
                        }
                        if handedFrom != nil {
                            handedFrom = nil
                            await self.reportHandover(job.id, .continued(pauseSeconds: seconds(since: lastEvent)))
                        }
                        output.yield(event)
                        lastEvent = .now
                        switch event {
                        case .token(let output):
                            // A finish's held-back text comes as a token of its own (-1): not a sampled one.
                            if output.token >= 0 { self.jobTokens.withLock { $0[job.id]?.append(output.token) } }
                        case .finished(let summary):
                            // What a migration here would cost to recompute, learnt from requests.
                            await self.pool.observePrefill(
                                on: lease.node.id, tokens: summary.promptTokens - summary.cachedTokens,
                                seconds: summary.prefillSeconds)
                        case .detached: break
                        }
                    }
                } catch {
                    failure = error
                }
                // The target failed before continuing the job: the source kept its KV cache and
                // continues it, as if nothing had happened.
                if failure != nil, let source = handedFrom, !Task.isCancelled,
                    await self.moveBack(job.id, from: lease, to: source)
                {
                    handedFrom = nil
                    await self.reportHandover(job.id, .cameBack)
                    lease = source
                    continue
                }
                guard failure == nil, let snapshot = detached, let next = await self.handOver(job.id, from: lease)
                else { break }
                job.resume = snapshot
                handedFrom = lease
                lease = next
            }
            self.jobTokens.withLock { _ = $0.removeValue(forKey: job.id) }
            await self.jobEnded(job.id, on: lease.instance.id)
            await self.release(lease, keepAlive: keepAlive)
            if let kind = (failure as? ServingError)?.kind, kind == .instanceFailed || kind == .workerLost {
                await self.instanceBroke(lease.instance.id, failure!)
            }
            output.finish(throwing: failure)
        }
        output.onTermination = { termination in
            if case .cancelled = termination { task.cancel() }
        }
        return events
    }

    private func jobBegan(_ job: String, on instance: String) {
        jobs[instance, default: []].insert(job)
    }

    private func jobEnded(_ job: String, on instance: String) {
        jobs[instance]?.remove(job)
        if jobs[instance]?.isEmpty == true { jobs[instance] = nil }
        reportHandover(job, .ended)
    }

    /// A job its instance detached continues where the migration put it; nil when none did
    /// (the job then ends).
    private func handOver(_ job: String, from lease: Lease) -> Lease? {
        guard let next = moves.removeValue(forKey: job) else { return nil }
        jobs[lease.instance.id]?.remove(job)
        jobs[next.instance.id, default: []].insert(job)
        perform(machine.jobMoved(from: lease.instance.id, to: next.instance.id))
        return next
    }

    /// A job whose target failed goes back to its source, when the source still runs.
    private func moveBack(_ job: String, from target: Lease, to source: Lease) -> Bool {
        guard started[source.instance.id] != nil, machine.instances[source.instance.id] != nil else { return false }
        jobs[target.instance.id]?.remove(job)
        jobs[source.instance.id, default: []].insert(job)
        perform(machine.jobMoved(from: target.instance.id, to: source.instance.id))
        return true
    }

    private func reportHandover(_ job: String, _ outcome: Handover) {
        switch handovers[job] {
        case nil, .reported: return
        case .expected: handovers[job] = .reported(outcome)
        case .awaited(let waiter):
            handovers[job] = nil
            waiter.resume(returning: outcome)
        }
    }

    private func handover(of job: String) async -> Handover {
        if case .reported(let outcome)? = handovers[job] {
            handovers[job] = nil
            return outcome
        }
        return await withCheckedContinuation { handovers[job] = .awaited($0) }
    }

    /// Gives up a queued ticket (the client went away). A slot granted meanwhile is returned.
    func cancelWaiter(_ id: Int) {
        guard let waiter = waiters.removeValue(forKey: id) else { return }
        machine.waiterCancelled(id)
        if case .success(let lease)? = waiter.outcome { release(lease, keepAlive: nil) }
        waiter.continuation?.resume(throwing: CancellationError())
        updateGauges()
    }

    private func settle(_ id: Int, _ outcome: Result<Lease, any Error>) {
        guard var waiter = waiters[id] else { return }
        if let continuation = waiter.continuation {
            waiters[id] = nil
            continuation.resume(with: outcome)
        } else {
            waiter.outcome = outcome
            waiters[id] = waiter
        }
    }

    /// Load progress (0...1) of the instance a cold start waits for; nil when none is starting.
    nonisolated func startingProgress() -> Double? {
        progress.withLock { $0.values.min() }
    }

    // MARK: - Administration

    func update(_ new: DeploymentSpec) {
        spec = new
        perform(machine.update(new.scaling))
    }

    /// Stops every instance and fails every waiting request; returns once instances are stopped.
    func delete() async {
        deleted = true
        minimumRetry?.cancel()
        minimumRetry = nil
        let deletion = machine.deleteAll()
        for id in deletion.stopped { timers.removeValue(forKey: id)?.task.cancel() }
        perform(deletion.rejected.map { .reject($0, .deleted) })
        for id in deletion.stopped { await stopNow(id) }
        for (_, timer) in timers { timer.task.cancel() }
        timers.removeAll()
    }

    /// Stops every idle instance now (`sllm stop`, as `ollama stop`); busy ones keep serving and
    /// stop after their keep-alive. Returns how many stopped and how many were busy.
    func unload() async -> (stopped: Int, busy: Int) {
        let idle = machine.idleInstances
        var stopped = 0
        for id in idle where await evict(id) > 0 || !started.keys.contains(id) { stopped += 1 }
        return (stopped, machine.instances.values.filter { $0.state != .stopping }.count)
    }

    /// Stops one instance at an operator's request: now when idle, else once its requests end
    /// (it takes no new one meanwhile). Returns the requests it still serves (0: stopping now).
    func stop(instance id: String) async throws(ServingError) -> Int {
        guard let instance = machine.instances[id] else {
            throw ServingError(.notFound, "deployment `\(name)` has no instance \(id)", param: "instance")
        }
        guard let actions = machine.stop(id) else {
            throw ServingError(
                .conflict, "instance \(id) is \(instance.state.rawValue); only a ready instance can be stopped")
        }
        timers.removeValue(forKey: id)?.task.cancel()
        let when = instance.inFlight > 0 ? " once its \(instance.inFlight) request(s) end" : ""
        logger.info("deployment \(name): instance \(id) stopped by an operator\(when)")
        // An idle one has stopped when the caller hears back (as `unload`'s).
        perform(actions.filter { $0 != .stop(id) })
        if actions.contains(.stop(id)) { await stopNow(id) }
        updateGauges()
        return instance.inFlight
    }

    /// Idle instances on `node`, the memory each holds and when each was last used (candidates
    /// for eviction).
    func idleInstances(on node: NodeID) -> [(id: String, bytes: Int, lastUsed: Duration)] {
        machine.idleInstances.compactMap { id in
            guard let placed = placed[id], placed.node.id == node else { return nil }
            return (id, placed.bytes, lastUsed[id] ?? .zero)
        }
    }

    /// Stops an idle instance to free memory for another deployment; returns the bytes freed.
    func evict(_ id: String) async -> Int {
        guard machine.evict(id) else { return 0 }
        timers.removeValue(forKey: id)?.task.cancel()
        logger.info("deployment \(name): instance \(id) stopped to free memory")
        let freed = placed[id]?.bytes ?? 0
        await stopNow(id)
        return freed
    }

    /// Ready instances on `node` with requests running (what a draining node migrates).
    func busyInstances(on node: NodeID) -> [String] {
        machine.instances.filter { id, instance in
            instance.state == .ready && instance.inFlight > 0 && placed[id]?.node.id == node
        }.keys.sorted()
    }

    /// Busy instances on `node` with the memory each holds and the tokens its requests hold (what
    /// the scheduler weighs a migration by).
    func busyForMigration(on node: NodeID) -> [NodePool.Busy] {
        busyInstances(on: node).map { id in
            let tokens = jobTokens.withLock { counts in (jobs[id] ?? []).reduce(0) { $0 + (counts[$1]?.count ?? 0) } }
            return NodePool.Busy(
                id: id, deployment: name, model: facts.name, memoryBytes: placed[id]?.bytes ?? sizing.totalBytes,
                tokens: tokens)
        }
    }

    /// Whether `id` is one of this deployment's instances.
    func runs(_ id: String) -> Bool { machine.instances[id] != nil }

    /// The instances placed on `node` (running or starting).
    func instances(on node: NodeID) -> Set<String> {
        Set(placed.filter { $0.value.node.id == node }.keys)
    }

    /// Takes an instance found running on `node` (a controller that restarted or took over
    /// finds it in the worker's report) as one of this deployment's, ready and idle; false when
    /// it is not of this deployment's model or the deployment is at its maximum (the caller
    /// stops it then). An instance it already has counts as taken.
    func adopt(_ info: InstanceInfo, on node: NodePool.Node) async -> Bool {
        if machine.instances[info.id] != nil { return true }
        guard info.deployment == name, info.model == facts.name, let actions = machine.adopt(info.id) else {
            return false
        }
        let bytes = info.weightBytes + info.kvCacheBytes
        placed[info.id] = NodePool.Placed(
            node: node, bytes: bytes,
            decision: PlacementDecision(
                node: node.id.rawValue, tier: CheckpointTier(info.tier), estimatedStartSeconds: nil),
            loadSeconds: 0)
        started[info.id] = info
        lastUsed[info.id] = clock.now
        perform(actions)
        await pool.reserve(bytes, on: node.id)
        logger.info("deployment \(name): adopted instance \(info.id) running on \(node.id)")
        return true
    }

    /// `node` was lost: its running instances are dropped (their jobs end with the worker's
    /// error, and the autoscaler starts others as demand asks); starts under way there fail
    /// with `.workerLost` and are placed again.
    func nodeLost(_ node: NodeID, reason: String) async {
        for id in instances(on: node) where started[id] != nil {
            logger.warning("deployment \(name): instance \(id) dropped: node \(node) lost (\(reason))")
            await stopNow(id)
        }
    }

    /// What `sllm status` and `sllm ps` show.
    func snapshot() -> DeploymentStatus {
        let instances = machine.instances.map { id, instance in
            InstanceStatus(
                id: id, state: instance.state.rawValue, inFlight: instance.inFlight,
                startedAt: started[id]?.startedAt, tier: started[id]?.tier, node: placed[id]?.node.id,
                estimatedStartSeconds: placed[id]?.decision.estimatedStartSeconds,
                loadSeconds: started[id]?.loadSeconds, fetchedBytes: started[id]?.fetchedBytes,
                fetchSeconds: started[id]?.fetchSeconds,
                memoryBytes: placed[id]?.bytes ?? sizing.totalBytes, loadProgress: progress.withLock { $0[id] },
                expiresAt: instance.inFlight == 0 ? timers[id].map { wallTime($0.expiresAt) } : nil,
                keepAlive: (instance.keepAliveOverride ?? spec.scaling.keepAlive).description,
                lastUsed: lastUsed[id].map(wallTime))
        }.sorted { $0.id < $1.id }
        return DeploymentStatus(
            spec: spec, contextLength: contextLength, instances: instances,
            inFlight: machine.inFlight, queued: machine.queueDepth)
    }

    /// A time on `clock` as a wall-clock date, for what the API shows.
    private func wallTime(_ instant: Duration) -> Date {
        Date().addingTimeInterval((instant - clock.now).seconds)
    }

    // MARK: - Carrying out decisions

    private func perform(_ actions: [DeploymentStateMachine.Action], coldStart: Bool = false) {
        for action in actions {
            switch action {
            case .start(let id):
                progress.withLock { $0[id] = 0 }
                Task { await self.start(id) }
                // A scale-up (demand outgrew the instances running): one more node readies the
                // checkpoint in its DRAM, so the start after this one maps memory.
                if machine.instances.count > 1 {
                    Task { [pool, facts, logger] in
                        DeploymentRegistry.log(
                            await pool.keepWarm(facts.name, replicas: nil), of: facts.name, logger: logger)
                    }
                }
            case .stop(let id):
                timers.removeValue(forKey: id)?.task.cancel()
                Task { await self.stopNow(id) }
            case .dispatch(let waiterID, let id):
                guard let waiter = waiters[waiterID], let info = started[id], let node = placed[id]?.node else {
                    continue
                }
                timers.removeValue(forKey: id)?.task.cancel()
                settle(
                    waiterID,
                    .success(
                        Lease(
                            instance: info, node: node, waitedSeconds: seconds(since: waiter.arrival),
                            coldStart: coldStart)))
            case .reject(let waiterID, let rejection):
                settle(waiterID, .failure(error(for: rejection)))
            case .scheduleTimer(let id, let token, let delay):
                timers.removeValue(forKey: id)?.task.cancel()
                let task = Task { [clock] in
                    try? await clock.sleep(for: delay)
                    guard !Task.isCancelled else { return }
                    self.timerFired(id, token: token)
                }
                timers[id] = (task, clock.now + delay)
            }
        }
        updateGauges()
    }

    private func error(for rejection: DeploymentStateMachine.Rejection) -> ServingError {
        switch rejection {
        case .queueFull(let limit):
            metrics.rejected(deployment: name)
            return ServingError(
                .queueFull, "deployment `\(name)` has \(limit) requests queued beyond its instances' slots; retry later"
            )
        case .startFailed(let reason):
            return ServingError(.unavailable, "deployment `\(name)` could not start an instance: \(reason)")
        case .deleted:
            return ServingError(.notFound, "deployment `\(name)` was deleted")
        }
    }

    /// Starts an instance: placed on a node, then loaded there. A start whose node is lost
    /// before it ends is placed again (on the nodes left), twice at most. A start that finds
    /// every node's memory held by busy instances waits for room (as Ollama queues a request
    /// until a model can be unloaded), up to `roomWait`; one that fits no node fails at once.
    private func start(_ id: String) async {
        var lost = 0
        let began = ContinuousClock.now
        while true {
            guard let failure = await startOnce(id) else { return }
            let waited = ContinuousClock.now - began
            if failure.kind == .insufficientMemory, !deleted, machine.instances[id] != nil, waited < Self.roomWait,
                await pool.couldFit(sizing.totalBytes)
            {
                logger.info(
                    "deployment \(name): instance \(id) waits for room (every node's memory is held by busy instances)")
                await pool.waitForRoom(upTo: Self.roomWait - waited)
                continue
            }
            if failure.kind == .workerLost, lost < 2, !deleted, machine.instances[id] != nil {
                lost += 1
                logger.warning("deployment \(name): the node of starting instance \(id) was lost; placing it again")
                progress.withLock { $0[id] = 0 }
                continue
            }
            logger.error("deployment \(name): instance failed to start: \(failure)")
            perform(machine.instanceFailed(id, reason: failure.message))
            retryMinimumLater()
            return
        }
    }

    /// How long a start waits for memory held by busy instances to free up.
    static let roomWait = Duration.seconds(120)

    /// One try at starting `id`: nil when it started (or was dropped meanwhile), else why not. A
    /// migration's target (`placing` names its node, or the node to avoid) is not announced to
    /// the state machine: it becomes ready when the migration ends.
    private func startOnce(_ id: String, placing target: MigrationTarget? = nil) async -> ServingError? {
        let sizing = self.sizing
        var instanceSpec = InstanceSpec(id: id, deployment: name, model: facts.name, sizing: sizing)
        var placement: NodePool.Placed
        do {
            placement = try await pool.place(
                facts.name, checkpointBytes: facts.weightBytes, memoryBytes: sizing.totalBytes, for: name,
                instance: id, on: target?.node, avoiding: target?.avoiding)
            if let plan = placement.migrateFirst {
                // Locality-driven migration: a busy instance leaves the node where this
                // checkpoint is fastest, then this start goes there (else wherever it can).
                logger.info(
                    "deployment \(name): instance \(id) starts on \(plan.from) once \(plan.victim) has migrated to \(plan.to)",
                    metadata: [
                        "estimate": "\(plan.estimatedStartSeconds) s", "migration": "\(plan.migrationSeconds) s",
                    ])
                do {
                    _ = try await pool.carryOut(plan)
                } catch {
                    logger.warning("deployment \(name): the migration of \(plan.victim) failed: \(error)")
                }
                do {
                    placement = try await pool.place(
                        facts.name, checkpointBytes: facts.weightBytes, memoryBytes: sizing.totalBytes, for: name,
                        instance: id, on: NodeID(plan.from), mayMigrate: false)
                } catch {
                    placement = try await pool.place(
                        facts.name, checkpointBytes: facts.weightBytes, memoryBytes: sizing.totalBytes, for: name,
                        instance: id, mayMigrate: false)
                }
            }
            placed[id] = placement
            instanceSpec.sources = placement.sources
            instanceSpec.spread = placement.spread
        } catch {
            progress.withLock { _ = $0.removeValue(forKey: id) }
            return error
        }
        let decision = placement.decision
        logger.debug(
            "deployment \(name): instance \(id) placed on \(decision.node)",
            metadata: [
                "tier": "\(decision.tier.rawValue)",
                "estimate": "\(decision.estimatedStartSeconds.map { "\($0) s" } ?? "none (tier not measured yet)")",
            ])
        let worker = placement.node.worker
        do {
            var startedInfo: InstanceInfo?
            for try await event in worker.startInstance(instanceSpec) {
                switch event {
                case .loading(let fraction): progress.withLock { $0[id] = fraction }
                case .started(let info): startedInfo = info
                }
            }
            await pool.loaded(placement)
            guard let info = startedInfo else {
                throw ServingError(.unavailable, "the worker ended the start of \(id) without starting it")
            }
            await pool.ended(placement, actualSeconds: info.loadSeconds, failure: nil)
            progress.withLock { _ = $0.removeValue(forKey: id) }
            metrics.instanceStarted(deployment: name, info: info)
            started[id] = info
            lastUsed[id] = clock.now
            if deleted || machine.instances[id] == nil {
                await worker.stopInstance(id)
                await releaseMemory(of: id)
                return nil
            }
            // Its node was lost while the start's answer was on its way: start it elsewhere.
            if await pool.node(placement.node.id) == nil {
                started[id] = nil
                lastUsed[id] = nil
                await worker.stopInstance(id)
                await releaseMemory(of: id)
                return ServingError(.workerLost, "node \(placement.node.id) was lost as instance \(id) started")
            }
            retryDelay = Self.firstRetry
            if target == nil {
                perform(machine.instanceStarted(id), coldStart: true)
                rebalanceSoon()
            }
            return nil
        } catch {
            await pool.loaded(placement)
            await pool.ended(placement, actualSeconds: nil, failure: ServingError(error).message)
            progress.withLock { _ = $0.removeValue(forKey: id) }
            await releaseMemory(of: id)
            return ServingError(error)
        }
    }

    // MARK: - Live migration

    /// Where a migration's target is placed.
    struct MigrationTarget {
        /// The node an operator named (nil: the scheduler's choice).
        var node: NodeID?
        /// The source's node.
        var avoiding: NodeID
    }

    /// Stage 1 repeats while a sequence grew by more than this many tokens since it was warmed
    /// (and by a quarter fewer than the round before), at most `migrationRounds` times: what is left is
    /// computed during the pause, so it is kept to a token or two.
    static let migrationDelta = 1
    static let migrationRounds = 12

    /// Moves a running instance to another node without interrupting its jobs (ServerlessLLM's
    /// live migration, by tokens): a new instance starts on `node` (or where the scheduler places
    /// it, on another node); stage 1 warms it with each running job's tokens while the source
    /// keeps generating, again while a job grew by more than ``migrationDelta`` tokens; stage 2
    /// detaches each job from the source between two steps and continues it on the target from
    /// its snapshot, which computes only the tokens since the last warm. Each client's stream
    /// goes on with no token lost, repeated or changed. Requests arriving meanwhile wait for the
    /// target or go to other instances. The source stops once its jobs have left.
    ///
    /// A job that ends meanwhile is dropped from the set. Should the target fail before the
    /// hand-over, the source serves on as if nothing happened; a job whose target fails before
    /// continuing it comes back to the source, which kept its KV cache.
    func migrate(_ source: String, to node: NodeID?) async throws(ServingError) -> MigrationReport {
        let began = ContinuousClock.now
        guard started[source] != nil, let sourceNode = placed[source]?.node else {
            throw ServingError(.notFound, "deployment `\(name)` has no running instance \(source)", param: "instance")
        }
        if let node, node == sourceNode.id {
            throw ServingError(.invalidRequest, "instance \(source) runs on \(node) already", param: "node")
        }
        // A rebalance under way hands jobs over between instances; one move at a time.
        guard !rebalancing else {
            throw ServingError(.conflict, "deployment `\(name)` is rebalancing its instances; try again in a moment")
        }
        guard let target = machine.beginMigration(from: source) else {
            let state = machine.instances[source]?.state.rawValue ?? "gone"
            throw ServingError(.conflict, "instance \(source) is \(state); only a ready instance can migrate")
        }
        logger.info(
            "deployment \(name): migrating instance \(source) from \(sourceNode.id) to \(node?.rawValue ?? "the scheduler's choice") as \(target)"
        )
        updateGauges()
        progress.withLock { $0[target] = 0 }
        if let failure = await startOnce(target, placing: MigrationTarget(node: node, avoiding: sourceNode.id)) {
            perform(machine.endMigration(from: source, to: target, succeeded: false))
            perform(machine.instanceFailed(target, reason: failure.message))
            logger.warning("deployment \(name): migration of \(source) abandoned: its target did not start: \(failure)")
            metrics.activity.migration(
                .init(
                    at: Date(), deployment: name, instance: source, target: target, from: sourceNode.id, to: node,
                    seconds: seconds(since: began), failure: "its target did not start: \(failure.message)"))
            throw failure
        }
        guard let targetInfo = started[target], let targetNode = placed[target]?.node else {
            perform(machine.endMigration(from: source, to: target, succeeded: false))
            metrics.activity.migration(
                .init(
                    at: Date(), deployment: name, instance: source, target: target, from: sourceNode.id, to: node,
                    seconds: seconds(since: began), failure: "its target stopped as it started"))
            throw ServingError(.unavailable, "the migration's target \(target) stopped as it started")
        }
        var report = MigrationReport(
            instance: source, target: target, from: sourceNode.id, to: targetNode.id, tier: targetInfo.tier,
            loadSeconds: targetInfo.loadSeconds + targetInfo.engineInitSeconds)

        // Stage 1: the target computes each job's tokens while the source goes on.
        let warmBegan = ContinuousClock.now
        do {
            try await warm(target, on: targetNode, from: source, only: nil, report: &report)
        } catch {
            // The source never paused: it serves on; the target is given up.
            report.warmSeconds = seconds(since: warmBegan)
            perform(machine.endMigration(from: source, to: target, succeeded: false))
            await stopNow(target)
            let failure = ServingError(error)
            report.seconds = seconds(since: began)
            metrics.activity.migration(
                .init(
                    at: Date(), deployment: name, report: report,
                    failure: "its target failed while warming: \(failure.message)"))
            logger.warning("deployment \(name): migration of \(source) abandoned while warming its target: \(failure)")
            throw ServingError(failure.kind, "the migration's target failed while warming: \(failure.message)")
        }
        report.warmSeconds = seconds(since: warmBegan)
        await pool.observePrefill(on: targetNode.id, tokens: report.warmedTokens, seconds: report.warmSeconds)

        // Stage 2: each job leaves the source between two steps and continues on the target.
        let targetLease = Lease(instance: targetInfo, node: targetNode, waitedSeconds: 0, coldStart: false)
        await handOver(from: source, on: sourceNode, to: targetLease, only: nil, report: &report)
        let succeeded = report.cameBack == 0 && started[target] != nil
        // The source stops before the answer (a start waiting for its node's memory, as a
        // locality-driven migration's, finds it free).
        let ending = machine.endMigration(from: source, to: target, succeeded: succeeded)
        perform(ending.filter { $0 != .stop(source) })
        if ending.contains(.stop(source)) {
            timers.removeValue(forKey: source)?.task.cancel()
            await stopNow(source)
        }
        if !succeeded, started[target] != nil {
            // Jobs that did move keep running there: the target serves as an instance of its own.
            perform(machine.instanceStarted(target))
        }
        report.succeeded = succeeded
        report.seconds = seconds(since: began)
        metrics.migrated(deployment: name, succeeded: succeeded, pauseSeconds: report.longestPauseSeconds)
        metrics.activity.migration(.init(at: Date(), deployment: name, report: report))
        logger.info(
            "deployment \(name): migration of \(source) to \(target) on \(targetNode.id) \(succeeded ? "done" : "failed")",
            metadata: [
                "moved": "\(report.moved)", "came_back": "\(report.cameBack)", "ended": "\(report.endedMeanwhile)",
                "rounds": "\(report.rounds)", "warmed_tokens": "\(report.warmedTokens)",
                "pause_ms": "\(report.longestPauseSeconds * 1000)", "seconds": "\(report.seconds)",
            ])
        return report
    }

    /// Stage 1 of a migration or rebalance: `target` computes the tokens of the source's jobs
    /// (those in `only`, when given) while the source goes on generating, again while a job grew
    /// by more than ``migrationDelta`` tokens and that still shrinks by a quarter at least (the
    /// target computes faster than the source generates; each round is shorter); a delta that
    /// stays put is left to the pause. The tokens come from the jobs' relays (``jobTokens``), not
    /// from the source: asking it would wait for its step to end, half a step a round on
    /// average, and the target would trail by as much more. Throws what the target threw.
    private func warm(
        _ target: String, on targetNode: NodePool.Node, from source: String, only: Set<String>?,
        report: inout MigrationReport
    ) async throws {
        var warmed: [String: Int] = [:]
        // The most a job grew since its last warm; and that of the round before.
        var grown = Int.max
        var previous = Int.max
        while report.rounds == 0
            || (report.rounds < Self.migrationRounds && grown > Self.migrationDelta
                && (previous == .max || grown <= previous - previous / 4))
        {
            report.rounds += 1
            previous = grown
            grown = 0
            for job in (jobs[source] ?? []).sorted() where only?.contains(job) ?? true {
                guard let tokens = jobTokens.withLock({ $0[job] }) else { continue }
                grown = max(grown, tokens.count - (warmed[job] ?? 0))
                let warm = try await targetNode.worker.warm(tokens, on: target)
                warmed[job] = tokens.count
                report.warmedTokens += warm.computed
            }
        }
    }

    /// Stage 2: each job (of `only`, when given) leaves the source between two steps and
    /// continues on the target's lease from its snapshot; counts what became of each.
    ///
    /// Stage 1's last round runs beside the detach: the target computes the tokens the job
    /// gained since its last warm while the source takes its last step, so the target has
    /// about one token left to compute when the job reaches it, not the last round's gain.
    private func handOver(
        from source: String, on sourceNode: NodePool.Node, to targetLease: Lease, only: Set<String>?,
        report: inout MigrationReport
    ) async {
        var handing: [String] = []
        let (target, targetWorker) = (targetLease.instance.id, targetLease.node.worker)
        for job in (jobs[source] ?? []).sorted() where only?.contains(job) ?? true {
            moves[job] = targetLease
            handovers[job] = .expected
            let tokens = jobTokens.withLock { $0[job] }
            // A failed warm is the hand-over's to find: the job then comes back to the source.
            async let lastWarm: WarmReport? = {
                guard let tokens else { return nil }
                return try? await targetWorker.warm(tokens, on: target)
            }()
            let detached = await sourceNode.worker.detach(job: job, on: source)
            report.warmedTokens += await lastWarm?.computed ?? 0
            if detached {
                handing.append(job)
            } else {
                // It ended meanwhile (or had not reached the batch yet: it runs to its end there).
                moves[job] = nil
                handovers[job] = nil
                report.endedMeanwhile += 1
            }
        }
        for job in handing {
            switch await handover(of: job) {
            case .continued(let pause):
                report.moved += 1
                report.longestPauseSeconds = max(report.longestPauseSeconds, pause)
            case .cameBack: report.cameBack += 1
            case .ended: report.endedMeanwhile += 1
            }
        }
    }

    // MARK: - Rebalancing

    /// Moves running jobs from the busiest instance to the least busy one on another node, as
    /// the state machine plans it (``DeploymentStateMachine/rebalancePlan(node:)``): the
    /// migration mechanism between two running instances, so nothing loads, starts or stops.
    /// Stage 1 warms the target with the moving jobs' tokens while they go on at the source;
    /// stage 2 hands them over. The jobs with the fewest tokens move (the least to compute
    /// again). Each stream goes on with no token lost, repeated or changed; a job whose target
    /// fails comes back to the source. Nil when the load is even, or a rebalance is under way.
    func rebalance() async -> MigrationReport? {
        guard !rebalancing else { return nil }
        let nodes = placed.filter { started[$0.key] != nil }.mapValues { $0.node.id.rawValue }
        guard let plan = machine.rebalancePlan(node: nodes), let sourceNode = placed[plan.from]?.node,
            let targetNode = placed[plan.to]?.node, let targetInfo = started[plan.to]
        else { return nil }
        rebalancing = true
        defer { rebalancing = false }
        let began = ContinuousClock.now
        let tokens = jobTokens.withLock { $0 }
        let moving = Set(
            (jobs[plan.from] ?? []).sorted { (tokens[$0]?.count ?? 0, $0) < (tokens[$1]?.count ?? 0, $1) }.prefix(
                plan.jobs))
        var report = MigrationReport(
            instance: plan.from, target: plan.to, from: sourceNode.id, to: targetNode.id, tier: targetInfo.tier,
            loadSeconds: 0)
        report.rebalance = true
        do {
            try await warm(plan.to, on: targetNode, from: plan.from, only: moving, report: &report)
        } catch {
            // The source never paused: its jobs stay there.
            report.warmSeconds = seconds(since: began)
            report.seconds = report.warmSeconds
            let failure = ServingError(error)
            metrics.activity.migration(
                .init(
                    at: Date(), deployment: name, report: report,
                    failure: "its target failed while warming: \(failure.message)"))
            logger.warning("deployment \(name): rebalance of \(plan.from) to \(plan.to) abandoned: \(failure)")
            return report
        }
        report.warmSeconds = seconds(since: began)
        await pool.observePrefill(on: targetNode.id, tokens: report.warmedTokens, seconds: report.warmSeconds)
        let lease = Lease(instance: targetInfo, node: targetNode, waitedSeconds: 0, coldStart: false)
        await handOver(from: plan.from, on: sourceNode, to: lease, only: moving, report: &report)
        report.succeeded = report.cameBack == 0
        report.seconds = seconds(since: began)
        metrics.migrated(deployment: name, succeeded: report.succeeded, pauseSeconds: report.longestPauseSeconds)
        metrics.activity.migration(.init(at: Date(), deployment: name, report: report))
        logger.info(
            "deployment \(name): rebalanced \(report.moved) of \(plan.jobs) jobs from \(plan.from) on \(sourceNode.id) to \(plan.to) on \(targetNode.id)",
            metadata: [
                "came_back": "\(report.cameBack)", "ended": "\(report.endedMeanwhile)", "rounds": "\(report.rounds)",
                "warmed_tokens": "\(report.warmedTokens)", "pause_ms": "\(report.longestPauseSeconds * 1000)",
            ])
        return report
    }

    /// With rebalancing on, after an instance started or a job ended: rebalances until the load
    /// is even (or a move fails), one pass at a time.
    private func rebalanceSoon() {
        guard rebalances, !rebalancing, !deleted else { return }
        Task {
            while let report = await self.rebalance(), report.succeeded, report.moved > 0 {}
        }
    }

    /// Below the minimum after a failed start: the minimum is started again after a backoff (as
    /// Kubernetes retries a pod that failed), so a deployment of three whose start failed once
    /// does not stay at two.
    private func retryMinimumLater() {
        guard !deleted, machine.belowMinimum, minimumRetry == nil else { return }
        let delay = retryDelay
        retryDelay = min(retryDelay * 2, Self.lastRetry)
        logger.warning(
            "deployment \(name): fewer instances than its minimum (\(spec.scaling.minInstances)); starting again in \(delay)"
        )
        minimumRetry = Task { [clock] in
            try? await clock.sleep(for: delay)
            guard !Task.isCancelled else { return }
            self.retryMinimum()
        }
    }

    private func retryMinimum() {
        minimumRetry = nil
        guard !deleted else { return }
        perform(machine.ensureMinimum())
    }

    /// An instance that can serve nothing more (its weights did not load, or its worker is
    /// gone) is stopped, its memory returned; the next request starts a fresh one.
    private func instanceBroke(_ id: String, _ error: any Error) async {
        guard started[id] != nil else { return }
        logger.error("deployment \(name): instance \(id) failed and is stopped: \(error)")
        await stopNow(id)
    }

    private func stopNow(_ id: String) async {
        guard started.removeValue(forKey: id) != nil else {
            perform(machine.instanceStopped(id))
            return
        }
        lastUsed[id] = nil
        await placed[id]?.node.worker.stopInstance(id)
        await releaseMemory(of: id)
        perform(machine.instanceStopped(id))
    }

    /// Returns an instance's memory to its node's budget.
    private func releaseMemory(of id: String) async {
        guard let placement = placed.removeValue(forKey: id) else { return }
        await pool.release(placement.bytes, on: placement.node.id)
    }

    private func timerFired(_ id: String, token: Int) {
        timers[id] = nil
        perform(machine.timerFired(id, token: token))
    }

    private func updateGauges() {
        gauges.record(
            starting: machine.count(.starting), ready: machine.count(.ready),
            stopping: machine.count(.stopping), queued: machine.queueDepth, inFlight: machine.inFlight)
    }
}

/// What a live migration did (`POST /admin/instances/{id}/migrate`, `sllm migrate`).
public struct MigrationReport: Sendable, Codable, Equatable {
    /// The instance moved away, and the new one its jobs continue on.
    public var instance: String
    public var target: String
    public var from: NodeID
    public var to: NodeID
    /// The tier the target loaded the checkpoint from, and its load + engine start.
    public var tier: Tier
    public var loadSeconds: Double
    /// Stage 1: rounds of warming, the tokens the target computed, and how long it took.
    public var rounds = 0
    public var warmedTokens = 0
    public var warmSeconds = 0.0
    /// Jobs that continue on the target; that came back to the source (the target failed
    /// before continuing them); that ended before their hand-over.
    public var moved = 0
    public var cameBack = 0
    public var endedMeanwhile = 0
    /// The longest gap a moved job's stream saw between its last token from the source and its
    /// first from the target.
    public var longestPauseSeconds = 0.0
    /// From the request to the last hand-over.
    public var seconds = 0.0
    /// The target serves and the source stops (false: the source serves on).
    public var succeeded = false
    /// A rebalance between two running instances (the target ran already: nothing loaded, and
    /// both serve on); nil for a migration.
    public var rebalance: Bool?
}

/// A deployment as `GET /admin/deployments` reports it.
public struct DeploymentStatus: Sendable, Codable {
    public var spec: DeploymentSpec
    public var contextLength: Int
    public var instances: [InstanceStatus]
    public var inFlight: Int
    public var queued: Int
}

public struct InstanceStatus: Sendable, Codable {
    public var id: String
    public var state: String
    public var inFlight: Int
    public var startedAt: Date?
    public var tier: Tier?
    /// The node the instance was placed on.
    public var node: NodeID?
    /// The start-up time the placement expected (loads queued on the node, then this load; nil
    /// before the node has measured its tier), beside the load time it took.
    public var estimatedStartSeconds: Double?
    public var loadSeconds: Double?
    /// For a checkpoint the node fetched: its bytes by source (peer nodes, remote stores), and
    /// each source's seconds (its first chunk's request to its last chunk's arrival).
    public var fetchedBytes: [String: Int]?
    public var fetchSeconds: [String: Double]?
    public var memoryBytes: Int
    public var loadProgress: Double?
    /// When an idle instance will stop (nil while busy, or when kept forever).
    public var expiresAt: Date?
    public var keepAlive: String
    public var lastUsed: Date?
}
