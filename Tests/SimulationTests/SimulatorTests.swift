import Foundation
import Scheduling
import Testing

@testable import Simulation

@Suite struct SimulatorTests {
    static let megabyte = 1_000_000

    /// `sllm bench cluster`'s configuration: 4 nodes, 24 models of 96 MB, memory for two
    /// instances and DRAM for three checkpoints per node, one SSD copy each.
    static func benchCluster(calibration: Calibration = Calibration()) -> SimulatedCluster {
        let model = 96 * megabyte
        return SimulatedCluster(
            nodes: 4, memoryBytes: 2 * (model + 48 << 20), dramCacheBytes: 3 * model + (16 << 20), ssdBytes: 1 << 40,
            linkBytesPerSecond: 1e9, remoteBytesPerSecond: 200e6, modelBytes: Array(repeating: model, count: 24),
            calibration: calibration)
    }

    static func scaling(keepAlive: Double = 2, maxInstances: Int = 1) -> ScalingSettings {
        var scaling = ScalingSettings()
        scaling.keepAlive = .duration(.milliseconds(Int64(keepAlive * 1000)))
        scaling.maxInstances = maxInstances
        return scaling
    }

    static func run(
        _ cluster: SimulatedCluster, _ policy: SimulatedPolicy, _ requests: [SimulatedRequest],
        scaling: ScalingSettings = scaling()
    ) throws -> SimulationResult {
        let simulator = try Simulator(cluster: cluster, policy: policy, scaling: scaling, requests: requests)
        simulator.checksInvariants = true
        let result = simulator.run()
        #expect(simulator.violations.isEmpty, "\(policy): \(simulator.violations.prefix(3))")
        #expect(simulator.awaitingRoom.isEmpty)
        #expect(simulator.instances.allSatisfy { $0.phase == .stopped }, "every instance stops by its keep-alive")
        return result
    }

    @Test func everyPolicyAnswersEveryRequestAndKeepsItsBooks() throws {
        let requests = SyntheticWorkload(
            requests: 400, rate: 3, cv: 4, zipf: 1, models: 24, promptTokens: LengthDistribution(median: 30, sigma: 1),
            outputTokens: LengthDistribution(median: 40, sigma: 1), seed: 5
        ).generate()
        for policy in SimulatedPolicy.allCases {
            let result = try Self.run(Self.benchCluster(), policy, requests)
            #expect(result.served + result.failed == requests.count)
            #expect(result.failed == 0, "\(policy): \(result.failures)")
            #expect(result.ttft.allSatisfy { $0 > 0 && $0.isFinite })
            #expect(result.coldTTFT.count <= result.ttft.count)
            #expect(
                result.counters.loads.values.reduce(0, +) == result.counters.starts + result.counters.migrationsStarted)
            // The same inputs give the same run (random placement is seeded).
            let again = try Self.run(Self.benchCluster(), policy, requests)
            #expect(again.ttft == result.ttft)
            #expect(again.counters == result.counters)
        }
    }

    @Test func theBaselineFetchesEveryStartFromTheRemoteStore() throws {
        let requests = SyntheticWorkload(requests: 200, rate: 2, cv: 4, models: 24, seed: 2).generate()
        let baseline = try Self.run(Self.benchCluster(), .kserve, requests)
        #expect(baseline.counters.loads.keys.sorted() == [.remote])
        let locality = try Self.run(Self.benchCluster(), .locality, requests)
        #expect(locality.counters.loads[.remote] == nil, "every checkpoint is on one node's SSD")
        #expect((locality.counters.loads[.dram] ?? 0) > 0)
        // Locality reads nearby tiers: its cold starts end sooner than the baseline's downloads.
        #expect(percentile(locality.coldTTFT, 0.99) < percentile(baseline.coldTTFT, 0.5))
    }

    @Test func requestsWithinTheKeepAliveAreWarm() throws {
        let spaced = (0..<10).map { SimulatedRequest(at: Double($0), model: 3, promptTokens: 4, outputTokens: 2) }
        let warm = try Self.run(Self.benchCluster(), .locality, spaced, scaling: Self.scaling(keepAlive: 5))
        #expect(warm.counters.starts == 1)
        #expect(warm.coldTTFT.count == 1)
        // The first request pays the SSD load of model 3 on node 3 (its one copy).
        let calibration = Calibration()
        let expected =
            Double(96 * Self.megabyte) / calibration.ssdBytesPerSecond + calibration.startSeconds
            + calibration.requestSeconds
            + 4 / calibration.prefill(bytes: 96 * Self.megabyte) + 1 / calibration.decode(bytes: 96 * Self.megabyte)
        #expect(abs(warm.coldTTFT[0] - expected) < 1e-9)
        let cold = try Self.run(Self.benchCluster(), .locality, spaced, scaling: Self.scaling(keepAlive: 0.5))
        #expect(cold.counters.starts == 10)
        #expect(cold.coldTTFT.count == 10)
        // After the first start the checkpoint is in that node's DRAM cache.
        #expect(cold.counters.loads == [.ssd: 1, .dram: 9])
    }

    @Test func concurrentColdRequestsCoalesceOnOneStart() throws {
        let burst = (0..<6).map { SimulatedRequest(at: Double($0) * 0.001, model: 0, promptTokens: 1, outputTokens: 1) }
        let result = try Self.run(Self.benchCluster(), .locality, burst)
        #expect(result.counters.starts == 1)
        #expect(result.coldTTFT.count == 6)
    }

    @Test func remoteFetchesShareTheStoresLink() throws {
        // Two nodes fetch at once from a 100 MB/s store: each gets half.
        var cluster = Self.benchCluster()
        cluster.ssdCopies = 0
        cluster.remoteBytesPerSecond = 100e6
        let two = [
            SimulatedRequest(at: 0, model: 0, promptTokens: 1, outputTokens: 1),
            SimulatedRequest(at: 0, model: 1, promptTokens: 1, outputTokens: 1),
        ]
        let result = try Self.run(cluster, .kserve, two)
        let transfer = Double(96 * Self.megabyte) / 50e6
        for ttft in result.ttft { #expect(abs(ttft - transfer) < 0.05, "\(ttft)") }
    }

    @Test func fetchesOnOneNodeRunSideBySide() throws {
        // One node with room for two instances starts two models at once, both from a 100 MB/s
        // store: as a worker does, it fetches them side by side (each at half the store's rate,
        // both done at once), not one after the other (the first at 0.96 s, the second at 1.92 s).
        let model = 96 * Self.megabyte
        let cluster = SimulatedCluster(
            nodes: 1, memoryBytes: 2 * (model + 48 << 20), dramCacheBytes: 0, ssdBytes: 1 << 40,
            linkBytesPerSecond: 1e9, remoteBytesPerSecond: 100e6, modelBytes: [model, model], ssdCopies: 0)
        let two = [
            SimulatedRequest(at: 0, model: 0, promptTokens: 1, outputTokens: 1),
            SimulatedRequest(at: 0, model: 1, promptTokens: 1, outputTokens: 1),
        ]
        let result = try Self.run(cluster, .kserve, two)
        #expect(result.counters.loads == [.remote: 2])
        let transfer = Double(model) / 50e6
        for ttft in result.ttft { #expect(abs(ttft - transfer) < 0.05, "\(ttft)") }
    }

    @Test func aCheckpointARunningInstanceMapsStaysInTheDRAMCache() {
        // Room for two: the least recently used goes unless an instance maps it.
        var cache = TierCache(capacity: 200)
        #expect(cache.insert(1, bytes: 100, now: 0).isEmpty)
        #expect(cache.insert(2, bytes: 100, now: 1).isEmpty)
        #expect(cache.insert(3, bytes: 100, now: 2, pinned: [1]) == [2])
        #expect(cache.contains(1) && cache.contains(3))
        // Both held by running instances: the new one is not kept, nothing is pushed out.
        #expect(cache.insert(4, bytes: 100, now: 3, pinned: [1, 3]).isEmpty)
        #expect(!cache.contains(4) && cache.contains(1) && cache.contains(3))
        #expect(cache.insert(4, bytes: 100, now: 4) == [1])
    }

    @Test func startsWaitForRoomWhileEveryNodeIsBusy() throws {
        // One node, room for one instance: the second model waits for the first's request to end.
        let cluster = SimulatedCluster(
            nodes: 1, memoryBytes: 150 * Self.megabyte, dramCacheBytes: 0, ssdBytes: 1 << 40, linkBytesPerSecond: 1e9,
            remoteBytesPerSecond: 1e9, modelBytes: [100 * Self.megabyte, 100 * Self.megabyte],
            instanceExtraBytes: 10 * Self.megabyte, ssdCopies: 1)
        let requests = [
            SimulatedRequest(at: 0, model: 0, promptTokens: 1, outputTokens: 340),
            SimulatedRequest(at: 0.5, model: 1, promptTokens: 1, outputTokens: 1),
        ]
        let result = try Self.run(cluster, .locality, requests)
        #expect(result.failed == 0)
        #expect(result.counters.roomWaits == 1)
        #expect(result.counters.evictions == 1, "the first instance, idle once its request ended, is stopped for room")
        // The second waited until the first request's end (about 2 s), then loaded.
        #expect(result.coldTTFT[1] > 1.5)
    }

    /// Node 0 holds model 0 in DRAM but runs a long request of model 1; node 1 holds model 1 on
    /// its SSD and is free; model 0 is slow to fetch anywhere else. With migration the request
    /// for model 0 moves model 1's request to node 1 and starts on node 0 within seconds;
    /// without, it fetches model 0 from the peer.
    @Test func migrationStartsTheRequestWhereItsCheckpointIsFast() throws {
        let size = 100 * Self.megabyte
        let calibration = Calibration(ssdBytesPerSecond: 100e6, peerBytesPerSecond: 10e6)
        let cluster = SimulatedCluster(
            nodes: 4, memoryBytes: 110 * Self.megabyte, dramCacheBytes: 300 * Self.megabyte, ssdBytes: 1 << 40,
            linkBytesPerSecond: 1e9, remoteBytesPerSecond: 10e6, modelBytes: Array(repeating: size, count: 6),
            instanceExtraBytes: 10 * Self.megabyte, ssdCopies: 1, calibration: calibration)
        let requests = [
            // Model 0 runs on node 0 (its SSD): afterwards it is in node 0's DRAM.
            SimulatedRequest(at: 0, model: 0, promptTokens: 4, outputTokens: 1),
            SimulatedRequest(at: 0.05, model: 2, promptTokens: 4, outputTokens: 5000),  // node 2, long
            SimulatedRequest(at: 0.1, model: 5, promptTokens: 4, outputTokens: 600),  // node 1 until ~5 s
            // Model 1 finds node 1 busy: it is fetched to node 0 (free again) from node 1's SSD.
            SimulatedRequest(at: 2, model: 1, promptTokens: 100, outputTokens: 5000),
            SimulatedRequest(at: 15, model: 0, promptTokens: 4, outputTokens: 1),
        ]
        let scaling = Self.scaling(keepAlive: 0.5)
        let plain = try Self.run(cluster, .locality, requests, scaling: scaling)
        let migrating = try Self.run(cluster, .localityMigration, requests, scaling: scaling)
        #expect(plain.counters.migrations == 0)
        #expect(migrating.counters.migrations == 1)
        #expect(migrating.counters.migratedRequests == 1)
        #expect(migrating.failed == 0 && plain.failed == 0)
        let plainStart = plain.ttft[4]
        let migratedStart = migrating.ttft[4]
        #expect(plainStart > 9, "a 100 MB peer fetch at 10 MB/s")
        #expect(migratedStart < plainStart * 0.5, "\(migratedStart) vs \(plainStart)")
        // The moved request keeps its first token; it ends as it would have.
        #expect(migrating.ttft[3] == plain.ttft[3])
    }

    @Test func settingsOutOfRangeAreRefused() {
        var cluster = Self.benchCluster()
        cluster.memoryBytes = 10
        #expect(throws: SimulationError.self) {
            _ = try Simulator(cluster: cluster, policy: .locality, scaling: ScalingSettings(), requests: [])
        }
        #expect(throws: SimulationError.self) {
            _ = try Simulator(
                cluster: Self.benchCluster(), policy: .locality, scaling: ScalingSettings(),
                requests: [SimulatedRequest(at: 0, model: 24, promptTokens: 1, outputTokens: 1)])
        }
        var calibration = Calibration()
        calibration.ssdBytesPerSecond = -1
        #expect(throws: SimulationError.self) {
            _ = try Simulator(
                cluster: Self.benchCluster(calibration: calibration), policy: .locality, scaling: ScalingSettings(),
                requests: [])
        }
    }

    /// Calibration files as a stranger might write them: each is refused, or runs a simulation.
    @Test func fuzzedCalibrationsAreRefusedOrRun() throws {
        var random = SplitMix(seed: 17)
        let keys = [
            "dram_bytes_per_second", "ssd_bytes_per_second", "peer_bytes_per_second", "remote_bytes_per_second",
            "start_seconds", "request_seconds", "reference_bytes", "prefill_tokens_per_second",
            "decode_tokens_per_second", "unknown",
        ]
        let values = ["0", "-1", "1e400", "1e-300", "1", "3600", "1e9", "\"fast\"", "null", "[]", "96500000", "1e15"]
        let requests = (0..<20).map {
            SimulatedRequest(at: Double($0) * 0.3, model: $0 % 4, promptTokens: 8, outputTokens: 4)
        }
        var ran = 0
        for _ in 0..<300 {
            let fields = (0..<Int(random.next() % 4)).map { _ in
                "\"\(keys[Int(random.next() % UInt64(keys.count))])\": \(values[Int(random.next() % UInt64(values.count))])"
            }
            let text = "{" + fields.joined(separator: ", ") + "}"
            guard let calibration = try? JSONDecoder().decode(Calibration.self, from: Data(text.utf8)) else { continue }
            do { try calibration.validate() } catch {
                #expect(error.message.hasPrefix("calibration: "), "\(text)")
                continue
            }
            let result = try Self.run(Self.benchCluster(calibration: calibration), .locality, requests)
            #expect(result.served == requests.count, "\(text)")
            ran += 1
        }
        #expect(ran > 0)
    }

    @Test func plotsAreSVGWithOneLinePerSeries() {
        let plot = SVGPlot(
            title: "a <b> & c", xLabel: "x", yLabel: "y", logX: true, steps: true,
            series: [
                SVGPlot.Series(name: "locality", points: SimulationResult.cdf([0.1, 0.2, 0.4, 1.5])),
                SVGPlot.Series(name: "random", points: SimulationResult.cdf([0.3, 0.9, 3])),
                SVGPlot.Series(name: "empty", points: []),
            ]
        ).render()
        #expect(plot.hasPrefix("<svg"))
        #expect(plot.hasSuffix("</svg>\n"))
        #expect(plot.components(separatedBy: "<polyline").count == 4)
        #expect(plot.contains("a &lt;b&gt; &amp; c"))
        #expect(!plot.contains("nan") && !plot.contains("inf"))
        let fractions: [Double] = SimulationResult.cdf([3, 1, 2]).map(\.y)
        let expected: [Double] = [1.0 / 3, 2.0 / 3, 1]
        #expect(fractions == expected)
    }
}
