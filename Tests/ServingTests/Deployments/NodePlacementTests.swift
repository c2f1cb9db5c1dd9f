import Engine
import Foundation
import Logging
import Scheduling
import Store
import Synchronization
import TestSupport
import Testing

@testable import Serving

/// The registry's placement seam with two real in-process workers (separate stores and DRAM
/// caches, both holding SmolLM2): each start goes where the policy says, runs and stops there.
@Suite(.serialized) struct NodePlacementTests {
    let smol = try! ModelName("smol")

    /// A worker named `node` over its own data directory, with `budget` bytes for instances.
    static func worker(_ directory: TemporaryDirectory, node: String, budget: Int) async throws -> LocalWorker {
        let home = directory.file("\(node)/home")
        try await RealModel.link(into: home, as: "smol")
        var configuration = ServeConfiguration(dataDirectory: home)
        configuration.threads = 1
        configuration.dramCacheBytes = 512 << 20
        configuration.cacheDirectory = directory.file("\(node)/cache")
        configuration.memoryBudgetBytes = budget
        var logger = Logger(label: "test.worker")
        logger.logLevel = .warning
        return try LocalWorker(configuration: configuration, node: NodeID(node), logger: logger)
    }

    /// A registry over `workers` (its state in a directory of its own) with `smol` deployed.
    static func registry(
        _ directory: TemporaryDirectory, workers: [any Worker], context: Int = 512,
        configure: (inout ServeConfiguration) -> Void = { _ in }
    ) async throws -> DeploymentRegistry {
        let nodes = workers.map(\.node.rawValue).joined(separator: "+")
        var configuration = ServeConfiguration(dataDirectory: directory.file("control-\(nodes)"))
        configuration.defaultModel = ""
        configure(&configuration)
        try FileManager.default.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true)
        var logger = Logger(label: "test.registry")
        logger.logLevel = .warning
        let registry = DeploymentRegistry(
            configuration: configuration, workers: workers,
            placement: LocalityPlacement(assumedBandwidth: [.dram: 8e9, .ssd: 1e9]),
            state: try SQLiteStateStore(path: configuration.dataDirectory + "/state.sqlite"),
            metrics: ServingMetrics(), logger: logger)
        try await registry.restore()
        _ = try await registry.deploy(DeploymentRequest(model: "smol", contextLength: context))
        return registry
    }

    /// Runs one short greedy job through the deployment; returns the node it ran on.
    static func runOnce(_ deployment: Deployment) async throws -> NodeID {
        let lease = try await deployment.acquire()
        let job = GenerationJob(
            id: UUID().uuidString, prompt: [1, 2, 3], sampling: SamplingParameters(), maxTokens: 2, stop: [],
            logprobs: nil)
        var tokens = 0
        for try await event in deployment.run(job, on: lease, keepAlive: nil) {
            if case .token = event { tokens += 1 }
        }
        #expect(tokens > 0, "the job ran on the placed instance")
        return lease.node.id
    }

    @Test func startsGoWhereTheCheckpointIsFastestAndFits() async throws {
        let directory = try TemporaryDirectory("placement")
        defer { directory.remove() }
        let a = try await Self.worker(directory, node: "a", budget: 4 << 30)
        let b = try await Self.worker(directory, node: "b", budget: 4 << 30)
        let registry = try await Self.registry(directory, workers: [a, b])
        let deployment = try await registry.deployment(named: "smol")

        // Both hold it on SSD: equal estimates go to the node id. With it in b's DRAM, b.
        _ = try await b.prefetch(smol, into: .dram)
        #expect(try await Self.runOnce(deployment) == NodeID("b"))
        let status = try #require(await deployment.snapshot().instances.first)
        #expect(status.node == NodeID("b") && status.tier == .dram)
        #expect(status.estimatedStartSeconds != nil && status.loadSeconds != nil)
        #expect(await b.inventory().instances == [status.id])
        #expect(await a.inventory().instances.isEmpty)

        // Stopped on the node it ran on; then a holds it in DRAM and b no longer does: a.
        #expect(try await registry.unload("smol").stopped == 1)
        #expect(await b.inventory().instances.isEmpty)
        #expect(try await b.evict(smol, from: .dram) > 0)
        _ = try await a.prefetch(smol, into: .dram)
        #expect(try await Self.runOnce(deployment) == NodeID("a"))
        #expect(await a.inventory().instances.count == 1)
        #expect(await b.inventory().instances.isEmpty)

        // Both decisions are logged with their terms, every candidate, and the time each took.
        let decisions = await registry.pool.decisions
        #expect(decisions.map(\.node) == ["b", "a"] && decisions.map(\.tier) == [.dram, .dram])
        #expect(decisions.allSatisfy { $0.outcome == "started" && $0.actualSeconds != nil && $0.candidates.count == 2 })
        #expect(
            decisions.allSatisfy { $0.policy == "locality" && $0.deployment == "smol" && $0.estimatedSeconds != nil })
        #expect(decisions[0].candidates.first { $0.node == "a" }?.tier == .ssd)
        await registry.stopAll()
    }

    /// Outcomes correct later estimates: loads that took twice the estimate halve the bandwidth
    /// used next (an exponentially weighted average, bounded), per node and tier.
    @Test func estimateErrorsFeedBack() {
        var correction = EstimateCorrection()
        #expect(correction.factor(NodeID("n"), .ssd) == 1)
        for _ in 0..<30 {
            correction.observe(NodeID("n"), .ssd, estimated: 1 * correction.factor(NodeID("n"), .ssd), actual: 2)
        }
        #expect(abs(correction.factor(NodeID("n"), .ssd) - 2) < 0.01)
        #expect(correction.factor(NodeID("n"), .dram) == 1 && correction.factor(NodeID("m"), .ssd) == 1)
        for _ in 0..<50 { correction.observe(NodeID("n"), .ssd, estimated: 1, actual: 1e6) }
        #expect(correction.factor(NodeID("n"), .ssd) <= 20)
        correction.observe(NodeID("n"), .dram, estimated: 0, actual: 5)
        #expect(correction.factor(NodeID("n"), .dram) == 1)
    }

    @Test func aNodeWithoutTheMemoryIsPassedOverAndNoneFittingIsRefusedWithFigures() async throws {
        let directory = try TemporaryDirectory("placement-memory")
        defer { directory.remove() }
        let small = try await Self.worker(directory, node: "small", budget: 16 << 20)
        let large = try await Self.worker(directory, node: "large", budget: 4 << 30)
        // The checkpoint is in the small node's DRAM, but an instance does not fit its budget.
        _ = try await small.prefetch(smol, into: .dram)
        let registry = try await Self.registry(directory, workers: [small, large])
        #expect(try await Self.runOnce(try await registry.deployment(named: "smol")) == NodeID("large"))
        await registry.stopAll()

        let tiny = try await Self.worker(directory, node: "tiny", budget: 8 << 20)
        let refusing = try await Self.registry(directory, workers: [small, tiny])
        let error = await #expect(throws: ServingError.self) {
            _ = try await refusing.deployment(named: "smol").acquire()
        }
        let message = error?.message ?? ""
        #expect(message.contains("no node can start an instance of `smol`"), "\(message)")
        #expect(message.contains("small: 16.0 MiB free") && message.contains("tiny: 8.0 MiB free"), "\(message)")
        await refusing.stopAll()
    }

    /// Starts placed at the same moment take turns: each sees the memory the ones before it
    /// reserved. Three nodes with room for one instance each, the checkpoint in one node's DRAM,
    /// inventories answered to concurrent askers at once: one start lands on each, not three on
    /// the DRAM node with two of them then refused.
    @Test func concurrentStartsSeeTheMemoryTheOthersReserved() async throws {
        let directory = try TemporaryDirectory("placement-turns")
        defer { directory.remove() }
        var workers: [SlowWorker] = []
        for node in ["a", "b", "c"] {
            workers.append(SlowWorker(try await Self.worker(directory, node: node, budget: 150 << 20), delay: .zero))
        }
        _ = try await workers[0].prefetch(smol, into: .dram)
        let registry = try await Self.registry(directory, workers: workers)
        for worker in workers { worker.gatherInventories(3, within: .milliseconds(20)) }
        // Rounds, since how concurrent tasks interleave varies from run to run.
        for _ in 0..<30 {
            let placed = try await withThrowingTaskGroup(of: NodePool.Placed.self) { group in
                for _ in 0..<3 {
                    group.addTask {
                        try await registry.pool.place(
                            smol, checkpointBytes: 100 << 20, memoryBytes: 100 << 20, for: "smol")
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(Set(placed.map(\.node.id.rawValue)) == ["a", "b", "c"])
            #expect(placed.first { $0.node.id == NodeID("a") }?.decision.tier == .dram)
            for start in placed {
                await registry.pool.loaded(start)
                await registry.pool.release(start.bytes, on: start.node.id)
            }
        }
        await registry.stopAll()
    }

    /// A deployment whose minimum failed to start (its worker failed the load) starts it again
    /// after a backoff.
    @Test func aMinimumThatFailedToStartIsStartedAgain() async throws {
        let directory = try TemporaryDirectory("placement-retry")
        defer { directory.remove() }
        let node = SlowWorker(try await Self.worker(directory, node: "n", budget: 1 << 30), delay: .zero)
        node.failingStarts.store(1, ordering: .relaxed)
        let registry = try await Self.registry(directory, workers: [node])
        _ = try await registry.deploy(
            DeploymentRequest(model: "smol", name: "kept", minInstances: 1, contextLength: 512))
        let deployment = try await registry.deployment(named: "kept")
        var ready: [InstanceStatus] = []
        for _ in 0..<300 {
            ready = await deployment.snapshot().instances.filter { $0.state == "ready" }
            if !ready.isEmpty { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(ready.count == 1, "\(ready)")
        #expect(node.starts.load(ordering: .relaxed) == 2, "one failed start, then one that started")
        await registry.stopAll()
    }

    /// A start that finds the node's memory held waits for room (as Ollama queues a request until
    /// a model can be unloaded) and starts once it frees; one larger than every budget fails at once.
    @Test func aStartWaitsForRoomHeldByBusyInstances() async throws {
        let directory = try TemporaryDirectory("placement-room")
        defer { directory.remove() }
        let node = try await Self.worker(directory, node: "n", budget: 1 << 30)
        let registry = try await Self.registry(directory, workers: [node])
        // Something else holds all but 16 MiB of the node's budget for now.
        let taken = (1 << 30) - (16 << 20)
        await registry.pool.reserve(taken, on: node.node)
        let deployment = try await registry.deployment(named: "smol")
        let waiting = Task { try await Self.runOnce(deployment) }
        var starting = false
        for _ in 0..<200 where !starting {
            starting = await deployment.snapshot().instances.contains { $0.state == "starting" }
            if !starting { try await Task.sleep(for: .milliseconds(20)) }
        }
        try await Task.sleep(for: .milliseconds(300))
        let states = await deployment.snapshot().instances.map(\.state)
        #expect(starting && states == ["starting"], "still waiting")
        await registry.pool.release(taken, on: node.node)
        #expect(try await waiting.value == node.node)

        // Larger than the node's whole budget: refused at once, naming the figures.
        let tiny = try await Self.worker(directory, node: "tiny", budget: 8 << 20)
        let refusing = try await Self.registry(directory, workers: [tiny])
        let error = await #expect(throws: ServingError.self) {
            _ = try await refusing.deployment(named: "smol").acquire()
        }
        #expect(error?.message.contains("no node can start an instance of `smol`") == true)
        await refusing.stopAll()
        await registry.stopAll()
    }

    /// `dram_replicas` keeps a deployment's checkpoint in that many nodes' DRAM caches with no
    /// instance running, chosen among the nodes holding it on their SSD; a copy a node lets go
    /// of is put back at the next pass.
    @Test func deploymentsKeepTheirCheckpointWarm() async throws {
        let directory = try TemporaryDirectory("placement-warm")
        defer { directory.remove() }
        let a = try await Self.worker(directory, node: "a", budget: 4 << 30)
        let b = try await Self.worker(directory, node: "b", budget: 4 << 30)
        let registry = try await Self.registry(directory, workers: [a, b])
        func warm() async -> [String] {
            var nodes: [String] = []
            for worker in [a, b] where await worker.inventory().fastestTier(holding: smol) == .dram {
                nodes.append(worker.node.rawValue)
            }
            return nodes
        }
        /// Runs a pass (one may be under way already: a deploy or update starts one) and waits
        /// for the copies to be what `expected` says.
        func settles(_ expected: ([String]) -> Bool) async throws -> [String] {
            for _ in 0..<100 {
                await registry.keepWarm()
                let nodes = await warm()
                if expected(nodes) { return nodes }
                try await Task.sleep(for: .milliseconds(50))
            }
            return await warm()
        }
        #expect(await warm().isEmpty)
        _ = try await registry.update("smol", with: DeploymentRequest(dramReplicas: 1))
        #expect(try await settles { $0.count == 1 }.count == 1)
        _ = try await registry.update("smol", with: DeploymentRequest(dramReplicas: 2))
        #expect(try await settles { $0.count == 2 } == ["a", "b"])
        // b's cache lets it go; the next pass puts it back. Nothing ran meanwhile. The pass that
        // the update started may still hold the copy it just made (its prefetch returns after
        // the inventory shows it): the eviction waits for that, as an operator would retry.
        var evicted = 0
        for _ in 0..<100 {
            do {
                evicted = try await b.evict(smol, from: .dram)
                break
            } catch  where "\(error)".contains("in use") {
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        #expect(evicted > 0)
        #expect(await warm() == ["a"])
        #expect(try await settles { $0.count == 2 } == ["a", "b"])
        let running = await a.inventory().instances + b.inventory().instances
        #expect(running.isEmpty)
        let refused = await #expect(throws: ServingError.self) {
            _ = try await registry.update("smol", with: DeploymentRequest(dramReplicas: 65))
        }
        #expect(refused?.message.contains("DRAM replicas must be 0...64") == true)
        await registry.stopAll()
    }
}
