import Synchronization

/// Where a model's checkpoint sits on a node, fastest first.
public enum CheckpointTier: String, Sendable, Codable, CaseIterable, Comparable {
    /// `peer`: another node holds the checkpoint (or is fetching it) and sends it over the link.
    case dram, ssd, peer, remote

    public static func < (a: CheckpointTier, b: CheckpointTier) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// What a scheduler knows of one node when it places an instance start.
public struct NodeFacts: Sendable, Equatable {
    public var node: String
    /// Memory the node's budget has free for instances.
    public var freeMemoryBytes: Int
    /// Memory held by idle instances, which memory admission may stop to make room.
    public var idleMemoryBytes: Int
    /// The fastest tier holding the model on this node (`.remote` when it must be fetched).
    public var tier: CheckpointTier
    /// Measured load bandwidth per tier, bytes per second.
    public var bandwidth: [CheckpointTier: Double]
    /// Seconds of loads queued ahead of this one on the node.
    public var queuedSeconds: Double
    /// Generations running on the node's instances (what `least-loaded` compares).
    public var runningJobs: Int
    /// What making room costs on this node when its free memory does not fit the instance: the
    /// seconds the idle instances admission would stop there will take to load again at their
    /// next start. Zero when the instance fits.
    public var roomSeconds: Double

    public init(
        node: String, freeMemoryBytes: Int, idleMemoryBytes: Int = 0, tier: CheckpointTier,
        bandwidth: [CheckpointTier: Double], queuedSeconds: Double = 0, runningJobs: Int = 0, roomSeconds: Double = 0
    ) {
        self.roomSeconds = roomSeconds
        self.runningJobs = runningJobs
        self.node = node
        self.freeMemoryBytes = freeMemoryBytes
        self.idleMemoryBytes = idleMemoryBytes
        self.tier = tier
        self.bandwidth = bandwidth
        self.queuedSeconds = queuedSeconds
    }
}

/// An instance to place: its checkpoint's bytes and the memory it needs once running.
public struct PlacementRequest: Sendable, Equatable {
    public var model: String
    public var checkpointBytes: Int
    public var memoryBytes: Int

    public init(model: String, checkpointBytes: Int, memoryBytes: Int) {
        self.model = model
        self.checkpointBytes = checkpointBytes
        self.memoryBytes = memoryBytes
    }
}

/// The node chosen and the start-up time expected there (nil when the policy does not estimate
/// one, as the one-node placement before the node's first load).
public struct PlacementDecision: Sendable, Equatable {
    public var node: String
    public var tier: CheckpointTier
    public var estimatedStartSeconds: Double?

    public init(node: String, tier: CheckpointTier, estimatedStartSeconds: Double?) {
        self.node = node
        self.tier = tier
        self.estimatedStartSeconds = estimatedStartSeconds
    }
}

/// Chooses a node for an instance start from per-node facts. The cluster scheduler and the
/// simulator plug their policies in here.
public protocol Placement: Sendable {
    /// The node to start on, or nil when none can take it.
    func place(_ request: PlacementRequest, on nodes: [NodeFacts]) -> PlacementDecision?
}

/// Seconds to load `request`'s checkpoint on `node` from its fastest tier holding it, after
/// the loads queued there, plus what making room there costs; nil without a bandwidth for that
/// tier (measured, else `assumed`).
func loadEstimate(
    _ request: PlacementRequest, on node: NodeFacts, assumed: [CheckpointTier: Double] = [:]
) -> Double? {
    guard let rate = node.bandwidth[node.tier] ?? assumed[node.tier], rate > 0 else { return nil }
    return node.queuedSeconds + Double(request.checkpointBytes) / rate + node.roomSeconds
}

/// One node's placement, `sllm serve`'s: the instance goes to the node there is (the first,
/// when given several) whatever its memory, since memory admission on that node decides
/// whether idle instances stop or the start is refused with the figures. The estimate is the
/// locality estimate once the node has measured a load from that tier.
public struct SingleNodePlacement: Placement {
    public init() {}

    public func place(_ request: PlacementRequest, on nodes: [NodeFacts]) -> PlacementDecision? {
        guard let node = nodes.first else { return nil }
        return PlacementDecision(
            node: node.node, tier: node.tier, estimatedStartSeconds: loadEstimate(request, on: node))
    }
}

/// ServerlessLLM's locality-aware choice: the node with the lowest estimated start-up time,
/// queued loads plus the checkpoint's bytes over the node's bandwidth from its fastest tier
/// holding it plus the cost of making room (``NodeFacts/roomSeconds``), among nodes whose free memory (with what idle instances hold, which admission
/// may stop) fits the instance. Ties go to the faster tier, then the node id. A tier a node has
/// not measured yet is estimated at `assumedBandwidth` (a node with neither is left out, as is
/// a node that would have to fetch a checkpoint from a tier without a rate).
public struct LocalityPlacement: Placement {
    public var assumedBandwidth: [CheckpointTier: Double]

    public init(assumedBandwidth: [CheckpointTier: Double] = [:]) {
        self.assumedBandwidth = assumedBandwidth
    }

    /// Seconds until an instance of `request` could run on `node`; nil when the node lacks
    /// memory or a bandwidth for its tier.
    public func estimate(_ request: PlacementRequest, on node: NodeFacts) -> Double? {
        guard node.freeMemoryBytes + node.idleMemoryBytes >= request.memoryBytes else { return nil }
        return loadEstimate(request, on: node, assumed: assumedBandwidth)
    }

    public func place(_ request: PlacementRequest, on nodes: [NodeFacts]) -> PlacementDecision? {
        // One pass, no copies of the facts: a controller places among thousands of nodes.
        var best: (index: Int, seconds: Double)?
        for index in nodes.indices {
            guard let seconds = estimate(request, on: nodes[index]) else { continue }
            if let current = best {
                guard
                    seconds < current.seconds
                        || (seconds == current.seconds
                            && (nodes[index].tier, nodes[index].node) < (
                                nodes[current.index].tier, nodes[current.index].node
                            ))
                else { continue }
            }
            best = (index, seconds)
        }
        return best.map {
            PlacementDecision(node: nodes[$0.index].node, tier: nodes[$0.index].tier, estimatedStartSeconds: $0.seconds)
        }
    }
}

extension LocalityPlacement {
    /// Rates assumed for tiers a node has not measured yet (DRAM 8 GB/s, SSD 1 GB/s, a peer over
    /// the cluster's network 500 MB/s, the remote store 100 MB/s): what a controller places with
    /// until its workers' own loads have run.
    public static let untilMeasured: [CheckpointTier: Double] = [.dram: 8e9, .ssd: 1e9, .peer: 5e8, .remote: 1e8]
}

/// The placement policies a controller can run (`--placement`), for comparing them.
public enum PlacementPolicy: String, Sendable, Codable, CaseIterable {
    /// ``LocalityPlacement``: the lowest estimated start-up time (the default).
    case locality
    /// Any node with room, uniformly at random.
    case random
    /// The nodes with room in turn.
    case roundRobin = "round-robin"
    /// The node with room running the fewest generations (then the most free memory).
    case leastLoaded = "least-loaded"

    /// The policy's placement; every one estimates the start-up time of the node it picks with
    /// the locality estimate (so the decision log compares estimate and outcome for all).
    /// `seed` makes the random policy's draws repeat.
    public func placement(
        assumedBandwidth: [CheckpointTier: Double] = LocalityPlacement.untilMeasured, seed: UInt64? = nil
    ) -> any Placement {
        switch self {
        case .locality: LocalityPlacement(assumedBandwidth: assumedBandwidth)
        case .random: RandomPlacement(assumedBandwidth: assumedBandwidth, seed: seed)
        case .roundRobin: RoundRobinPlacement(assumedBandwidth: assumedBandwidth)
        case .leastLoaded: LeastLoadedPlacement(assumedBandwidth: assumedBandwidth)
        }
    }
}

/// Whether the node's memory (with what idle instances hold) fits the request.
private func fits(_ request: PlacementRequest, _ node: NodeFacts) -> Bool {
    node.freeMemoryBytes + node.idleMemoryBytes >= request.memoryBytes
}

/// Nodes whose memory (with what idle instances hold) fits the request, each with the locality
/// estimate of its start-up time where one can be made.
private func roomy(_ request: PlacementRequest, _ nodes: [NodeFacts], assumed: [CheckpointTier: Double]) -> [(
    NodeFacts, Double?
)] {
    nodes.filter { fits(request, $0) }.map { ($0, loadEstimate(request, on: $0, assumed: assumed)) }
}

/// A node with room, chosen uniformly at random (a baseline: it ignores where checkpoints sit).
/// With a seed its draws repeat (the simulator's runs do).
public struct RandomPlacement: Placement {
    public var assumedBandwidth: [CheckpointTier: Double]
    private let draws: SeededDraws?

    public init(assumedBandwidth: [CheckpointTier: Double] = [:], seed: UInt64? = nil) {
        self.assumedBandwidth = assumedBandwidth
        draws = seed.map(SeededDraws.init)
    }

    public func place(_ request: PlacementRequest, on nodes: [NodeFacts]) -> PlacementDecision? {
        // Count the nodes with room, draw one, find it: no copies of the facts.
        var count = 0
        for index in nodes.indices where fits(request, nodes[index]) { count += 1 }
        guard count > 0 else { return nil }
        var rank = draws?.index(below: count) ?? Int.random(in: 0..<count)
        for index in nodes.indices where fits(request, nodes[index]) {
            if rank == 0 {
                return PlacementDecision(
                    node: nodes[index].node, tier: nodes[index].tier,
                    estimatedStartSeconds: loadEstimate(request, on: nodes[index], assumed: assumedBandwidth))
            }
            rank -= 1
        }
        return nil
    }
}

/// Seeded uniform draws shared by copies of a placement.
private final class SeededDraws: Sendable {
    private let generator: Mutex<SplitMix>

    init(seed: UInt64) { generator = Mutex(SplitMix(seed: seed)) }

    func index(below count: Int) -> Int {
        Int(generator.withLock { $0.next() } % UInt64(count))
    }
}

/// The nodes with room in turn, in the order of their ids (Ray Serve's and KServe's spread).
public final class RoundRobinPlacement: Placement {
    public let assumedBandwidth: [CheckpointTier: Double]
    private let next = Mutex<Int>(0)

    public init(assumedBandwidth: [CheckpointTier: Double] = [:]) { self.assumedBandwidth = assumedBandwidth }

    public func place(_ request: PlacementRequest, on nodes: [NodeFacts]) -> PlacementDecision? {
        let candidates = roomy(request, nodes, assumed: assumedBandwidth).sorted { $0.0.node < $1.0.node }
        guard !candidates.isEmpty else { return nil }
        let turn = next.withLock { value in
            defer { value &+= 1 }
            return value
        }
        let (node, estimate) = candidates[Int(UInt(bitPattern: turn) % UInt(candidates.count))]
        return PlacementDecision(node: node.node, tier: node.tier, estimatedStartSeconds: estimate)
    }
}

/// The node with room running the fewest generations, then with the most free memory, then by id.
public struct LeastLoadedPlacement: Placement {
    public var assumedBandwidth: [CheckpointTier: Double]

    public init(assumedBandwidth: [CheckpointTier: Double] = [:]) { self.assumedBandwidth = assumedBandwidth }

    public func place(_ request: PlacementRequest, on nodes: [NodeFacts]) -> PlacementDecision? {
        // One pass, no copies of the facts.
        var best: Int?
        for index in nodes.indices where fits(request, nodes[index]) {
            if let current = best {
                let key = (nodes[index].runningJobs, -nodes[index].freeMemoryBytes)
                let bestKey = (nodes[current].runningJobs, -nodes[current].freeMemoryBytes)
                guard key < bestKey || (key == bestKey && nodes[index].node < nodes[current].node) else { continue }
            }
            best = index
        }
        return best.map {
            PlacementDecision(
                node: nodes[$0].node, tier: nodes[$0].tier,
                estimatedStartSeconds: loadEstimate(request, on: nodes[$0], assumed: assumedBandwidth))
        }
    }
}
