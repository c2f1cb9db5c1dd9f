import Scheduling

/// The simulated cluster: identical nodes, their links, the remote store, and the models.
public struct SimulatedCluster: Sendable, Equatable {
    public var nodes: Int
    /// Each node's memory budget for instances (weights and KV cache).
    public var memoryBytes: Int
    /// Each node's DRAM checkpoint cache.
    public var dramCacheBytes: Int
    /// Each node's SSD checkpoint store.
    public var ssdBytes: Int
    /// Each node's network link (what a peer or remote fetch into it is held under).
    public var linkBytesPerSecond: Double
    /// The remote store's link, shared by every fetch from it at once (equal shares).
    public var remoteBytesPerSecond: Double
    /// Each model's checkpoint size (`models.count` models).
    public var modelBytes: [Int]
    /// What an instance holds beyond its checkpoint (KV cache, scratch).
    public var instanceExtraBytes: Int
    /// Nodes whose SSD holds each checkpoint at the start, round robin from the model's index.
    public var ssdCopies: Int
    public var calibration: Calibration

    public init(
        nodes: Int, memoryBytes: Int, dramCacheBytes: Int, ssdBytes: Int, linkBytesPerSecond: Double,
        remoteBytesPerSecond: Double, modelBytes: [Int], instanceExtraBytes: Int = 48 << 20, ssdCopies: Int = 1,
        calibration: Calibration = Calibration()
    ) {
        self.nodes = nodes
        self.memoryBytes = memoryBytes
        self.dramCacheBytes = dramCacheBytes
        self.ssdBytes = ssdBytes
        self.linkBytesPerSecond = linkBytesPerSecond
        self.remoteBytesPerSecond = remoteBytesPerSecond
        self.modelBytes = modelBytes
        self.instanceExtraBytes = instanceExtraBytes
        self.ssdCopies = ssdCopies
        self.calibration = calibration
    }

    public var models: Int { modelBytes.count }

    public func validate() throws(SimulationError) {
        guard (1...100_000).contains(nodes) else { throw SimulationError("nodes must be 1...100000 (got \(nodes))") }
        guard (1...10_000_000).contains(models) else {
            throw SimulationError("models must be 1...10000000 (got \(models))")
        }
        guard memoryBytes > 0, dramCacheBytes >= 0, ssdBytes >= 0, instanceExtraBytes >= 0 else {
            throw SimulationError("a node's memory must be positive, its DRAM cache and SSD 0 or more")
        }
        guard let smallest = modelBytes.min(), smallest > 0, let largest = modelBytes.max(), largest < 1 << 50
        else { throw SimulationError("model sizes must be positive and below 1 PiB") }
        guard largest + instanceExtraBytes <= memoryBytes else {
            throw SimulationError(
                "the largest model (\(largest) bytes) with its \(instanceExtraBytes) extra bytes does not fit a node's memory (\(memoryBytes))"
            )
        }
        for (name, value) in [("link", linkBytesPerSecond), ("remote store", remoteBytesPerSecond)]
        where !(value.isFinite && value > 0 && value < 1e15) {
            throw SimulationError("the \(name) bandwidth must be a positive number of bytes/s (got \(value))")
        }
        guard (0...nodes).contains(ssdCopies) else {
            throw SimulationError("SSD copies must be 0...nodes (got \(ssdCopies))")
        }
        try calibration.validate()
    }

    /// The rates the scheduler estimates each tier at: the calibration's, fetches held under
    /// the node's link and a remote fetch under the store's whole rate.
    var bandwidth: [CheckpointTier: Double] {
        [
            .dram: calibration.dramBytesPerSecond, .ssd: calibration.ssdBytesPerSecond,
            .peer: min(calibration.peerBytesPerSecond, linkBytesPerSecond),
            .remote: min(linkBytesPerSecond, remoteBytesPerSecond, calibration.remoteBytesPerSecond),
        ]
    }
}

/// The placement policies a simulation compares.
public enum SimulatedPolicy: String, Sendable, CaseIterable, Codable {
    /// ``LocalityPlacement`` with ``MigrationPlanner``: a cold start may first move a busy
    /// instance off the node where its checkpoint is fastest.
    case localityMigration = "locality+migration"
    case locality
    case random
    case roundRobin = "round-robin"
    case leastLoaded = "least-loaded"
    /// A KServe-like baseline: least-loaded placement, no peer fetch, nothing kept on a node once
    /// its instance stops, so every cold start downloads from the remote store.
    case kserve

    var placementPolicy: PlacementPolicy {
        switch self {
        case .localityMigration, .locality: .locality
        case .random: .random
        case .roundRobin: .roundRobin
        case .leastLoaded, .kserve: .leastLoaded
        }
    }
}
