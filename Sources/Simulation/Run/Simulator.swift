public import Scheduling

/// A discrete-event simulation of a cluster serving a workload, where every decision is made by
/// the `Scheduling` code the controller runs: each model is a deployment driven by its
/// ``DeploymentStateMachine`` (coalescing, queueing, scale-up, keep-alive timers), instance
/// starts are placed by the policy's ``Placement`` with ``NodeFacts`` gathered as the node pool
/// gathers them, room is made by ``MemoryAdmission``, and with migration on the
/// ``MigrationPlanner`` may first move a busy instance. What the simulator supplies is time and
/// the nodes: loads at the calibrated tier bandwidths (remote fetches sharing the store's link),
/// checkpoint caches that fill and evict, and instances that prefill and decode at calibrated
/// speeds.
///
/// Simplifications (see `docs/experiments.md`): a node runs its loads one after another; a peer
/// fetch is held only by the receiving side; an instance's sequences do not slow each other; a
/// migrated stream's pause is not added to its tokens.
public final class Simulator {
    public let cluster: SimulatedCluster
    public let policy: SimulatedPolicy
    public let scaling: ScalingSettings
    let requests: [SimulatedRequest]

    // The scheduling code.
    let placement: any Placement
    var machines: [DeploymentStateMachine] = []
    let names: [String]

    // The simulated world.
    var now = 0.0
    var events = EventQueue()
    var nodes: [SimulatedNode]
    let nodeIndex: [String: Int]
    var facts: [NodeFacts]
    var instances: [SimulatedInstance] = []
    var instanceIndex: [String: Int] = [:]
    /// Per model, the nodes holding its checkpoint in DRAM or on SSD.
    var holders: [[Int]]
    var remote: SharedLink
    var migrations: [Migration] = []
    let bandwidth: [CheckpointTier: Double]
    /// Actions waiting to be applied, with their deployment (applied in order, never nested).
    var work: [(model: Int, action: DeploymentStateMachine.Action)] = []
    var working = false
    /// The request whose arrival is being handled (a dispatch of it then is warm).
    var arriving = -1
    /// Starts waiting for room (every node's memory held by busy instances), in order, and
    /// whether room may have freed since they were last tried (as the deployment's start waits
    /// on the node pool: an instance going idle or stopping wakes them, for `roomWait`).
    var awaitingRoom: [Int] = []
    var roomMayHaveFreed = false
    /// Nodes where memory was freed or an instance went idle since the waiters were last tried:
    /// only there can a waiter now fit.
    var roomChanged: [Int] = []
    static let roomWait = 120.0

    // What happened to each request.
    var dispatchedAt: [Double]
    var firstTokenAt: [Double]
    var cold: [Bool]
    var failure: [SimulationResult.Failure?]
    var requestInstance: [Int]
    var counters = SimulationResult.Counters()
    /// Tests: check the books after every event, and what was found wrong.
    var checksInvariants = false
    var violations: [String] = []

    /// - Parameters:
    ///   - seed: the random policy's draws.
    public init(
        cluster: SimulatedCluster, policy: SimulatedPolicy, scaling: ScalingSettings, requests: [SimulatedRequest],
        seed: UInt64 = 1
    ) throws(SimulationError) {
        try cluster.validate()
        do { try scaling.validate() } catch { throw SimulationError("scaling: \(error.message)") }
        if let bad = requests.first(where: { !(0..<cluster.models).contains($0.model) }) {
            throw SimulationError("a request asks for model \(bad.model); the cluster has \(cluster.models)")
        }
        self.cluster = cluster
        self.policy = policy
        self.scaling = scaling
        self.requests = requests
        bandwidth = cluster.bandwidth
        placement = policy.placementPolicy.placement(assumedBandwidth: bandwidth, seed: seed)
        let width = String(cluster.nodes - 1).count
        let nodeNames = (0..<cluster.nodes).map { index in
            let digits = String(index)
            return "node-" + String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        nodeIndex = Dictionary(uniqueKeysWithValues: nodeNames.enumerated().map { ($1, $0) })
        names = (0..<cluster.models).map { "model-\($0)" }
        nodes = nodeNames.map {
            SimulatedNode(
                name: $0, budget: cluster.memoryBytes, dram: TierCache(capacity: cluster.dramCacheBytes),
                ssd: TierCache(capacity: cluster.ssdBytes))
        }
        facts = nodeNames.map {
            NodeFacts(node: $0, freeMemoryBytes: cluster.memoryBytes, tier: .remote, bandwidth: cluster.bandwidth)
        }
        holders = Array(repeating: [], count: cluster.models)
        remote = SharedLink(
            bytesPerSecond: cluster.remoteBytesPerSecond,
            capPerTransfer: min(cluster.linkBytesPerSecond, cluster.calibration.remoteBytesPerSecond))
        dispatchedAt = Array(repeating: .nan, count: requests.count)
        firstTokenAt = Array(repeating: .nan, count: requests.count)
        cold = Array(repeating: false, count: requests.count)
        failure = Array(repeating: nil, count: requests.count)
        requestInstance = Array(repeating: -1, count: requests.count)
        let ids = InstanceIDs()
        machines = (0..<cluster.models).map { _ in DeploymentStateMachine(settings: scaling, makeID: { ids.next() }) }
        // Each checkpoint on the SSDs of `ssdCopies` nodes, round robin (the baseline keeps none).
        if policy != .kserve {
            for model in 0..<cluster.models {
                for copy in 0..<cluster.ssdCopies {
                    let node = (model + copy) % cluster.nodes
                    cache(model, on: node, dram: false)
                }
            }
        }
    }

    /// Runs the workload to its end (every request answered or refused, every idle instance
    /// stopped by its keep-alive).
    public func run() -> SimulationResult {
        let clock = ContinuousClock.now
        for model in 0..<cluster.models { apply(machines[model].ensureMinimum(), model: model) }
        var next = 0
        while true {
            let arrival = next < requests.count ? requests[next].at : .infinity
            if let time = events.nextTime, time < arrival {
                let (at, event) = events.pop()!
                now = at
                counters.events += 1
                handle(event)
            } else if next < requests.count {
                now = arrival
                counters.events += 1
                arrive(next)
                next += 1
            } else {
                break
            }
            if roomMayHaveFreed { retryAwaitingRoom() }
            if checksInvariants { checkInvariants() }
        }
        let elapsed = ContinuousClock.now - clock
        return SimulationResult(
            policy: policy, requests: requests, dispatchedAt: dispatchedAt, firstTokenAt: firstTokenAt, cold: cold,
            tiers: requestInstance.map { $0 >= 0 ? instances[$0].source : nil }, failure: failure,
            counters: counters,
            wallSeconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18,
            simulatedSeconds: now)
    }

    // MARK: - Requests

    private func arrive(_ request: Int) {
        let model = requests[request].model
        arriving = request
        apply(machines[model].requestArrived(request), model: model)
        arriving = -1
    }

    private func dispatch(_ request: Int, to index: Int) {
        let spec = requests[request]
        let bytes = cluster.modelBytes[spec.model]
        let calibration = cluster.calibration
        let prefill = Double(spec.promptTokens) / calibration.prefill(bytes: bytes)
        let step = 1 / calibration.decode(bytes: bytes)
        dispatchedAt[request] = now
        // Cold: it waited for this instance's start (a wait for a busy instance's slot is not).
        cold[request] = request != arriving && instances[index].readyAt >= spec.at
        firstTokenAt[request] = now + calibration.requestSeconds + prefill + step
        requestInstance[request] = index
        instances[index].jobs.append(request)
        let node = instances[index].node
        nodes[node].runningJobs += 1
        nodes[node].idleVersion += 1
        events.schedule(
            .finish(request: request),
            at: now + calibration.requestSeconds + prefill + Double(max(1, spec.outputTokens)) * step)
    }

    private func finish(_ request: Int) {
        let index = requestInstance[request]
        guard index >= 0 else { return }
        let model = requests[request].model
        instances[index].jobs.removeAll { $0 == request }
        instances[index].lastUsed = now
        let node = instances[index].node
        if instances[index].jobs.isEmpty {
            roomMayHaveFreed = true
            roomChanged.append(node)
        }
        nodes[node].runningJobs -= 1
        nodes[node].idleVersion += 1
        apply(machines[model].requestFinished(on: instances[index].id, keepAlive: nil), model: model)
    }

    /// Tokens a running request holds now: its prompt and what it generated so far.
    func tokensHeld(by request: Int) -> Int {
        let spec = requests[request]
        let bytes = cluster.modelBytes[spec.model]
        let started = firstTokenAt[request]
        guard !started.isNaN, now >= started else { return spec.promptTokens }
        let generated = 1 + Int((now - started) * cluster.calibration.decode(bytes: bytes))
        return spec.promptTokens + min(spec.outputTokens, generated)
    }

    // MARK: - Events and actions

    private func handle(_ event: SimulationEvent) {
        switch event {
        case .finish(let request):
            finish(request)
        case .timer(let index, let token):
            let model = instances[index].model
            apply(machines[model].timerFired(instances[index].id, token: token), model: model)
        case .loaded(let node):
            loaded(on: node)
        case .fetched(let index):
            fetched(index)
        case .remoteProgress(let version):
            guard version == remote.version else { return }
            let (done, next) = remote.finished(now: now)
            for index in done { events.schedule(.fetched(instance: index), at: now + cluster.calibration.startSeconds) }
            if let next { events.schedule(.remoteProgress(version: remote.version), at: next) }
        case .handover(let migration):
            handOver(migration)
        case .roomTimeout(let index):
            guard let position = awaitingRoom.firstIndex(of: index) else { return }
            awaitingRoom.remove(at: position)
            let model = instances[index].model
            apply(machines[model].instanceFailed(instances[index].id, reason: "no room"), model: model)
        }
    }

    /// Places the starts waiting for room again, in the order they began waiting: those that fit
    /// one of the nodes where room changed (elsewhere nothing changed since they last failed).
    private func retryAwaitingRoom() {
        roomMayHaveFreed = false
        var room = 0
        for node in Set(roomChanged) {
            _ = evictionOrder(on: node)
            room = max(room, nodes[node].budget - nodes[node].reserved + nodes[node].idleBytes)
        }
        roomChanged.removeAll(keepingCapacity: true)
        let waiting = awaitingRoom
        awaitingRoom.removeAll()
        // Once a start of some size found no node, larger ones wait without trying this round.
        var refused = Int.max
        for index in waiting where instances[index].phase == .starting && instances[index].node < 0 {
            let bytes = instances[index].bytes
            guard bytes <= room, bytes < refused else {
                awaitingRoom.append(index)
                continue
            }
            start(index, mayMigrate: policy == .localityMigration, retry: true)
            if instances[index].node < 0, awaitingRoom.last == index { refused = bytes }
        }
    }

    /// Applies a deployment's actions, and those they lead to, in order.
    func apply(_ actions: [DeploymentStateMachine.Action], model: Int) {
        work.append(contentsOf: actions.lazy.map { (model, $0) })
        guard !working else { return }
        working = true
        defer { working = false }
        var position = 0
        while position < work.count {
            let (model, action) = work[position]
            position += 1
            perform(action, model: model)
        }
        work.removeAll(keepingCapacity: true)
    }

    private func perform(_ action: DeploymentStateMachine.Action, model: Int) {
        switch action {
        case .start(let id):
            let index = instances.count
            instances.append(SimulatedInstance(id: id, model: model, bytes: memoryBytes(of: model)))
            instanceIndex[id] = index
            counters.starts += 1
            start(index, mayMigrate: policy == .localityMigration)
        case .stop(let id):
            if let index = instanceIndex[id] { stop(index) }
        case .dispatch(let request, let id):
            if let index = instanceIndex[id] { dispatch(request, to: index) }
        case .reject(let request, let rejection):
            switch rejection {
            case .queueFull: failure[request] = .queueFull
            case .startFailed: failure[request] = .noRoom
            case .deleted: failure[request] = .deleted
            }
        case .scheduleTimer(let id, let token, let after):
            guard let index = instanceIndex[id] else { return }
            let (seconds, attoseconds) = after.components
            events.schedule(
                .timer(instance: index, token: token), at: now + Double(seconds) + Double(attoseconds) * 1e-18)
        }
    }

    func memoryBytes(of model: Int) -> Int { cluster.modelBytes[model] + cluster.instanceExtraBytes }

    /// An instance stops: its memory is free again.
    func stop(_ index: Int) {
        guard instances[index].phase != .stopped else { return }
        instances[index].phase = .stopped
        let node = instances[index].node
        if node >= 0 {
            nodes[node].reserved -= instances[index].bytes
            nodes[node].instances.removeAll { $0 == index }
            nodes[node].idleVersion += 1
        }
        instanceIndex[instances[index].id] = nil
        roomMayHaveFreed = true
        if node >= 0 { roomChanged.append(node) }
        let model = instances[index].model
        apply(machines[model].instanceStopped(instances[index].id), model: model)
    }
}

extension Simulator {
    /// The books balance: a node's reservations are its instances' memory and within its
    /// budget, its running requests are its instances', the holders of a checkpoint are the
    /// nodes caching it, and each deployment's in-flight count is its instances' requests.
    func checkInvariants() {
        guard violations.count < 20 else { return }
        for (index, node) in nodes.enumerated() {
            let held = node.instances.reduce(0) { $0 + instances[$1].bytes }
            if held != node.reserved || node.reserved > node.budget || node.reserved < 0 {
                violations.append(
                    "t=\(now): \(node.name) reserves \(node.reserved) of \(node.budget), instances hold \(held)")
            }
            let jobs = node.instances.reduce(0) { $0 + instances[$1].jobs.count }
            if jobs != node.runningJobs {
                violations.append("t=\(now): \(node.name) counts \(node.runningJobs) running, instances hold \(jobs)")
            }
            if node.instances.contains(where: { instances[$0].node != index || instances[$0].phase == .stopped }) {
                violations.append("t=\(now): \(node.name) lists an instance placed elsewhere or stopped")
            }
        }
        for (model, list) in holders.enumerated() {
            let caching = nodes.indices.filter { nodes[$0].tier(of: model) != nil }
            if Set(list) != Set(caching) || list.count != caching.count {
                violations.append("t=\(now): model \(model) holders \(list.sorted()) but cached on \(caching)")
            }
        }
        for (model, machine) in machines.enumerated() {
            let running = machine.instances.keys.reduce(0) { total, id in
                total + (instanceIndex[id].map { instances[$0].jobs.count } ?? 0)
            }
            if running != machine.inFlight {
                violations.append(
                    "t=\(now): model \(model) has \(machine.inFlight) in flight, instances run \(running)")
            }
        }
    }
}

/// Instance ids shared by every deployment of a simulation.
final class InstanceIDs {
    private var count = 0

    func next() -> String {
        count += 1
        return "i\(count)"
    }
}

/// A simulated node.
struct SimulatedNode {
    var name: String
    var budget: Int
    var reserved = 0
    var instances: [Int] = []
    var dram: TierCache
    var ssd: TierCache
    /// Loads from the node's own tiers and its peers, one at a time (they share its disk and link).
    var queue: [LoadJob] = []
    var queueHead = 0
    var loading: LoadJob?
    /// Fetches from the remote store under way, by instance, with their estimates: they run side
    /// by side, as a worker runs them, sharing the store's link rather than the node's disk.
    var fetching: [Int: Double] = [:]
    /// Estimated seconds of the loads not yet done (what placement sees as queued).
    var queuedSeconds = 0.0
    var runningJobs = 0
    /// Bumped whenever an instance here changes (so the eviction order is recomputed).
    var idleVersion = 0
    var orderVersion = -1
    var order: [MemoryAdmission.Candidate] = []
    /// What the idle instances in `order` hold, and their models.
    var idleBytes = 0
    var idleModels: [Int] = []

    init(name: String, budget: Int, dram: TierCache, ssd: TierCache) {
        self.name = name
        self.budget = budget
        self.dram = dram
        self.ssd = ssd
    }

    func tier(of model: Int) -> CheckpointTier? {
        dram.contains(model) ? .dram : ssd.contains(model) ? .ssd : nil
    }
}

/// A load waiting for, or running on, a node.
struct LoadJob {
    var instance: Int
    var estimate: Double
}

/// A simulated instance.
struct SimulatedInstance {
    enum Phase { case starting, ready, stopped }

    var id: String
    var model: Int
    var bytes: Int
    var node = -1
    var phase = Phase.starting
    var jobs: [Int] = []
    var lastUsed = 0.0
    /// When it became ready (infinity until then).
    var readyAt = Double.infinity
    /// Set on a migration's target.
    var migration: Int?
    /// The tier its load read from, once the load began.
    var source: CheckpointTier?

    init(id: String, model: Int, bytes: Int) {
        self.id = id
        self.model = model
        self.bytes = bytes
    }
}

/// A live migration under way.
struct Migration {
    var victim: Int
    var target: Int
    /// The instance that starts on the victim's node once it left.
    var waiting: Int
    var from: Int
    var started: Double
    var tokens: Int
}
