/// An instance with requests running, as the migration planner sees it: what moving it costs.
public struct BusyInstance: Sendable, Equatable {
    public var id: String
    /// Its node.
    public var node: String
    /// The memory it holds there (freed once it moved).
    public var memoryBytes: Int
    /// What a load of its checkpoint reads.
    public var checkpointBytes: Int
    /// Tokens its running requests hold (prompts and what they generated): what the target
    /// computes again.
    public var tokens: Int
    /// The fastest tier holding its checkpoint, by node (a node missing here must fetch it
    /// from the remote store).
    public var tiers: [String: CheckpointTier]

    public init(
        id: String, node: String, memoryBytes: Int, checkpointBytes: Int, tokens: Int,
        tiers: [String: CheckpointTier]
    ) {
        self.id = id
        self.node = node
        self.memoryBytes = memoryBytes
        self.checkpointBytes = checkpointBytes
        self.tokens = tokens
        self.tiers = tiers
    }
}

/// Move `victim` off `from` to `to`, then start the request on `from`.
public struct MigrationPlan: Sendable, Equatable {
    public var victim: String
    public var from: String
    public var to: String
    /// The new instance's tier on `from`.
    public var tier: CheckpointTier
    /// The migration's estimate (the victim's load on `to` plus recomputing its tokens), and the
    /// request's start-up estimate through it (the migration, then its own load on `from`).
    public var migrationSeconds: Double
    public var estimatedStartSeconds: Double
}

/// ServerlessLLM's locality-driven migration, as a cost model: when the node where a request
/// would start fastest lacks memory only because instances with requests running hold it, one of
/// them may move to a node with room (live migration by tokens: the target loads its model and
/// recomputes its requests' tokens), and the request then starts where its checkpoint is fast.
/// A plan is made only when its start-up estimate beats the best start without migration
/// (`plain`, nil when none can start now) by `margin`; the victim is the one whose migration is
/// cheapest, among those holding at most `maxTokens` (the migrated requests' pause budget:
/// what the target recomputes is bounded).
public enum MigrationPlanner {
    public static func plan(
        _ request: PlacementRequest, nodes: [NodeFacts], busy: [BusyInstance], beating plain: Double?,
        prefillTokensPerSecond: [String: Double], assumedPrefill: Double = 1000,
        assumedBandwidth: [CheckpointTier: Double] = LocalityPlacement.untilMeasured, margin: Double = 0.8,
        maxTokens: Int = 16_384
    ) -> MigrationPlan? {
        let byName = Dictionary(nodes.map { ($0.node, $0) }, uniquingKeysWith: { first, _ in first })
        var best: MigrationPlan?
        for node in nodes where node.freeMemoryBytes + node.idleMemoryBytes < request.memoryBytes {
            // The request's own load there, once room is made (queued loads included).
            var roomy = node
            roomy.roomSeconds = 0
            guard let ownLoad = loadEstimate(request, on: roomy, assumed: assumedBandwidth) else { continue }
            for victim in busy where victim.node == node.node && victim.tokens <= maxTokens {
                guard node.freeMemoryBytes + node.idleMemoryBytes + victim.memoryBytes >= request.memoryBytes else {
                    continue
                }
                for target in nodes where target.node != node.node {
                    guard target.freeMemoryBytes + target.idleMemoryBytes >= victim.memoryBytes else { continue }
                    var facts = byName[target.node] ?? target
                    facts.tier = victim.tiers[target.node] ?? .remote
                    // Making room there is priced for the request; the victim needs none when
                    // the free memory fits it.
                    if target.freeMemoryBytes >= victim.memoryBytes { facts.roomSeconds = 0 }
                    let load = loadEstimate(
                        PlacementRequest(
                            model: "", checkpointBytes: victim.checkpointBytes, memoryBytes: victim.memoryBytes),
                        on: facts, assumed: assumedBandwidth)
                    guard let load else { continue }
                    let rate = prefillTokensPerSecond[target.node] ?? assumedPrefill
                    let migration = load + Double(victim.tokens) / max(1, rate)
                    let start = migration + ownLoad
                    if start < best?.estimatedStartSeconds ?? .infinity {
                        best = MigrationPlan(
                            victim: victim.id, from: node.node, to: target.node, tier: node.tier,
                            migrationSeconds: migration, estimatedStartSeconds: start)
                    }
                }
            }
        }
        guard let best else { return nil }
        if let plain, best.estimatedStartSeconds >= plain * margin { return nil }
        return best
    }
}
