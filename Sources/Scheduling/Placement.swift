/// Where a model's checkpoint sits on a node, fastest first.
public enum CheckpointTier: String, Sendable, Codable, CaseIterable, Comparable {
    case dram, ssd, remote

    public static func < (a: CheckpointTier, b: CheckpointTier) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// What a scheduler knows of one node when it places an instance start.
public struct NodeFacts: Sendable, Equatable {
    public var node: String
    /// Memory the node's budget has free for instances.
    public var freeMemoryBytes: Int
    /// The fastest tier holding the model on this node (`.remote` when it must be fetched).
    public var tier: CheckpointTier
    /// Measured load bandwidth per tier, bytes per second.
    public var bandwidth: [CheckpointTier: Double]
    /// Seconds of loads queued ahead of this one on the node.
    public var queuedSeconds: Double

    public init(
        node: String, freeMemoryBytes: Int, tier: CheckpointTier, bandwidth: [CheckpointTier: Double],
        queuedSeconds: Double = 0
    ) {
        self.node = node
        self.freeMemoryBytes = freeMemoryBytes
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

/// The node chosen and the start-up time expected there.
public struct PlacementDecision: Sendable, Equatable {
    public var node: String
    public var estimatedStartSeconds: Double
}

/// Chooses a node for an instance start from per-node facts. The cluster scheduler and the
/// simulator plug their policies in here.
public protocol Placement: Sendable {
    /// The node to start on, or nil when none can take it.
    func place(_ request: PlacementRequest, on nodes: [NodeFacts]) -> PlacementDecision?
}

/// ServerlessLLM's locality-aware choice: the node with the lowest estimated start-up time,
/// queued loads plus the checkpoint's bytes over the node's bandwidth from its fastest tier
/// holding it, among nodes with the memory free. Ties go to the faster tier, then the node id.
public struct LocalityPlacement: Placement {
    public init() {}

    /// Seconds until an instance of `request` could run on `node`; nil when the node lacks memory
    /// or a bandwidth for its tier.
    public func estimate(_ request: PlacementRequest, on node: NodeFacts) -> Double? {
        guard node.freeMemoryBytes >= request.memoryBytes, let rate = node.bandwidth[node.tier], rate > 0 else {
            return nil
        }
        return node.queuedSeconds + Double(request.checkpointBytes) / rate
    }

    public func place(_ request: PlacementRequest, on nodes: [NodeFacts]) -> PlacementDecision? {
        nodes.compactMap { node in estimate(request, on: node).map { (node, $0) } }
            .min { ($0.1, $0.0.tier, $0.0.node) < ($1.1, $1.0.tier, $1.0.node) }
            .map { PlacementDecision(node: $0.0.node, estimatedStartSeconds: $0.1) }
    }
}
