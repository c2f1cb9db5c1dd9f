import ArgumentParser
import Foundation
import Scheduling
import Simulation

/// `sllm bench placement`: the scheduler's decision time on a large simulated cluster.
struct PlacementBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "placement",
        abstract: "Scheduler decision time at many simulated nodes and models (goal: < 1 ms p99 at 1000 × 10 000).",
        discussion: """
            Builds a simulated cluster in memory: nodes with free memory, idle instances, per-tier \
            bandwidths and queued loads; models of 0.1-16 GB, each held on a few nodes' SSDs and on \
            some nodes' DRAM. Each decision draws a model by Zipf popularity, builds every node's \
            facts from the cluster view (the tier holding it there, else a peer's, else the remote \
            store) and runs the policy's `place`, the code a controller and the simulator run. \
            Reports the time per decision, facts included, for each policy.
            """)

    @Option(help: "Simulated nodes.") var nodes = 1000
    @Option(help: "Simulated models.") var models = 10_000
    @Option(help: "Decisions timed per policy.") var decisions = 20_000
    @Option(help: "Nodes whose SSD holds each model.") var replicas = 3
    @Option(help: "Random seed.") var seed: UInt64 = 42

    func validate() throws {
        guard (1...100_000).contains(nodes), (1...1_000_000).contains(models), (1...10_000_000).contains(decisions),
            (0...nodes).contains(replicas)
        else {
            throw ValidationError(
                "--nodes 1...100000, --models 1...1000000, --decisions 1...10^7, --replicas 0...nodes")
        }
    }

    func run() throws {
        var random = SplitMix(seed: seed)
        // The cluster view: per node its figures, per model its size and where it sits.
        let base: [NodeFacts] = (0..<nodes).map { index in
            NodeFacts(
                node: String(format: "node-%05d", index), freeMemoryBytes: Int(random.unit() * 64e9),
                idleMemoryBytes: Int(random.unit() * 16e9), tier: .remote,
                bandwidth: [
                    .dram: 6e9 + random.unit() * 4e9, .ssd: 1e9 + random.unit() * 2e9, .peer: 5e8 + random.unit() * 7e8,
                    .remote: 1e8 + random.unit() * 2e8,
                ], queuedSeconds: random.unit() < 0.2 ? random.unit() * 5 : 0, runningJobs: Int(random.unit() * 8))
        }
        var sizes: [Int] = []
        var held: [[(node: Int, tier: CheckpointTier)]] = []
        for _ in 0..<models {
            sizes.append(Int(1e8 * pow(160, random.unit())))
            var places: [(Int, CheckpointTier)] = []
            for _ in 0..<replicas { places.append((Int(random.next() % UInt64(nodes)), .ssd)) }
            if random.unit() < 0.3 { places.append((Int(random.next() % UInt64(nodes)), .dram)) }
            held.append(places)
        }
        let popularity = ZipfDraw(count: models)
        print(
            "\(nodes) simulated nodes, \(models) models (Zipf popularity, \(replicas) SSD replicas each), \(decisions) decisions per policy"
        )
        print("POLICY         P50 µs   P99 µs   MAX µs   (facts of every node built per decision, then place)")
        var results: [String: Sample] = [:]
        for policy in PlacementPolicy.allCases {
            let placement = policy.placement()
            var times: [Double] = []
            times.reserveCapacity(decisions)
            var chosen = 0
            for _ in 0..<decisions {
                let model = popularity.draw(&random)
                let start = DispatchTime.now().uptimeNanoseconds
                var facts = base
                let elsewhere: CheckpointTier = held[model].isEmpty ? .remote : .peer
                for index in facts.indices { facts[index].tier = elsewhere }
                for place in held[model] where place.tier < facts[place.node].tier {
                    facts[place.node].tier = place.tier
                }
                let decision = placement.place(
                    PlacementRequest(
                        model: String(model), checkpointBytes: sizes[model], memoryBytes: sizes[model] + (1 << 30)),
                    on: facts)
                times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e3)
                if decision != nil { chosen += 1 }
            }
            let sample = Sample(values: times)
            let p50 = sample.percentile(0.5)
            let p99 = sample.percentile(0.99)
            print(
                policy.rawValue.padding(toLength: 13, withPad: " ", startingAt: 0)
                    + String(format: "%8.1f %8.1f %8.1f", p50, p99, sample.maximum)
                    + "   (\(chosen) placed, \(decisions - chosen) without room)")
            results[policy.rawValue] = Sample(values: [p50, p99])
        }
        let p99 = results[PlacementPolicy.locality.rawValue]?.values.last ?? .nan
        print(String(format: "locality p99 %.1f µs: %@ the < 1 ms goal", p99, p99 < 1000 ? "meets" : "misses"))
    }
}
