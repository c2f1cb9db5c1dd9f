import Foundation
import TestSupport
import Testing

/// `sllm simulate` as a user runs it: figures per policy, CSV and SVG files, traces, sweeps, a
/// comparison with a bench report, and clear refusals.
@Suite struct SimulateCLITests {
    @Test func aRunWritesItsFiguresPerPolicy() async throws {
        let home = try TemporaryDirectory("simulate")
        defer { home.remove() }
        let result = try await runSLLM(
            [
                "simulate", "--requests", "300", "--policies", "locality+migration,locality,random,kserve", "--out",
                home.file("out"), "--json", home.file("summary.json"),
            ], home: home.path)
        #expect(result.status == 0, "\(result.stderr)")
        for policy in ["locality+migration", "locality", "random", "kserve"] { #expect(result.stdout.contains(policy)) }
        let csv = try String(contentsOfFile: home.file("out/summary.csv"), encoding: .utf8)
            .split(separator: "\n")
        #expect(csv.count == 5)
        #expect(csv[0].hasPrefix("point,sweep,value,policy,requests,served,failed"))
        #expect(csv[2].contains(",locality,300,300,0,"))
        let svg = try String(contentsOfFile: home.file("out/cdf-base.svg"), encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.contains("kserve"))
        let rows =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: home.file("summary.json"))))
            as? [[String: Any]]
        #expect(rows?.count == 4)
        #expect((rows?.first?["served"] as? Int) == 300)
    }

    @Test func sweepsAndTracesAndValidation() async throws {
        let home = try TemporaryDirectory("simulate")
        defer { home.remove() }
        let sweep = try await runSLLM(
            ["simulate", "--sweep", "rate=1,4", "--policies", "locality,random", "--out", home.file("sweep")],
            home: home.path)
        #expect(sweep.status == 0, "\(sweep.stderr)")
        #expect(sweep.stdout.contains("[rate=1]") && sweep.stdout.contains("[rate=4]"))
        #expect(FileManager.default.fileExists(atPath: home.file("sweep/sweep-rate-cold-start-p99.svg")))
        #expect(
            try String(contentsOfFile: home.file("sweep/summary.csv"), encoding: .utf8).split(separator: "\n").count
                == 5)

        let trace = home.file("burst.csv")
        try Data(
            ("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                + (0..<50).map { "\($0 * 3),ChatGPT,\(20 + $0),\(5 + $0 % 7),0,Conversation log" }.joined(
                    separator: "\n"))
                .utf8
        ).write(to: URL(fileURLWithPath: trace))
        let replay = try await runSLLM(
            ["simulate", "--trace", trace, "--format", "burstgpt", "--models", "6", "--policies", "locality"],
            home: home.path)
        #expect(replay.status == 0, "\(replay.stderr)")
        #expect(replay.stdout.contains("50 requests over 147 s"))

        // A bench cluster report's configuration and cold TTFTs: replayed and compared.
        let report: [String: Any] = [
            "config": [
                "nodes": 4, "deployments": 24, "requests": 240, "rate": 2.0, "cv": 4.0, "zipf": 1.0, "seed": 1,
                "store_rate": "1600mbit", "link": "8gbit", "keep_alive": "2s", "ssd_copies": 1,
                "weight_bytes": 100_352_000, "instance_bytes": 150_683_648, "memory_budget_bytes": 301_367_296,
                "dram_cache_bytes": 317_833_216,
            ],
            "runs": [
                [
                    "policy": "locality", "coldTTFT": ["values": [0.1, 0.12, 0.9]],
                    "coldPhases": [
                        ["tier": "dram", "queue": 0.01, "load": 0.001, "engineInit": 0.001],
                        ["tier": "dram", "queue": 0.01, "load": 0.001, "engineInit": 0.001],
                        ["tier": "peer", "queue": 0.01, "load": 0.5, "engineInit": 0.001],
                    ],
                ],
                ["policy": "kserve", "coldTTFT": ["values": [3.5, 3.6, 7.0]]],
            ],
        ]
        try JSONSerialization.data(withJSONObject: report).write(to: URL(fileURLWithPath: home.file("bench.json")))
        let validate = try await runSLLM(["simulate", "--validate", home.file("bench.json")], home: home.path)
        #expect(validate.status == 0, "\(validate.stderr)")
        #expect(validate.stdout.contains("BENCH cold p50"))
        #expect(validate.stdout.contains("the 15% goal"))
        #expect(validate.stdout.contains("kserve"))
        // Per tier: the bench's cold requests (two from DRAM at a median of 0.110 s, one from a
        // peer) beside the simulation's; the baseline's run has no phases.
        #expect(validate.stdout.contains("locality: dram 2 (0.110 s) / "), "\(validate.stdout)")
        #expect(validate.stdout.contains("peer 1 (0.900 s) / "))
        #expect(validate.stdout.contains("kserve: remote - (-) / "))
    }

    @Test func badOptionsAreRefusedWithTheirName() async throws {
        let home = try TemporaryDirectory("simulate")
        defer { home.remove() }
        try Data("not json".utf8).write(to: URL(fileURLWithPath: home.file("bad.json")))
        try Data("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1\n".utf8)
            .write(to: URL(fileURLWithPath: home.file("short.csv")))
        let cases: [([String], String)] = [
            (["--sweep", "colour=1,2"], "--sweep"),
            (["--sweep", "rate=1,-2"], "not a positive number"),
            (["--link", "fast"], "--link `fast` is not a rate"),
            (["--policies", "locality,best"], "`best` is not one of"),
            (["--trace", home.file("missing.csv")], "cannot read trace file"),
            (["--trace", home.file("short.csv")], "line 2 has 2 columns"),
            (["--trace", home.file("short.csv"), "--format", "parquet"], "--format `parquet`"),
            (["--model-size", "96MiB,7GiB"], "does not fit a node's memory"),
            (["--keep-alive", "soon"], "--keep-alive"),
            (["--prompt", "0"], "--prompt `0`"),
            (["--validate", home.file("bad.json")], "is not a `sllm bench cluster --json` report"),
            (["--calibration", home.file("bad.json")], "is not a calibration"),
            (["--rate", "0"], "rate must be"),
        ]
        for (arguments, message) in cases {
            let result = try await runSLLM(["simulate"] + arguments, home: home.path)
            #expect(result.status != 0, "\(arguments)")
            #expect(result.stderr.contains(message), "\(arguments): \(result.stderr)")
        }
    }

    /// Bounded fuzz of the options' parsers (rates, sizes, durations, length distributions,
    /// numbers): `SLLM_CLI_FUZZ_ITERATIONS` runs (default 40) with random values built from
    /// numbers and units. Each run ends by itself, succeeding or refusing with a usage error
    /// (status 1 or 64), never trapping.
    @Test func mutatedOptionValuesNeverCrashTheSimulator() async throws {
        let home = try TemporaryDirectory("simulate-fuzz")
        defer { home.remove() }
        let iterations = Int(ProcessInfo.processInfo.environment["SLLM_CLI_FUZZ_ITERATIONS"] ?? "") ?? 40
        var generator = SeededGenerator(seed: UInt64(ProcessInfo.processInfo.environment["SLLM_FUZZ_SEED"] ?? "") ?? 97)
        let options = [
            "--link", "--store-rate", "--model-size", "--memory", "--dram-cache", "--ssd", "--instance-extra",
            "--keep-alive", "--prompt", "--output", "--cv", "--zipf", "--rate", "--duration",
        ]
        let numbers = ["0", "-1", "1", "2.5", "1e308", "nan", "inf", "99999999999999999999", "", " ", "0x10", "1e-300"]
        let units = ["", "gbit", "mbit", "bit", "GB/s", "MiB/s", "/s", "GiB", "B", "k", "h", "ms", "s", "m", "%"]
        let joins = ["", ":", ",", ":0", ",1:"]
        let valid: [String: [String]] = [
            "--link": ["10gbit", "1GB/s", "200MiB/s"], "--store-rate": ["400mbit", "80gbit"],
            "--model-size": ["96MiB", "96MiB:0.5,250MiB:0.5"], "--memory": ["2GiB"], "--dram-cache": ["4GiB", "0"],
            "--ssd": ["64GiB"], "--instance-extra": ["54MiB"], "--keep-alive": ["2s", "1m", "-1", "0"],
            "--prompt": ["64:1", "8"], "--output": ["32:1", "4"], "--cv": ["2", "0.5"], "--zipf": ["1.1", "0"],
            "--rate": ["2", "0.5"], "--duration": ["10s", "1m"],
        ]
        var statuses: [Int32: Int] = [:]
        for _ in 0..<iterations {
            var arguments = ["simulate", "--requests", "20", "--nodes", "2", "--models", "3", "--policies", "locality"]
            for _ in 0..<Int.random(in: 1...3, using: &generator) {
                let option = options.randomElement(using: &generator)!
                var value = ""
                if Bool.random(using: &generator) {
                    // A valid value, then a character or two changed.
                    value = valid[option]!.randomElement(using: &generator)!
                    for _ in 0..<Int.random(in: 0...2, using: &generator) where !value.isEmpty {
                        var characters = Array(value)
                        let at = Int.random(in: 0..<characters.count, using: &generator)
                        switch Int.random(in: 0..<3, using: &generator) {
                        case 0: characters[at] = Array("0123456789.:-,eE")[Int.random(in: 0..<16, using: &generator)]
                        case 1: characters.remove(at: at)
                        default: characters.insert(contentsOf: units.randomElement(using: &generator)!, at: at)
                        }
                        value = String(characters)
                    }
                } else {
                    for _ in 0..<Int.random(in: 1...2, using: &generator) {
                        value +=
                            numbers.randomElement(using: &generator)! + units.randomElement(using: &generator)!
                            + joins.randomElement(using: &generator)!
                    }
                }
                arguments += [option, value]
            }
            let result = try await runSLLM(arguments, home: home.path)
            statuses[result.status, default: 0] += 1
            #expect([0, 1, 64].contains(result.status), "\(arguments): \(result.status) \(result.stderr.suffix(400))")
            #expect(!result.stderr.contains("Fatal error"), "\(arguments): \(result.stderr.suffix(400))")
        }
        print("simulate option fuzz: \(iterations) runs, statuses \(statuses.sorted { $0.key < $1.key })")
    }
}
