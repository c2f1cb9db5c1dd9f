import Foundation
import Scheduling
import Store
import Synchronization

/// The nodes instances run on (one for `sllm serve`; a controller's grow and shrink as workers
/// join and are lost), and what is reserved of each node's memory budget. A start is placed by the registry's ``Placement`` from each node's facts (the
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
        /// Its entry in the decision log (nil for an adopted instance).
        var record: Int? = nil
        /// For a node that lacks the checkpoint: the peers to fetch it from, the first `spread`
        /// sharing the chunks (empty: the node's remote stores).
        var sources: [PeerSource] = []
        var spread = 1
        /// The model whose checkpoint the node fetches (nil when it holds it).
        var fetches: ModelName? = nil
        /// Set instead of a placement (nothing reserved): the start goes faster if this busy
        /// instance first migrates off `node` (`carryOut`), then the start is placed on `node`.
        var migrateFirst: MigrationPlan? = nil
    }

    /// An instance with requests running, as its deployment reports it (a migration candidate).
    struct Busy: Sendable {
        var id: String
        var deployment: String
        var model: ModelName
        var memoryBytes: Int
        /// Tokens its running requests hold.
        var tokens: Int
    }

    /// The nodes in the order they joined (`sllm serve`'s one node first and only).
    private(set) var nodes: [Node]
    nonisolated let placement: any Placement
    /// Whether a node lacking a checkpoint fetches it from its peers (else from its remote stores).
    nonisolated let peerFetch: Bool
    /// The policy's name, as the decision log shows it.
    nonisolated let policyName: String
    /// The latest decisions, oldest first (at most `keptDecisions`).
    private(set) var decisions: [PlacementRecord] = []
    static let keptDecisions = 1000
    private var nextDecision = 1
    private var correction = EstimateCorrection()
    /// Where ended decisions are also written.
    private let placementLog: (any PlacementLog)?
    /// Nodes that were lost or left, why and when (what `GET /admin/nodes` shows beside the live
    /// ones); the latest 256.
    private(set) var departed: [NodeID: (reason: String, at: Date, left: Bool)] = [:]
    /// Whether a placement is under way, and the placements waiting their turn (oldest first):
    /// one at a time, so each sees the memory the ones before it reserved and the fetches they
    /// began (three concurrent starts otherwise all pick the one node holding the model, and two
    /// then find its budget taken).
    private var placing = false
    private var awaitingTurn: [CheckedContinuation<Void, Never>] = []
    /// Starts waiting for memory to free up somewhere (every node's budget held by busy
    /// instances), woken when an instance stops, goes idle or a node joins.
    private var awaitingRoom: [Int: CheckedContinuation<Void, Never>] = [:] {
        didSet { roomWaiters.store(awaitingRoom.count, ordering: .sequentiallyConsistent) }
    }
    /// How many starts wait for room, readable without a turn on the actor: a request leaving
    /// its instance idle wakes them only when there are some.
    private nonisolated let roomWaiters = Atomic<Int>(0)
    private var nextRoomWaiter = 0
    /// The largest memory budget of the nodes at the last placement: an instance larger than it
    /// fits nowhere, however long it waits.
    private var largestBudget = 0
    /// Callers waiting for a first node (a controller before any worker joined).
    private var awaitingNode: [CheckedContinuation<Void, Never>] = []
    /// Each node's inventory and load rates as the last placement saw them (what an idle
    /// instance's reload would cost there).
    private var reloadRates: [NodeID: (NodeInventory, [CheckpointTier: Double])] = [:]
    /// Memory reserved on each node by instances running or starting there.
    private var reserved: [NodeID: Int] = [:]
    /// Expected seconds of the loads under way on each node (a new start queues behind them).
    private var loading: [NodeID: Double] = [:]
    /// Per model, the nodes fetching its checkpoint now, in the order they began (a later fetch
    /// of it relays from the last, so a scale-out chains instead of each node pulling from one source).
    private var fetching: [ModelName: [NodeID]] = [:]
    /// Where idle instances come from and how one is stopped (set by the deployment registry):
    /// `candidates` lists a node's idle instances; `evict` stops one and returns the bytes freed.
    private var idle:
        (
            candidates: @Sendable (NodeID) async -> [MemoryAdmission.Candidate],
            evict: @Sendable (MemoryAdmission.Candidate) async -> Int
        )?
    /// Locality-driven migration (set by the registry when `migration` is on): a node's busy
    /// instances, and how one migrates to a node.
    private var migration:
        (
            busy: @Sendable (NodeID) async -> [Busy],
            migrate: @Sendable (String, NodeID) async throws -> MigrationReport
        )?
    /// Prompt tokens per second each node's instances compute (a migration's stage 1 and
    /// requests' prefills, averaged): what recomputing a migrated instance's tokens costs there.
    private var prefillRates: [NodeID: BandwidthAverage] = [:]

    init(workers: [any Worker], placement: any Placement, peerFetch: Bool = true, log: (any PlacementLog)? = nil) {
        nodes = workers.map { Node(id: $0.node, worker: $0) }
        self.placement = placement
        self.peerFetch = peerFetch
        placementLog = log
        policyName =
            switch placement {
            case is SingleNodePlacement: "single-node"
            case is LocalityPlacement: PlacementPolicy.locality.rawValue
            case is RandomPlacement: PlacementPolicy.random.rawValue
            case is RoundRobinPlacement: PlacementPolicy.roundRobin.rawValue
            case is LeastLoadedPlacement: PlacementPolicy.leastLoaded.rawValue
            default: String(describing: type(of: placement))
            }
    }

    /// The node of `id`, nil when the pool has no such node.
    func node(_ id: NodeID) -> Node? { nodes.first { $0.id == id } }

    /// Adds a node (a worker that joined), or replaces the worker of a node of that id.
    func add(_ worker: any Worker) {
        let node = Node(id: worker.node, worker: worker)
        if let index = nodes.firstIndex(where: { $0.id == node.id }) {
            nodes[index] = node
        } else {
            nodes.append(node)
        }
        departed[node.id] = nil
        cordoned.remove(node.id)
        wakeWaiters()
        roomMayHaveFreed()
    }

    /// Takes a node out (its worker was lost, or `left`): placement no longer sees it, and what was
    /// reserved there is forgotten. Returns the node, nil when the pool had none of that id.
    @discardableResult
    func remove(_ id: NodeID, reason: String, left: Bool = false) -> Node? {
        guard let index = nodes.firstIndex(where: { $0.id == id }) else { return nil }
        reserved[id] = nil
        loading[id] = nil
        reloadRates[id] = nil
        cordoned.remove(id)
        for model in Array(fetching.keys) { stopFetching(model, on: id) }
        departed[id] = (reason, Date(), left)
        if departed.count > 256, let oldest = departed.min(by: { $0.value.at < $1.value.at })?.key {
            departed[oldest] = nil
        }
        return nodes.remove(at: index)
    }

    /// Returns once the pool has a node (at once when it has one).
    ///
    /// - Throws: `CancellationError` when the caller is cancelled first (a server stopping).
    func waitForNode() async throws {
        guard nodes.isEmpty else { return }
        await withTaskCancellationHandler {
            await withCheckedContinuation { awaitingNode.append($0) }
        } onCancel: {
            Task { await self.wakeWaiters() }
        }
        try Task.checkCancellation()
    }

    private func wakeWaiters() {
        let waiting = awaitingNode
        awaitingNode.removeAll()
        for continuation in waiting { continuation.resume() }
    }

    /// The node models are pulled to and inspected on: the first that joined and is still here;
    /// for `model`, the first node whose store or DRAM cache holds it (other nodes fetch it from
    /// a peer at their first start), else that first node.
    func catalog(holding model: ModelName? = nil) async throws(ServingError) -> any Worker {
        guard let first = nodes.first else {
            throw ServingError(
                .unavailable, "no worker has joined this controller yet; start `sllm worker --controller`")
        }
        if let model, nodes.count > 1, let holder = await holder(of: model) { return holder }
        return first.worker
    }

    /// The first node holding `model` in its store or DRAM cache, nil when none does.
    func holder(of model: ModelName) async -> (any Worker)? {
        for node in nodes {
            let inventory = await node.worker.inventory()
            if inventory.unreachable == nil, inventory.fastestTier(holding: model) != nil { return node.worker }
        }
        return nil
    }

    func setMigration(
        busy: @escaping @Sendable (NodeID) async -> [Busy],
        migrate: @escaping @Sendable (String, NodeID) async throws -> MigrationReport
    ) {
        migration = (busy, migrate)
    }

    /// A prefill measured on `node`: `tokens` computed in `seconds`.
    func observePrefill(on node: NodeID, tokens: Int, seconds: Double) {
        guard tokens >= 16, seconds > 0 else { return }
        prefillRates[node, default: BandwidthAverage()].add(Double(tokens) / seconds)
    }

    /// Carries out a migration a placement planned.
    func carryOut(_ plan: MigrationPlan) async throws -> MigrationReport {
        guard let migration else { throw ServingError(.conflict, "migration is off") }
        return try await migration.migrate(plan.victim, NodeID(plan.to))
    }

    func setIdleInstances(
        candidates: @escaping @Sendable (NodeID) async -> [MemoryAdmission.Candidate],
        evict: @escaping @Sendable (MemoryAdmission.Candidate) async -> Int
    ) {
        idle = (candidates, evict)
    }

    /// Nodes about to leave (draining): nothing new is placed there.
    private var cordoned: Set<NodeID> = []

    func cordon(_ node: NodeID) { cordoned.insert(node) }

    /// Places an instance of `deployment` serving `model` and reserves its memory on the chosen
    /// node (stopping idle instances there when admission says so). Release the reservation with
    /// `release` when the instance stops or fails to start, and call `loaded` once its load ended.
    /// A migration's target is placed `on` the node an operator named, or `avoiding` its source's.
    func place(
        _ model: ModelName, checkpointBytes: Int, memoryBytes: Int, for deployment: String, instance: String = "",
        on required: NodeID? = nil, avoiding: NodeID? = nil, mayMigrate: Bool = true
    ) async throws(ServingError) -> Placed {
        await takeTurn()
        defer { passTurn() }
        let request = PlacementRequest(
            model: model.rawValue, checkpointBytes: checkpointBytes, memoryBytes: memoryBytes)
        var facts: [NodeFacts] = []
        var budgets: [NodeID: Int] = [:]
        var unreachable: [String] = []
        var inventories: [(Node, NodeInventory)] = []
        let offered = nodes.filter { node in
            node.id != avoiding && !cordoned.contains(node.id) && required.map { $0 == node.id } ?? true
        }
        if let required, offered.isEmpty {
            throw ServingError(
                .notFound,
                "node \(required) \(required == avoiding ? "is where the instance runs already" : "is not in the cluster") (nodes: \(nodes.map(\.id.rawValue).joined(separator: ", ")))",
                param: "node")
        }
        for (node, inventory) in await Self.inventories(of: offered) {
            if let reason = inventory.unreachable {
                unreachable.append("\(node.id): unreachable (\(reason))")
                continue
            }
            inventories.append((node, inventory))
        }
        // Nodes other nodes can fetch the checkpoint from: those holding it (DRAM first), and
        // those fetching it now.
        let holders = inventories.filter { peerFetch && $0.0.worker.checkpointURL != nil }
            .compactMap { node, inventory in inventory.fastestTier(holding: model).map { (node, $0) } }
            .sorted { ($0.1 == .dram ? 0 : 1, $0.0.id.rawValue) < ($1.1 == .dram ? 0 : 1, $1.0.id.rawValue) }
            .map(\.0)
        let reachable = inventories.map(\.0)
        func fetchers() -> [Node] {
            (peerFetch ? fetching[model] ?? [] : []).compactMap { id in
                reachable.first { $0.id == id && $0.worker.checkpointURL != nil }
            }
        }
        for (node, inventory) in inventories {
            budgets[node.id] = inventory.memoryBudgetBytes
            var bandwidth: [CheckpointTier: Double] = [:]
            for tier in inventory.tiers {
                let name = CheckpointTier(tier.tier)
                if let rate = tier.loadBytesPerSecond { bandwidth[name] = rate / correction.factor(node.id, name) }
            }
            reloadRates[node.id] = (inventory, bandwidth)
            let candidates = await idleCandidates(on: node.id, besides: deployment)
            let idleBytes = candidates.reduce(0) { $0 + $1.bytes }
            // Making room stops idle instances; each costs a load at its next start.
            let roomSeconds =
                MemoryAdmission.roomSeconds(
                    bytes: memoryBytes, for: deployment, budget: inventory.memoryBudgetBytes,
                    used: reserved[node.id] ?? 0, ordered: MemoryAdmission.evictionOrder(candidates)) ?? 0
            facts.append(
                NodeFacts(
                    node: node.id.rawValue,
                    freeMemoryBytes: inventory.memoryBudgetBytes - (reserved[node.id] ?? 0),
                    idleMemoryBytes: idleBytes,
                    tier: inventory.fastestTier(holding: model).map(CheckpointTier.init)
                        ?? (holders.contains { $0.id != node.id } || fetchers().contains { $0.id != node.id }
                            ? .peer : .remote),
                    bandwidth: bandwidth, queuedSeconds: loading[node.id] ?? 0, runningJobs: inventory.runningJobs,
                    roomSeconds: roomSeconds))
        }
        largestBudget = budgets.values.max() ?? 0
        let plain = placement.place(request, on: facts)
        if mayMigrate, required == nil,
            let plan = await migrationPlan(
                request, for: deployment, facts: facts, inventories: inventories, beating: plain?.estimatedStartSeconds),
            let from = node(NodeID(plan.from))
        {
            let record = PlacementRecord(
                id: nextDecision, at: Date(), deployment: deployment, model: model.rawValue, instance: instance,
                policy: policyName + "+migration", node: plan.from, tier: plan.tier, checkpointBytes: checkpointBytes,
                queuedSeconds: 0, roomSeconds: plan.migrationSeconds, bandwidth: nil, correction: 1,
                estimatedSeconds: plan.estimatedStartSeconds, actualSeconds: nil,
                outcome:
                    "migrating \(plan.victim) to \(plan.to) first (without: \(plain.map { "\($0.node) in \($0.estimatedStartSeconds.map { String(format: "%.3f s", $0) } ?? "?")" } ?? "no node has room"))",
                candidates: [], sources: nil, spread: nil)
            nextDecision += 1
            decisions.append(record)
            if decisions.count > Self.keptDecisions { decisions.removeFirst(decisions.count - Self.keptDecisions) }
            return Placed(
                node: from, bytes: 0,
                decision: PlacementDecision(
                    node: plan.from, tier: plan.tier, estimatedStartSeconds: plan.estimatedStartSeconds),
                loadSeconds: 0, migrateFirst: plan)
        }
        guard let decision = plain, let node = node(NodeID(decision.node)) else {
            if nodes.isEmpty {
                throw ServingError(
                    .unavailable,
                    "no worker can start an instance of `\(deployment)`: none has joined\(departed.isEmpty ? "" : " (lost: \(departed.keys.map(\.rawValue).sorted().joined(separator: ", ")))")"
                )
            }
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
        // The node may have been lost while idle instances stopped to make room.
        guard self.node(node.id) != nil else {
            reserved[node.id] = nil
            throw ServingError(.workerLost, "node \(node.id) was lost while its room was being made")
        }
        let chosen = facts.first { $0.node == decision.node }
        let queued = chosen?.queuedSeconds ?? 0
        // The load alone: what later starts queue behind and what the outcome corrects (making
        // room is charged in the choice, not a load the worker measures).
        let room = chosen?.roomSeconds ?? 0
        let loadSeconds = max(0, (decision.estimatedStartSeconds ?? queued + room) - queued - room)
        loading[node.id, default: 0] += loadSeconds
        // A node that must fetch the checkpoint relays from the node fetching it last (a chain:
        // k nodes scale out in about one transfer), else spreads its ranges over the holders.
        // Read and extended with no suspension between, so concurrent starts line up.
        var sources: [PeerSource] = []
        var spread = 1
        if decision.tier == .peer || decision.tier == .remote {
            func peer(_ node: Node) -> PeerSource? {
                node.worker.checkpointURL.map { PeerSource(node: node.id, url: $0) }
            }
            let others = { (list: [Node]) in list.filter { $0.id != node.id } }
            let fetchers = fetchers()
            if let tail = others(fetchers).last {
                sources =
                    ([tail].compactMap(peer).map { PeerSource(node: $0.node, url: $0.url, relays: true) })
                    + (others(holders) + others(fetchers).dropLast().reversed()).compactMap(peer)
            } else {
                sources = others(holders).compactMap(peer)
                spread = max(1, min(Self.maxSpread, sources.count))
            }
            fetching[model, default: []].append(node.id)
        }
        let record = PlacementRecord(
            id: nextDecision, at: Date(), deployment: deployment, model: model.rawValue, instance: instance,
            policy: policyName, node: decision.node, tier: decision.tier, checkpointBytes: checkpointBytes,
            queuedSeconds: queued, roomSeconds: chosen?.roomSeconds, bandwidth: chosen?.bandwidth[decision.tier],
            correction: correction.factor(node.id, decision.tier), estimatedSeconds: decision.estimatedStartSeconds,
            actualSeconds: nil, outcome: nil,
            candidates: facts.map {
                PlacementRecord.Candidate(
                    node: $0.node, tier: $0.tier, freeBytes: $0.freeMemoryBytes, idleBytes: $0.idleMemoryBytes,
                    queuedSeconds: $0.queuedSeconds, bandwidth: $0.bandwidth[$0.tier], runningJobs: $0.runningJobs,
                    roomSeconds: $0.roomSeconds)
            },
            sources: sources.isEmpty ? nil : sources.map(\.node.rawValue), spread: sources.isEmpty ? nil : spread)
        nextDecision += 1
        decisions.append(record)
        if decisions.count > Self.keptDecisions { decisions.removeFirst(decisions.count - Self.keptDecisions) }
        return Placed(
            node: node, bytes: memoryBytes, decision: decision, loadSeconds: loadSeconds, record: record.id,
            sources: sources, spread: spread,
            fetches: decision.tier == .peer || decision.tier == .remote ? model : nil)
    }

    /// A migration that starts the request sooner than `plain` (the best start without one),
    /// under the locality policy with migration on; nil otherwise.
    private func migrationPlan(
        _ request: PlacementRequest, for deployment: String, facts: [NodeFacts],
        inventories: [(Node, NodeInventory)], beating plain: Double?
    ) async -> MigrationPlan? {
        guard let migration, let locality = placement as? LocalityPlacement else { return nil }
        var busy: [BusyInstance] = []
        for (node, _) in inventories {
            for instance in await migration.busy(node.id) where instance.deployment != deployment {
                var tiers: [String: CheckpointTier] = [:]
                var checkpointBytes = instance.memoryBytes
                for (other, inventory) in inventories {
                    guard let tier = inventory.fastestTier(holding: instance.model) else { continue }
                    tiers[other.id.rawValue] = CheckpointTier(tier)
                    for held in inventory.tiers.flatMap(\.models) where held.name == instance.model {
                        checkpointBytes = held.bytes
                    }
                }
                busy.append(
                    BusyInstance(
                        id: instance.id, node: node.id.rawValue, memoryBytes: instance.memoryBytes,
                        checkpointBytes: checkpointBytes, tokens: instance.tokens, tiers: tiers))
            }
        }
        guard !busy.isEmpty else { return nil }
        var rates: [String: Double] = [:]
        for (node, average) in prefillRates { rates[node.rawValue] = average.bytesPerSecond }
        return MigrationPlanner.plan(
            request, nodes: facts, busy: busy, beating: plain, prefillTokensPerSecond: rates,
            assumedBandwidth: locality.assumedBandwidth)
    }

    /// The nodes' inventories, asked all at once (a slow node costs its timeout, not the sum of
    /// everyone's answers), in the nodes' order.
    private static func inventories(of nodes: [Node]) async -> [(Node, NodeInventory)] {
        let asked = nodes.map { node in Task { await node.worker.inventory() } }
        var answers: [(Node, NodeInventory)] = []
        for (node, answer) in zip(nodes, asked) { answers.append((node, await answer.value)) }
        return answers
    }

    /// Waits until no other placement is under way (in the order placements arrived).
    private func takeTurn() async {
        guard placing else {
            placing = true
            return
        }
        // Resumed by `passTurn`, which hands the turn over without clearing `placing`.
        await withCheckedContinuation { awaitingTurn.append($0) }
    }

    private func passTurn() {
        if awaitingTurn.isEmpty {
            placing = false
        } else {
            awaitingTurn.removeFirst().resume()
        }
    }

    /// A node's idle instances of deployments other than `deployment`, each with the time its
    /// next start there would spend loading (its memory at the rate of the node's fastest tier
    /// holding its checkpoint, as last seen), which orders what admission stops first.
    private func idleCandidates(on node: NodeID, besides deployment: String) async -> [MemoryAdmission.Candidate] {
        let candidates = (await idle?.candidates(node) ?? []).filter { $0.deployment != deployment }
        guard let (inventory, bandwidth) = reloadRates[node] else { return candidates }
        return candidates.map { candidate in
            var candidate = candidate
            let tier =
                (try? ModelName(candidate.model)).flatMap { inventory.fastestTier(holding: $0) }.map(
                    CheckpointTier.init)
                ?? .remote
            let rate = bandwidth[tier] ?? LocalityPlacement.untilMeasured[tier] ?? 1e8
            candidate.reloadSeconds = Double(candidate.bytes) / max(rate, 1)
            return candidate
        }
    }

    /// Asks nodes to keep `model` in their DRAM cache: until `replicas` nodes hold it there, or
    /// (nil) one more than hold it now (a scale-up's signal that demand grows). Chosen among the
    /// nodes holding it on their SSD (a copy off their own disk; the others get it at their first
    /// start), most free memory budget first. Returns each node asked and how its prefetch ended.
    func keepWarm(_ model: ModelName, replicas: Int?) async -> [(NodeID, Result<LoadReport, ServingError>)] {
        let inventories = await Self.inventories(of: nodes).filter { $0.1.unreachable == nil }
        let underway = Set(warming.filter { $0.model == model }.map(\.node))
        let warm = inventories.filter { $0.1.fastestTier(holding: model) == .dram || underway.contains($0.0.id) }.count
        let target = replicas ?? (warm + 1)
        guard warm < target else { return [] }
        let chosen = inventories.filter { $0.1.fastestTier(holding: model) == .ssd && !underway.contains($0.0.id) }
            .sorted {
                ($1.1.memoryBudgetBytes - (reserved[$1.0.id] ?? 0), $0.0.id.rawValue)
                    < ($0.1.memoryBudgetBytes - (reserved[$0.0.id] ?? 0), $1.0.id.rawValue)
            }
            .prefix(target - warm).map(\.0)
        for node in chosen { warming.insert(Warming(model: model, node: node.id)) }
        defer { for node in chosen { warming.remove(Warming(model: model, node: node.id)) } }
        let prefetches = chosen.map { node in
            Task { () -> Result<LoadReport, ServingError> in
                do { return .success(try await node.worker.prefetch(model, into: .dram)) } catch {
                    return .failure(ServingError(error))
                }
            }
        }
        var outcomes: [(NodeID, Result<LoadReport, ServingError>)] = []
        for (node, prefetch) in zip(chosen, prefetches) { outcomes.append((node.id, await prefetch.value)) }
        return outcomes
    }

    /// A prefetch into a node's DRAM under way for keeping a model warm.
    private struct Warming: Hashable {
        var model: ModelName
        var node: NodeID
    }
    private var warming: Set<Warming> = []

    /// Most holders one fetch spreads its ranges over.
    static let maxSpread = 4

    /// A placed start ended: its load took `actualSeconds` (the worker's measure), or it
    /// failed. The decision log gets the outcome; the estimate's error corrects later ones.
    func ended(_ placed: Placed, actualSeconds: Double?, failure: String?) {
        guard let id = placed.record, let index = decisions.lastIndex(where: { $0.id == id }) else { return }
        decisions[index].actualSeconds = actualSeconds
        decisions[index].outcome = failure.map { "failed: \($0)" } ?? "started"
        if let actualSeconds, failure == nil {
            correction.observe(
                placed.node.id, placed.decision.tier, estimated: placed.loadSeconds, actual: actualSeconds)
        }
        placementLog?.record(decisions[index])
    }

    /// The load of a placed start ended (started or failed): later starts stop queueing behind it.
    func loaded(_ placed: Placed) {
        loading[placed.node.id] = max(0, (loading[placed.node.id] ?? 0) - placed.loadSeconds)
        if let model = placed.fetches { stopFetching(model, on: placed.node.id) }
    }

    private func stopFetching(_ model: ModelName, on node: NodeID) {
        guard var list = fetching[model], let index = list.firstIndex(of: node) else { return }
        list.remove(at: index)
        fetching[model] = list.isEmpty ? nil : list
    }

    /// Reserves memory an instance found running takes (it is there: no admission).
    func reserve(_ bytes: Int, on node: NodeID) {
        guard self.node(node) != nil else { return }
        reserved[node, default: 0] += bytes
    }

    /// Returns memory reserved on a node.
    func release(_ bytes: Int, on node: NodeID) {
        reserved[node] = max(0, (reserved[node] ?? 0) - bytes)
        roomMayHaveFreed()
    }

    /// Whether an instance of `bytes` fits some node's budget once what runs there stops (else
    /// it fits nowhere, and waiting for room is pointless).
    func couldFit(_ bytes: Int) -> Bool { bytes <= largestBudget }

    /// Waits until memory may have freed up (an instance stopped or went idle, a node joined),
    /// or `timeout` passed.
    func waitForRoom(upTo timeout: Duration) async {
        let id = nextRoomWaiter
        nextRoomWaiter += 1
        let timer = Task {
            try? await Task.sleep(for: timeout)
            self.wakeRoomWaiter(id)
        }
        await withCheckedContinuation { awaitingRoom[id] = $0 }
        timer.cancel()
    }

    private func wakeRoomWaiter(_ id: Int) {
        awaitingRoom.removeValue(forKey: id)?.resume()
    }

    /// Whether starts wait for room (``roomMayHaveFreed()`` would wake some).
    nonisolated var startsAwaitRoom: Bool { roomWaiters.load(ordering: .sequentiallyConsistent) > 0 }

    /// Wakes the starts waiting for room, to be placed again.
    func roomMayHaveFreed() {
        let waiting = awaitingRoom
        awaitingRoom.removeAll()
        for continuation in waiting.values { continuation.resume() }
    }

    /// Reserves `bytes` on `node`, stopping the idle instances `MemoryAdmission` names first.
    private func admit(_ bytes: Int, for deployment: String, on node: NodeID, budget: Int) async throws(ServingError) {
        if (reserved[node] ?? 0) + bytes > budget, let idle {
            let decision = MemoryAdmission.decide(
                bytes: bytes, for: deployment, budget: budget, used: reserved[node] ?? 0,
                idle: await idleCandidates(on: node, besides: deployment))
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
        case .peer: self = .peer
        case .remote: self = .remote
        }
    }
}
