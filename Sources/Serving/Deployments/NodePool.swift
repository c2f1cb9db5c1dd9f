import Foundation
import Scheduling
import Store

/// The nodes instances run on (one for `sllm serve`), and what is reserved of each node's
/// memory budget. A start is placed by the registry's ``Placement`` from each node's facts (the
/// fastest tier holding the model, the node's measured load bandwidths, its free memory and what
/// its idle instances hold, the loads already under way there), then admitted on the chosen node
/// by ``MemoryAdmission``: idle instances of other deployments on that node stop first, least
/// recently used first (as Ollama unloads idle models); a start that cannot fit fails with
/// `insufficientMemory` naming the figures, and stops nothing.
actor NodePool {
    /// A node and the worker that runs it.
    struct Node: Sendable {
        let id: NodeID
        let worker: any Worker
    }

    /// A start placed and admitted: where it runs, what it reserved and what the policy expected.
    struct Placed: Sendable {
        let node: Node
        let bytes: Int
        let decision: PlacementDecision
        /// Seconds the load should take at the rate the estimate used (0 when none was known).
        let loadSeconds: Double
    }

    nonisolated let nodes: [Node]
    nonisolated let placement: any Placement
    /// Memory reserved on each node by instances running or starting there.
    private var reserved: [NodeID: Int] = [:]
    /// Expected seconds of the loads under way on each node (a new start queues behind them).
    private var loading: [NodeID: Double] = [:]
    /// Where idle instances come from and how one is stopped (set by the deployment registry):
    /// `candidates` lists a node's idle instances; `evict` stops one and returns the bytes freed.
    private var idle:
        (
            candidates: @Sendable (NodeID) async -> [MemoryAdmission.Candidate],
            evict: @Sendable (MemoryAdmission.Candidate) async -> Int
        )?

    init(workers: [any Worker], placement: any Placement) {
        precondition(!workers.isEmpty, "a node pool needs a worker")
        nodes = workers.map { Node(id: $0.node, worker: $0) }
        self.placement = placement
    }

    /// The node of `id`, nil when the pool has no such node.
    nonisolated func node(_ id: NodeID) -> Node? { nodes.first { $0.id == id } }

    func setIdleInstances(
        candidates: @escaping @Sendable (NodeID) async -> [MemoryAdmission.Candidate],
        evict: @escaping @Sendable (MemoryAdmission.Candidate) async -> Int
    ) {
        idle = (candidates, evict)
    }

    /// Places an instance of `deployment` serving `model` and reserves its memory on the chosen
    /// node (stopping idle instances there when admission says so). Release the reservation with
    /// `release` when the instance stops or fails to start, and call `loaded` once its load ended.
    func place(
        _ model: ModelName, checkpointBytes: Int, memoryBytes: Int, for deployment: String
    ) async throws(ServingError) -> Placed {
        let request = PlacementRequest(
            model: model.rawValue, checkpointBytes: checkpointBytes, memoryBytes: memoryBytes)
        var facts: [NodeFacts] = []
        var budgets: [NodeID: Int] = [:]
        var unreachable: [String] = []
        for node in nodes {
            let inventory = await node.worker.inventory()
            if let reason = inventory.unreachable {
                unreachable.append("\(node.id): unreachable (\(reason))")
                continue
            }
            budgets[node.id] = inventory.memoryBudgetBytes
            let idleBytes = (await idle?.candidates(node.id) ?? []).filter { $0.deployment != deployment }
                .reduce(0) { $0 + $1.bytes }
            var bandwidth: [CheckpointTier: Double] = [:]
            for tier in inventory.tiers {
                if let rate = tier.loadBytesPerSecond { bandwidth[CheckpointTier(tier.tier)] = rate }
            }
            facts.append(
                NodeFacts(
                    node: node.id.rawValue,
                    freeMemoryBytes: inventory.memoryBudgetBytes - (reserved[node.id] ?? 0),
                    idleMemoryBytes: idleBytes,
                    tier: inventory.fastestTier(holding: model).map(CheckpointTier.init) ?? .remote,
                    bandwidth: bandwidth, queuedSeconds: loading[node.id] ?? 0))
        }
        guard let decision = placement.place(request, on: facts), let node = node(NodeID(decision.node)) else {
            let figures = facts.map {
                "\($0.node): \(formatBytes(Int64($0.freeMemoryBytes))) free, \(formatBytes(Int64($0.idleMemoryBytes))) idle, checkpoint \($0.tier == .remote ? "not held" : "in \($0.tier.rawValue)")"
            }
            throw ServingError(
                .insufficientMemory,
                "no node can start an instance of `\(deployment)` (needs \(formatBytes(Int64(memoryBytes)))): \((figures + unreachable).joined(separator: "; "))"
            )
        }
        let budget = budgets[node.id] ?? 0
        try await admit(memoryBytes, for: deployment, on: node.id, budget: budget)
        let queued = facts.first { $0.node == decision.node }?.queuedSeconds ?? 0
        let loadSeconds = max(0, (decision.estimatedStartSeconds ?? queued) - queued)
        loading[node.id, default: 0] += loadSeconds
        return Placed(node: node, bytes: memoryBytes, decision: decision, loadSeconds: loadSeconds)
    }

    /// The load of a placed start ended (started or failed): later starts stop queueing behind it.
    func loaded(_ placed: Placed) {
        loading[placed.node.id] = max(0, (loading[placed.node.id] ?? 0) - placed.loadSeconds)
    }

    /// Returns memory reserved on a node.
    func release(_ bytes: Int, on node: NodeID) {
        reserved[node] = max(0, (reserved[node] ?? 0) - bytes)
    }

    /// Reserves `bytes` on `node`, stopping the idle instances `MemoryAdmission` names first.
    private func admit(_ bytes: Int, for deployment: String, on node: NodeID, budget: Int) async throws(ServingError) {
        if (reserved[node] ?? 0) + bytes > budget, let idle {
            let decision = MemoryAdmission.decide(
                bytes: bytes, for: deployment, budget: budget, used: reserved[node] ?? 0,
                idle: await idle.candidates(node))
            if case .evict(let victims) = decision {
                for victim in victims { _ = await idle.evict(victim) }
            }
        }
        // Evictions awaited: another start may have taken the room meanwhile, so check again.
        let used = reserved[node] ?? 0
        guard used + bytes <= budget else {
            throw ServingError(
                .insufficientMemory,
                "an instance of `\(deployment)` needs \(formatBytes(Int64(bytes))) but \(formatBytes(Int64(budget - used))) of the \(nodes.count == 1 ? "node's" : "node \(node)'s") \(formatBytes(Int64(budget))) memory budget is free (raise --memory-budget, lower --context or --target-concurrency, or delete a deployment)"
            )
        }
        reserved[node] = used + bytes
    }
}

extension CheckpointTier {
    /// The scheduler's name for a store tier.
    init(_ tier: Tier) {
        switch tier {
        case .dram: self = .dram
        case .ssd: self = .ssd
        case .remote: self = .remote
        }
    }
}
