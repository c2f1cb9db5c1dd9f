import Foundation
import Store

/// How long an idle instance stays loaded (Ollama's `keep_alive`).
public enum KeepAlive: Sendable, Equatable, Codable, CustomStringConvertible {
    /// Unload after this long without requests; `.zero` unloads as soon as the last request ends.
    case duration(Duration)
    /// Never unload for idleness (Ollama's negative `keep_alive`).
    case forever

    /// Parses Ollama's forms: a duration string (`5m`, `1h30m`, `90s`, `500ms`), a number of
    /// seconds, `0`, or a negative value for "forever".
    public init(parsing text: String) throws(ServingError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let seconds = Double(trimmed) {
            try self.init(seconds: seconds)
            return
        }
        if trimmed.hasPrefix("-") || ["forever", "inf", "infinite", "never"].contains(trimmed.lowercased()) { self = .forever; return }
        guard let duration = parseDuration(trimmed) else {
            throw ServingError(.invalidRequest, "keep_alive `\(text)` is not a duration of at most 10 years: use e.g. 5m, 30s, 1h, 0 (unload at once) or -1 (forever)", param: "keep_alive")
        }
        self = .duration(duration)
    }

    /// Seconds; negative means forever. Not-a-number, infinities and more than ten years are refused.
    public init(seconds: Double) throws(ServingError) {
        guard !seconds.isNaN else {
            throw ServingError(.invalidRequest, "keep_alive `\(seconds)` is not a number of seconds", param: "keep_alive")
        }
        if seconds < 0 { self = .forever; return }
        guard let duration = checkedDuration(seconds: seconds) else {
            throw ServingError(.invalidRequest, "keep_alive `\(seconds)` seconds is out of range: at most \(Int(longestDuration)) (10 years), or -1 for forever", param: "keep_alive")
        }
        self = .duration(duration)
    }

    public var description: String {
        switch self {
        case .forever: return "forever"
        case .duration(let duration): return formatDuration(duration)
        }
    }

    /// Seconds, negative for forever (how it is stored and sent).
    public var seconds: Double {
        switch self {
        case .forever: return -1
        case .duration(let duration): return duration.seconds
        }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let seconds = try? container.decode(Double.self) {
            do { try self.init(seconds: seconds) } catch {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: error.message)
            }
        } else {
            let text = try container.decode(String.self)
            do { try self.init(parsing: text) } catch {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: error.message)
            }
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// The scaling settings of a deployment.
public struct ScalingSettings: Sendable, Equatable, Codable {
    /// Instances kept even when idle (0: scale to zero).
    public var minInstances: Int = 0
    /// Most instances at once.
    public var maxInstances: Int = 1
    /// Requests one instance serves at once (its continuous-batching width).
    public var targetConcurrency: Int = 4
    /// Idle time before an instance above `minInstances` stops.
    public var keepAlive: KeepAlive = .duration(.seconds(300))
    /// Requests waiting for a slot beyond those being served; more get 429.
    public var queueLimit: Int = 512

    public init() {}

    /// Checks the settings' ranges.
    public func validate() throws(ServingError) {
        guard minInstances >= 0 else { throw ServingError(.invalidRequest, "min instances must be 0 or more (got \(minInstances))", param: "min_instances") }
        guard maxInstances >= 1 else { throw ServingError(.invalidRequest, "max instances must be at least 1 (got \(maxInstances))", param: "max_instances") }
        guard minInstances <= maxInstances else {
            throw ServingError(.invalidRequest, "min instances (\(minInstances)) exceed max instances (\(maxInstances))", param: "min_instances")
        }
        guard (1...256).contains(targetConcurrency) else {
            throw ServingError(.invalidRequest, "target concurrency must be 1...256 (got \(targetConcurrency))", param: "target_concurrency")
        }
        guard queueLimit >= 0 else { throw ServingError(.invalidRequest, "queue limit must be 0 or more (got \(queueLimit))", param: "queue_limit") }
    }
}

/// The autoscaling and routing decisions of one deployment, without I/O: events in, actions out.
///
/// Requests take a slot on the least loaded ready instance; when none has one, they wait in a
/// bounded queue and, if demand exceeds `targetConcurrency` × instances, a new instance starts
/// (up to `maxInstances`; the owner may refuse for memory). Requests coalesce on instances being
/// started: one cold start serves every request that arrives meanwhile. An instance that goes
/// idle gets a keep-alive timer; when it fires and the deployment has more than `minInstances`,
/// the instance stops.
struct DeploymentStateMachine {
    typealias WaiterID = Int
    typealias InstanceID = String

    enum InstanceState: String, Sendable {
        case starting, ready, stopping
    }

    /// Set by `deleteAll`: from then on nothing starts.
    private(set) var isDeleted = false

    struct Instance {
        var state: InstanceState
        var inFlight = 0
        /// Bumped whenever the instance becomes busy, so an old keep-alive timer is ignored.
        var timerToken = 0
        /// The last request's keep-alive override (Ollama's per-request `keep_alive`).
        var keepAliveOverride: KeepAlive?
        /// Order of creation (scale-down stops the newest idle first).
        var serial: Int
    }

    enum Action: Equatable {
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

    enum Rejection: Equatable {
        case queueFull(limit: Int)
        case startFailed(String)
        case deleted
    }

    private(set) var settings: ScalingSettings
    private(set) var instances: [InstanceID: Instance] = [:]
    private(set) var waiting: [WaiterID] = []
    private var nextSerial = 0
    private let makeID: () -> InstanceID

    init(settings: ScalingSettings, makeID: @escaping () -> InstanceID) {
        self.settings = settings
        self.makeID = makeID
    }

    var inFlight: Int { instances.values.reduce(0) { $0 + $1.inFlight } }
    var queueDepth: Int { waiting.count }
    func count(_ state: InstanceState) -> Int { instances.values.filter { $0.state == state }.count }
    /// Instances that count toward capacity (not stopping).
    private var live: Int { instances.values.filter { $0.state != .stopping }.count }

    // MARK: - Events

    /// Instances to start so that `minInstances` are up.
    mutating func ensureMinimum() -> [Action] {
        guard !isDeleted else { return [] }  // instances stopping for a delete are not replaced
        var actions: [Action] = []
        while live < settings.minInstances { actions.append(addInstance()) }
        return actions
    }

    mutating func requestArrived(_ waiter: WaiterID) -> [Action] {
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
    mutating func waiterCancelled(_ waiter: WaiterID) {
        waiting.removeAll { $0 == waiter }
    }

    mutating func instanceStarted(_ id: InstanceID) -> [Action] {
        guard var instance = instances[id], instance.state == .starting else { return [] }
        instance.state = .ready
        instances[id] = instance
        var actions = drainQueue()
        if instances[id]?.inFlight == 0 { actions += becameIdle(id) }
        return actions
    }

    /// Starting failed (load error, or the node's memory budget refused it).
    mutating func instanceFailed(_ id: InstanceID, reason: String) -> [Action] {
        guard instances.removeValue(forKey: id) != nil else { return [] }
        // Waiters that no other instance will serve fail with the cause.
        guard live == 0 else { return scaleUpIfNeeded() }
        let failed = waiting
        waiting.removeAll()
        return failed.map { .reject($0, .startFailed(reason)) }
    }

    mutating func requestFinished(on id: InstanceID, keepAlive: KeepAlive?) -> [Action] {
        guard var instance = instances[id] else { return [] }
        instance.inFlight -= 1
        if let keepAlive { instance.keepAliveOverride = keepAlive }
        instances[id] = instance
        if let waiter = waiting.first, instance.state == .ready {
            waiting.removeFirst()
            return [take(id, for: waiter)]
        }
        return instance.inFlight == 0 ? becameIdle(id) : []
    }

    mutating func timerFired(_ id: InstanceID, token: Int) -> [Action] {
        guard let instance = instances[id], instance.state == .ready, instance.inFlight == 0, instance.timerToken == token else { return [] }
        return stopIfAboveMinimum(id)
    }

    mutating func instanceStopped(_ id: InstanceID) -> [Action] {
        instances.removeValue(forKey: id)
        guard !isDeleted else { return [] }
        return ensureMinimum() + scaleUpIfNeeded()
    }

    /// New settings: start up to the new minimum, stop idle instances above the new maximum or
    /// whose keep-alive has now passed.
    mutating func update(_ new: ScalingSettings) -> [Action] {
        settings = new
        var actions = ensureMinimum()
        for id in idleReady() where live > settings.maxInstances {
            actions += stopIfAboveMinimum(id)
        }
        for id in idleReady() { actions += becameIdle(id) }
        return actions + drainQueue()
    }

    /// The deployment is deleted: every waiter fails, every instance stops.
    mutating func deleteAll() -> [Action] {
        isDeleted = true
        var actions = waiting.map { Action.reject($0, .deleted) }
        waiting.removeAll()
        for (id, instance) in instances where instance.state != .stopping {
            instances[id]?.state = .stopping
            actions.append(.stop(id))
        }
        return actions
    }

    /// Idle ready instances, which memory pressure from another deployment may stop.
    var idleInstances: [InstanceID] { idleReady() }

    /// Stops an idle instance for memory another deployment needs, even below `minInstances`
    /// (it comes back on demand). Nothing when it is busy or not ready.
    mutating func evict(_ id: InstanceID) -> [Action] {
        guard let instance = instances[id], instance.state == .ready, instance.inFlight == 0 else { return [] }
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

    /// Demand is what is being served plus what waits; capacity is `targetConcurrency` per live
    /// instance. Start instances while demand exceeds capacity, up to `maxInstances`.
    private mutating func scaleUpIfNeeded() -> [Action] {
        var actions: [Action] = []
        while inFlight + waiting.count > live * settings.targetConcurrency, live < settings.maxInstances {
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
