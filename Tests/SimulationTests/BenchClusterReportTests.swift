import Foundation
import Scheduling
import TestSupport
import Testing

@testable import Simulation

/// The report `sllm simulate --validate` replays: read whole, every configuration value checked
/// against the simulator's bounds before anything is built from it (a report is a file anyone
/// can hand over), and mutated reports never crash the reader.
@Suite struct BenchClusterReportTests {
    static func report(config: [String: Any] = [:], runs: [[String: Any]]? = nil) throws -> Data {
        var base: [String: Any] = [
            "nodes": 4, "deployments": 6, "requests": 120, "rate": 2, "cv": 1, "zipf": 1.1, "seed": 42,
            "weight_bytes": 96_000_000, "instance_bytes": 150_000_000, "memory_budget_bytes": 400_000_000,
            "dram_cache_bytes": 300_000_000, "ssd_copies": 1, "link": "1gbit", "store_rate": "400mbit",
            "keep_alive": "2s",
        ]
        base.merge(config) { $1 }
        let run: [String: Any] = [
            "policy": "locality", "coldTTFT": ["values": [0.2, 0.3, 0.5]], "warmTTFT": ["values": [0.05, 0.06]],
            "coldPhases": [
                ["tier": "dram", "queue": 0.001, "load": 0.01, "engineInit": 0.001, "at": 0.5],
                ["tier": "remote", "queue": 0.002, "load": 1.5, "engineInit": 0.001, "at": 1.25],
                ["tier": "peer", "queue": "soon", "load": 0.3, "engineInit": 0.001],
            ],
            "loads": [["tier": "remote", "bytes": 96_000_000, "seconds": 1.5], ["tier": "remote", "bytes": -1]],
        ]
        return try JSONSerialization.data(withJSONObject: ["config": base, "runs": runs ?? [run]])
    }

    @Test func aReportIsReadWithItsRunsAndPhases() throws {
        let report = try BenchClusterReport(data: try Self.report())
        #expect(report.config.nodes == 4 && report.config.seed == 42 && report.config.link == "1gbit")
        #expect(report.config.instanceBytes - report.config.weightBytes == 54_000_000)
        let run = try #require(report.runs.first)
        #expect(run.policy == "locality" && run.coldTTFT == [0.2, 0.3, 0.5] && run.warmTTFT == [0.05, 0.06])
        #expect(run.coldPhases.map { $0?.tier } == ["dram", "remote", nil], "a phase lacking a number is left out")
        #expect(run.coldPhases.map { $0?.at } == [0.5, 1.25, nil])
        #expect(run.loads == [.init(tier: "remote", bytes: 96_000_000, seconds: 1.5)])
    }

    /// The store's rate while crowded comes from the remote fetches' spans: requests that
    /// shared one start count once, requests sent at an unknown time not at all, and only the
    /// moments with enough fetches under way.
    @Test func theStoresCrowdedRateIsMeasuredFromOverlappingFetches() throws {
        func remote(at: Double?, queue: Double = 0, load: Double) -> [String: Any] {
            var phase: [String: Any] = ["tier": "remote", "queue": queue, "load": load, "engineInit": 0.001]
            if let at { phase["at"] = at }
            return phase
        }
        // 100 MB each: A from 0 to 4 s (25 MB/s), B from 0 to 2 s (50 MB/s), C from 0.5 to 4 s
        // (queued 0.5 s; 28.57 MB/s). Three run from 0.5 to 2 s: 103.57 MB/s. A request that
        // joined A's start (the same load, sent later) and one sent at an unknown time count not.
        let phases: [[String: Any]] = [
            remote(at: 0, load: 4), remote(at: 0, load: 2), remote(at: 0, queue: 0.5, load: 3.5),
            remote(at: 0.7, load: 4), remote(at: nil, load: 3),
            ["tier": "ssd", "queue": 0, "load": 9, "engineInit": 0, "at": 0], remote(at: -1, load: 8),
        ]
        let run: [String: Any] = [
            "policy": "kserve", "coldTTFT": ["values": phases.map { _ in 1.0 }], "warmTTFT": ["values": [0.05]],
            "coldPhases": phases, "loads": [],
        ]
        let report = try BenchClusterReport(data: try Self.report(runs: [run]))
        let read = try #require(report.runs.first)
        #expect(read.coldPhases.compactMap { $0?.at } == [0, 0, 0, 0.7, 0])
        #expect(read.coldPhases.last == .some(nil), "a negative time leaves the phase out")
        let crowded = try #require(BenchClusterReport.crowdedStoreRate(runs: report.runs, bytes: 100_000_000, crowd: 3))
        #expect(abs(crowded.seconds - 1.5) < 1e-9)
        #expect(abs(crowded.bytesPerSecond - (25e6 + 50e6 + 100e6 / 3.5)) < 1)
        let two = try #require(BenchClusterReport.crowdedStoreRate(runs: report.runs, bytes: 100_000_000, crowd: 2))
        #expect(abs(two.seconds - 4) < 1e-9)
        #expect(BenchClusterReport.crowdedStoreRate(runs: report.runs, bytes: 100_000_000, crowd: 4) == nil)
    }

    @Test func valuesOutsideTheSimulatorsBoundsAreRefusedNamingThem() throws {
        let cases: [([String: Any], String)] = [
            (["nodes": 1e12], "`nodes`"), (["nodes": 0], "`nodes`"), (["seed": -1], "`seed`"),
            (["deployments": 2.5], "`deployments`"), (["weight_bytes": 1e300], "`weight_bytes`"),
            (["instance_bytes": 10], "smaller than its `weight_bytes`"), (["rate": -2], "`rate`"),
            (["ssd_copies": 9], "`ssd_copies`"), (["link": ""], "lacks `link`"), (["cv": "high"], "lacks `cv`"),
        ]
        for (config, message) in cases {
            #expect {
                _ = try BenchClusterReport(data: try Self.report(config: config))
            } throws: { "\($0)".contains(message) }
        }
        #expect {
            _ = try BenchClusterReport(data: try Self.report(runs: [["coldTTFT": ["values": [1, "x"]]]]))
        } throws: { "\($0)".contains("not a number of seconds") }
        #expect(throws: SimulationError.self) { _ = try BenchClusterReport(data: Data("[1, 2]".utf8)) }
    }

    /// Bounded fuzz (`SLLM_FUZZ_ITERATIONS`, default 300): mutated reports parse within their
    /// bounds or fail with a SimulationError.
    @Test func mutatedReportsParseWithinBoundsOrFail() throws {
        let iterations = Fuzz.iterations(default: 300)
        var generator = SplitMix(seed: 71)
        let valid = Array(try Self.report())
        let pieces = [
            "-", "1e308", "0", "9999999999999999999", "null", "\"", "[", "{", "}", ",", "true", "-0.5", "NaN",
        ].map { Array($0.utf8) }
        for _ in 0..<iterations {
            var bytes = valid
            Fuzz.mutate(&bytes, edits: 1...5, pieces: pieces, using: &generator)
            do {
                let report = try BenchClusterReport(data: Data(bytes))
                let config = report.config
                #expect((1...100_000).contains(config.nodes) && (0...config.nodes).contains(config.ssdCopies))
                #expect(config.instanceBytes >= config.weightBytes && config.rate > 0 && config.rate.isFinite)
                #expect(report.runs.allSatisfy { $0.coldTTFT.allSatisfy { $0.isFinite && $0 >= 0 } })
                #expect(
                    report.runs.allSatisfy { $0.coldPhases.allSatisfy { ($0?.at ?? 0).isFinite && ($0?.at ?? 0) >= 0 } }
                )
                if let crowded = BenchClusterReport.crowdedStoreRate(
                    runs: report.runs, bytes: config.weightBytes, crowd: 1)
                {
                    #expect(crowded.bytesPerSecond.isFinite && crowded.bytesPerSecond > 0 && crowded.seconds > 0)
                }
            } catch {
                #expect(!error.message.isEmpty)
            }
        }
    }
}
