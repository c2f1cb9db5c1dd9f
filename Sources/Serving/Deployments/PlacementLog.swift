public import Foundation
public import Scheduling

/// One placement decision, as `sllm status --decisions` and `GET /admin/decisions` show it: the
/// node chosen, the policy, the terms of its estimate (queued loads, checkpoint bytes over the
/// bandwidth of the tier holding it, the cost of making room), every candidate's figures, and, once the start ended, the
/// time it actually took beside the estimate.
public struct PlacementRecord: Sendable, Codable, Equatable {
    public var id: Int
    public var at: Date
    public var deployment: String
    public var model: String
    public var instance: String
    public var policy: String
    public var node: String
    public var tier: CheckpointTier
    public var checkpointBytes: Int
    /// Seconds of loads queued on the node ahead of this one.
    public var queuedSeconds: Double
    /// Seconds charged for making room on the node (nil or 0: the instance fit).
    public var roomSeconds: Double?
    /// The bandwidth the estimate used (bytes/s, after the correction below), nil when none.
    public var bandwidth: Double?
    /// The factor past outcomes put on the node's tier bandwidth (estimated ÷ actual, averaged).
    public var correction: Double
    public var estimatedSeconds: Double?
    /// The load the worker measured (nil until the start ended, or when it failed).
    public var actualSeconds: Double?
    /// `started`, `failed: ...`, or nil while starting.
    public var outcome: String?
    public var candidates: [Candidate]
    /// For a checkpoint the node had to fetch: the nodes it was told to fetch from, in order (the
    /// first `spread` share the chunks; its remote stores come after them). Nil otherwise.
    public var sources: [String]?
    public var spread: Int?

    public struct Candidate: Sendable, Codable, Equatable {
        public var node: String
        public var tier: CheckpointTier
        public var freeBytes: Int
        public var idleBytes: Int
        public var queuedSeconds: Double
        public var bandwidth: Double?
        public var runningJobs: Int
        /// Seconds charged for making room (the reloads of the idle instances stopped there).
        public var roomSeconds: Double?
    }
}

/// Where decisions are kept beyond the server's memory (the cluster's PostgreSQL).
public protocol PlacementLog: Sendable {
    /// A decision whose start ended (its outcome set).
    func record(_ decision: PlacementRecord)
}

/// Per node and tier, how far the estimates were off: an exponentially weighted average of
/// actual ÷ estimated load time, which divides the bandwidth later estimates use.
struct EstimateCorrection {
    static let weight = 0.3
    private var ratios: [String: Double] = [:]

    private static func key(_ node: NodeID, _ tier: CheckpointTier) -> String { "\(node.rawValue)/\(tier.rawValue)" }

    func factor(_ node: NodeID, _ tier: CheckpointTier) -> Double { ratios[Self.key(node, tier)] ?? 1 }

    /// Folds in one outcome (ignored when either time is too small to compare).
    mutating func observe(_ node: NodeID, _ tier: CheckpointTier, estimated: Double, actual: Double) {
        guard estimated > 0.001, actual > 0.001, estimated.isFinite, actual.isFinite else { return }
        let ratio = min(20, max(0.05, actual / estimated))
        let key = Self.key(node, tier)
        // The ratio observed is of an estimate already corrected: fold the old factor back in.
        let previous = ratios[key] ?? 1
        let observed = min(20, max(0.05, ratio * previous))
        ratios[key] = previous + Self.weight * (observed - previous)
    }
}
