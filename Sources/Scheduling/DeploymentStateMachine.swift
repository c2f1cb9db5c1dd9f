/// The autoscaling and routing decisions of one deployment, without I/O: events in, actions out.
///
/// Requests take a slot on the least loaded ready instance; when none has one, they wait in a
/// bounded queue and, if demand exceeds `targetConcurrency` × instances, a new instance starts
/// (up to `maxInstances`; the owner may refuse for memory). Requests coalesce on instances being
/// started: one cold start serves every request that arrives meanwhile. An instance that goes
/// idle gets a keep-alive timer; when it fires and the deployment has more than `minInstances`,
/// the instance stops.
public struct DeploymentStateMachine {
    public typealias WaiterID = Int
    public typealias InstanceID = String

    public enum InstanceState: String, Sendable {
        /// Draining: being migrated away (its jobs move to a new instance); it takes no new
        /// requests and stops once the migration succeeded and its last job left or ended.
        case starting, ready, draining, stopping
    }

    /// Set by `deleteAll`: from then on nothing starts.
    public private(set) var isDeleted = false

    public struct Instance: Sendable {
        public internal(set) var state: InstanceState
        public internal(set) var inFlight = 0
        /// Bumped whenever the instance becomes busy, so an old keep-alive timer is ignored.
        var timerToken = 0
        /// The last request's keep-alive override (Ollama's per-request `keep_alive`).
        public internal(set) var keepAliveOverride: KeepAlive?
        /// Order of creation (scale-down stops the newest idle first).
        var serial: Int
        /// While draining: the instance its jobs move to, until the migration ends (it does not
        /// stop meanwhile, even with no job left: a job whose target failed comes back to it).
        public internal(set) var migratingTo: InstanceID?
    }

    public enum Action: Equatable, Sendable {
        /// Start a new instance with this id; answer with `instanceStarted` or `instanceFailed`.
        case start(InstanceID)
        /// Stop this instance; answer with `instanceStopped`.
        case stop(InstanceID)
        /// Give the waiter a slot on this instance.
        case dispatch(WaiterID, InstanceID)
        /// Fail the waiter.
        case reject(WaiterID, Rejection)
        /// Call `timerFired(instance, token)` after this long.
        case scheduleTimer(InstanceID, token: Int, after: Duration)
    }

    public enum Rejection: Equatable, Sendable {
        case queueFull(limit: Int)
        case startFailed(String)
        case deleted
    }

    public private(set) var settings: ScalingSettings
    public private(set) var instances: [InstanceID: Instance] = [:]
    public private(set) var waiting: [WaiterID] = []
    private var nextSerial = 0
    private let makeID: () -> InstanceID

    public init(settings: ScalingSettings, makeID: @escaping () -> InstanceID) {
        self.settings = settings
        self.makeID = makeID
    }

    public var inFlight: Int { instances.values.reduce(0) { $0 + $1.inFlight } }
    public var queueDepth: Int { waiting.count }
    public func count(_ state: InstanceState) -> Int { instances.values.filter { $0.state == state }.count }
    /// Instances that count toward capacity (not stopping; not draining, whose target counts).
    private var live: Int { instances.values.filter { $0.state != .stopping && $0.state != .draining }.count }

    // MARK: - Events

    /// Whether fewer than `minInstances` are up or starting (a start failed).
    public var belowMinimum: Bool { !isDeleted && live < settings.minInstances }

    /// Instances to start so that `minInstances` are up.
    public mutating func ensureMinimum() -> [Action] {
        guard !isDeleted else { return [] }  // instances stopping for a delete are not replaced
        var actions: [Action] = []
        while live < settings.minInstances { actions.append(addInstance()) }
        return actions
    }

    public mutating func requestArrived(_ waiter: WaiterID) -> [Action] {
        guard !isDeleted else { return [.reject(waiter, .deleted)] }
        if let instance = instanceWithFreeSlot() {
            return [take(instance, for: waiter)]
        }
        waiting.append(waiter)
        let actions = scaleUpIfNeeded()
        // Requests within the slots of instances being started wait for their cold start; the
        // queue bounds only those beyond.
        if waiting.count > settings.queueLimit + spareStartingSlots {
            waiting.removeLast()
            return actions + [.reject(waiter, .queueFull(limit: settings.queueLimit))]
        }
        return actions
    }

    /// A waiter gave up (client disconnected) before getting a slot.
    public mutating func waiterCancelled(_ waiter: WaiterID) {
        waiting.removeAll { $0 == waiter }
    }

    public mutating func instanceStarted(_ id: InstanceID) -> [Action] {
        guard var instance = instances[id], instance.state == .starting else { return [] }
        instance.state = .ready
        instances[id] = instance
        var actions = drainQueue()
        if instances[id]?.inFlight == 0 { actions += becameIdle(id) }
        return actions
    }

    /// An instance found already running (on a worker, after the controller restarted or took
    /// over) joins as ready, when the deployment may have one more; nil when it may not (the
    /// owner stops it).
    public mutating func adopt(_ id: InstanceID) -> [Action]? {
        guard !isDeleted, instances[id] == nil, live < settings.maxInstances else { return nil }
        nextSerial += 1
        instances[id] = Instance(state: .ready, serial: nextSerial)
        var actions = drainQueue()
        if instances[id]?.inFlight == 0 { actions += becameIdle(id) }
        return actions
    }

    /// Starting failed (load error, or the node's memory budget refused it).
    public mutating func instanceFailed(_ id: InstanceID, reason: String) -> [Action] {
        guard instances.removeValue(forKey: id) != nil else { return [] }
        // Waiters that no other instance will serve fail with the cause.
        guard live == 0 else { return scaleUpIfNeeded() }
        let failed = waiting
        waiting.removeAll()
        return failed.map { .reject($0, .startFailed(reason)) }
    }

    public mutating func requestFinished(on id: InstanceID, keepAlive: KeepAlive?) -> [Action] {
        guard var instance = instances[id] else { return [] }
        instance.inFlight -= 1
        if let keepAlive { instance.keepAliveOverride = keepAlive }
        instances[id] = instance
        if instance.state == .draining { return stopIfDrained(id) }
        if let waiter = waiting.first, instance.state == .ready {
            waiting.removeFirst()
            return [take(id, for: waiter)]
        }
        return instance.inFlight == 0 ? becameIdle(id) : []
    }

    public mutating func timerFired(_ id: InstanceID, token: Int) -> [Action] {
        guard let instance = instances[id], instance.state == .ready, instance.inFlight == 0,
            instance.timerToken == token
        else { return [] }
        return stopIfAboveMinimum(id)
    }

    public mutating func instanceStopped(_ id: InstanceID) -> [Action] {
        instances.removeValue(forKey: id)
        guard !isDeleted else { return [] }
        return ensureMinimum() + scaleUpIfNeeded()
    }

    /// New settings: start up to the new minimum, stop idle instances above the new maximum or
    /// whose keep-alive has now passed.
    public mutating func update(_ new: ScalingSettings) -> [Action] {
        settings = new
        var actions = ensureMinimum()
        for id in idleReady() where live > settings.maxInstances {
            actions += stopIfAboveMinimum(id)
        }
        for id in idleReady() { actions += becameIdle(id) }
        return actions + drainQueue()
    }

    /// What deleting a deployment decided: the waiters to fail and the instances to stop.
    public struct Deletion: Equatable, Sendable {
        public var rejected: [WaiterID]
        public var stopped: [InstanceID]
    }

    /// The deployment is deleted: every waiter fails, every instance stops.
    public mutating func deleteAll() -> Deletion {
        isDeleted = true
        let rejected = waiting
        waiting.removeAll()
        var stopped: [InstanceID] = []
        for (id, instance) in instances where instance.state != .stopping {
            instances[id]?.state = .stopping
            stopped.append(id)
        }
        return Deletion(rejected: rejected, stopped: stopped.sorted())
    }

    /// Idle ready instances, which memory pressure from another deployment may stop.
    public var idleInstances: [InstanceID] { idleReady() }

    /// Stops an idle instance for memory another deployment needs, even below `minInstances`
    /// (it comes back on demand). Returns whether it is to stop: false when it is busy or not
    /// ready.
    public mutating func evict(_ id: InstanceID) -> Bool {
        guard let instance = instances[id], instance.state == .ready, instance.inFlight == 0 else { return false }
        instances[id]!.state = .stopping
        return true
    }

    /// An operator stops one instance (as `ollama stop` does a model): an idle one stops now; a
    /// busy one takes no new request and stops once its requests end (requests waiting go to
    /// other instances, or one more starts for them). It stops even at `minInstances`: the
    /// minimum starts another (at once for a busy one, which no longer counts). Nil when the
    /// instance is not ready (starting, migrating, stopping) or unknown.
    public mutating func stop(_ id: InstanceID) -> [Action]? {
        guard !isDeleted, let instance = instances[id], instance.state == .ready else { return nil }
        guard instance.inFlight > 0 else {
            instances[id]!.state = .stopping
            return [.stop(id)]
        }
        instances[id]!.state = .draining
        return ensureMinimum() + scaleUpIfNeeded()
    }

    // MARK: - Live migration

    /// A live migration of `source` begins: a new instance (the returned id, `starting`) is to
    /// start and take its jobs over; the source takes no new requests meanwhile (requests wait
    /// for the target, or go to other instances). Nil when the source is not ready.
    public mutating func beginMigration(from source: InstanceID) -> InstanceID? {
        guard !isDeleted, let instance = instances[source], instance.state == .ready else { return nil }
        let target = makeID()
        nextSerial += 1
        instances[target] = Instance(state: .starting, serial: nextSerial)
        instances[source]!.state = .draining
        instances[source]!.timerToken += 1
        instances[source]!.migratingTo = target
        return target
    }

    /// One job moved between instances: to a migration's target at hand-over, or back to the
    /// source when the target failed before continuing it.
    public mutating func jobMoved(from: InstanceID, to: InstanceID) -> [Action] {
        guard instances[from] != nil, instances[to] != nil else { return [] }
        instances[from]!.inFlight -= 1
        instances[to]!.inFlight += 1
        instances[to]!.timerToken += 1
        switch instances[from]!.state {
        case .draining: return stopIfDrained(from)
        case .ready: return becameIdle(from)
        case .starting, .stopping: return []
        }
    }

    /// The migration of `source` ended. Succeeded: the target serves as a ready instance, and the
    /// source stops once no job is left on it (one that reached it before the migration began
    /// runs to its end there). Failed: the source serves again; the owner disposes of the target
    /// (`instanceFailed` when it never started, `instanceStarted` when it holds moved jobs,
    /// a stop when it broke).
    public mutating func endMigration(from source: InstanceID, to target: InstanceID, succeeded: Bool) -> [Action] {
        var actions: [Action] = []
        if succeeded, instances[target]?.state == .starting { actions += instanceStarted(target) }
        guard let instance = instances[source], instance.state == .draining else { return actions }
        instances[source]!.migratingTo = nil
        if succeeded { return actions + stopIfDrained(source) }
        instances[source]!.state = .ready
        actions += drainQueue()
        return actions + becameIdle(source)
    }

    // MARK: - Rebalancing

    /// Running jobs to move from one ready instance to another of the same deployment, on the
    /// live-migration mechanism (Llumnix's load balancing): the target is running already, so
    /// only the jobs' tokens are computed again there.
    public struct Rebalance: Equatable, Sendable {
        public var from: InstanceID
        public var to: InstanceID
        public var jobs: Int

        public init(from: InstanceID, to: InstanceID, jobs: Int) {
            self.from = from
            self.to = to
            self.jobs = jobs
        }
    }

    /// The busiest ready instance and the least busy ready one on another node: when they
    /// differ by two jobs or more, half the difference moves, within the target's free slots.
    /// `node` gives each instance's node; instances on one node (or of unknown node) share its
    /// cores, and moving jobs between them gains nothing. Nil when the load is even.
    public func rebalancePlan(node: [InstanceID: String]) -> Rebalance? {
        let ready = instances.filter { $0.value.state == .ready }
        let order = { (a: (key: InstanceID, value: Instance), b: (key: InstanceID, value: Instance)) in
            (a.value.inFlight, b.value.serial) < (b.value.inFlight, a.value.serial)
        }
        guard let busiest = ready.max(by: order), let home = node[busiest.key] else { return nil }
        guard
            let least = ready.filter({ node[$0.key] != nil && node[$0.key] != home })
                .min(by: { ($0.value.inFlight, $0.value.serial) < ($1.value.inFlight, $1.value.serial) })
        else { return nil }
        let moving = min(
            (busiest.value.inFlight - least.value.inFlight) / 2, settings.targetConcurrency - least.value.inFlight)
        guard moving >= 1 else { return nil }
        return Rebalance(from: busiest.key, to: least.key, jobs: moving)
    }

    private mutating func stopIfDrained(_ id: InstanceID) -> [Action] {
        guard let instance = instances[id], instance.state == .draining, instance.migratingTo == nil,
            instance.inFlight == 0
        else { return [] }
        instances[id]!.state = .stopping
        return [.stop(id)]
    }

    // MARK: - Rules

    private func instanceWithFreeSlot() -> InstanceID? {
        instances.filter { $0.value.state == .ready && $0.value.inFlight < settings.targetConcurrency }
            .min { ($0.value.inFlight, $0.value.serial) < ($1.value.inFlight, $1.value.serial) }?.key
    }

    /// Slots of instances still starting: requests waiting for a cold start are within them,
    /// not the queue.
    private var spareStartingSlots: Int { count(.starting) * settings.targetConcurrency }

    private mutating func take(_ id: InstanceID, for waiter: WaiterID) -> Action {
        instances[id]!.inFlight += 1
        instances[id]!.timerToken += 1
        return .dispatch(waiter, id)
    }

    private mutating func drainQueue() -> [Action] {
        var actions: [Action] = []
        while let waiter = waiting.first, let id = instanceWithFreeSlot() {
            waiting.removeFirst()
            actions.append(take(id, for: waiter))
        }
        return actions
    }

    /// Requests the live instances carry: a migrating source's count (its jobs move to the
    /// target, which is live); one draining to stop keeps its requests to itself.
    private var liveInFlight: Int {
        instances.values.filter { $0.state != .draining || $0.migratingTo != nil }.reduce(0) { $0 + $1.inFlight }
    }

    /// Demand is what is being served plus what waits; capacity is `targetConcurrency` per live
    /// instance. Start instances while demand exceeds capacity, up to `maxInstances`.
    private mutating func scaleUpIfNeeded() -> [Action] {
        var actions: [Action] = []
        while liveInFlight + waiting.count > live * settings.targetConcurrency, live < settings.maxInstances {
            actions.append(addInstance())
        }
        return actions
    }

    private mutating func addInstance() -> Action {
        let id = makeID()
        nextSerial += 1
        instances[id] = Instance(state: .starting, serial: nextSerial)
        return .start(id)
    }

    private mutating func becameIdle(_ id: InstanceID) -> [Action] {
        guard let instance = instances[id], instance.state == .ready, instance.inFlight == 0 else { return [] }
        instances[id]!.timerToken += 1
        switch instance.keepAliveOverride ?? settings.keepAlive {
        case .forever:
            return []
        case .duration(let duration) where duration <= .zero:
            return stopIfAboveMinimum(id)
        case .duration(let duration):
            return [.scheduleTimer(id, token: instances[id]!.timerToken, after: duration)]
        }
    }

    private mutating func stopIfAboveMinimum(_ id: InstanceID) -> [Action] {
        guard live > settings.minInstances else { return [] }
        instances[id]!.state = .stopping
        return [.stop(id)]
    }

    private func idleReady() -> [InstanceID] {
        instances.filter { $0.value.state == .ready && $0.value.inFlight == 0 }
            .sorted { $0.value.serial > $1.value.serial }.map(\.key)
    }
}
