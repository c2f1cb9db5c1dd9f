public import Scheduling

/// What a simulation measured: per request its time to first token and whether it waited for a
/// cold start, and the run's counters.
public struct SimulationResult: Sendable {
    public enum Failure: String, Sendable {
        /// More requests waited than the deployment's queue takes.
        case queueFull = "queue full"
        /// No node had room for an instance.
        case noRoom = "no room"
        case deleted
    }

    public struct Counters: Sendable, Equatable {
        public var events = 0
        /// Instance starts the deployments asked for (migration targets included).
        public var starts = 0
        public var loads: [CheckpointTier: Int] = [:]
        public var loadedBytes: [CheckpointTier: Int] = [:]
        /// Idle instances stopped to make room.
        public var evictions = 0
        /// Starts that waited for room (every node's memory held by busy instances).
        public var roomWaits = 0
        public var migrationsStarted = 0
        public var migrations = 0
        public var migratedRequests = 0
        public var migrationSeconds: [Double] = []
    }

    public var policy: SimulatedPolicy
    public var counters: Counters
    /// Seconds the simulation took on this machine, and the simulated seconds it covered.
    public var wallSeconds: Double
    public var simulatedSeconds: Double
    /// Time to first token of each answered request, in arrival order, and of those that waited
    /// for a cold start.
    public var ttft: [Double]
    public var coldTTFT: [Double]
    /// In the order of `coldTTFT`: the tier the instance each cold request waited for loaded
    /// from (nil where it was not recorded).
    public var coldTiers: [CheckpointTier?]
    /// From arrival to an instance taking the request (queue and cold start; 0 when warm).
    public var startup: [Double]
    public var coldStartup: [Double]
    public var requests: Int
    public var failures: [Failure: Int]

    init(
        policy: SimulatedPolicy, requests: [SimulatedRequest], dispatchedAt: [Double], firstTokenAt: [Double],
        cold: [Bool], tiers: [CheckpointTier?], failure: [Failure?], counters: Counters, wallSeconds: Double,
        simulatedSeconds: Double
    ) {
        self.policy = policy
        self.counters = counters
        self.wallSeconds = wallSeconds
        self.simulatedSeconds = simulatedSeconds
        self.requests = requests.count
        var ttft: [Double] = []
        var coldTTFT: [Double] = []
        var coldTiers: [CheckpointTier?] = []
        var startup: [Double] = []
        var coldStartup: [Double] = []
        var failures: [Failure: Int] = [:]
        for (index, request) in requests.enumerated() {
            if let failed = failure[index] {
                failures[failed, default: 0] += 1
                continue
            }
            guard !firstTokenAt[index].isNaN else { continue }
            ttft.append(firstTokenAt[index] - request.at)
            startup.append(dispatchedAt[index] - request.at)
            if cold[index] {
                coldTTFT.append(firstTokenAt[index] - request.at)
                coldTiers.append(tiers[index])
                coldStartup.append(dispatchedAt[index] - request.at)
            }
        }
        self.ttft = ttft
        self.coldTTFT = coldTTFT
        self.coldTiers = coldTiers
        self.startup = startup
        self.coldStartup = coldStartup
        self.failures = failures
    }

    public var served: Int { ttft.count }
    public var failed: Int { failures.values.reduce(0, +) }
    public var eventsPerSecond: Double { Double(counters.events) / max(wallSeconds, 1e-9) }
}
