import ArgumentParser
import Foundation
import NIOHTTP1
import Scheduling
import Simulation
import Store
import Synchronization

/// `sllm bench migrate`: live migration as a client sees it. `sllm controller` over two `sllm
/// worker` processes on loopback; per prompt length, the same greedy stream runs unmigrated and
/// then migrated to the other worker once `--after` tokens came. It reports the longest gap the
/// migrated stream saw against the unmigrated streams' inter-token p99, the migration's own
/// times (the target's start, stage 1, the whole), and whether the texts are identical.
struct MigrateBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract:
            "Live migration: the pause a moved stream sees against its normal inter-token gaps, and the migration's time by prompt length."
    )

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Model (pulled if missing).") var model = ModelSource.defaultModel.name
    @Option(help: "Comma-separated prompt lengths, in tokens.") var lengths = "32,256,1024"
    @Option(
        help:
            "Tokens each stream generates, at least (a longer prompt's stream gets twice its length beyond --after, so that the stream outlasts stage 1)."
    ) var tokens = 256
    @Option(help: "Migrate once the stream has given this many tokens.") var after = 24
    @Option(help: "Rounds (each runs every length, unmigrated then migrated).") var rounds = 3
    @Option(help: "Compute threads per instance.") var threads = 1
    @Option(help: "Write the figures as JSON here.") var json: String?
    @Flag(
        name: .customLong("cold-start"),
        help:
            "Instead: the cold start of a request whose fastest node is full with a busy instance, with migration, loading elsewhere and waiting (needs root and iproute2: hosts made of network namespaces)."
    ) var coldStartOnly = false
    @Option(help: "With --cold-start: each worker's link, both ways (tc rate).") var link = "200mbit"
    @Flag(
        name: .customLong("rebalance"),
        help:
            "Instead: --streams greedy streams on one instance, then a scale-up to two instances on two nodes, with rebalancing off and on: when the last stream ends, and the gaps after the scale-up."
    ) var rebalanceOnly = false
    @Option(help: "With --rebalance: concurrent streams (the deployment's target concurrency).") var streams = 4

    func validate() throws {
        guard tokens > after + 8, after >= 1 else {
            throw ValidationError("--tokens must exceed --after by more than 8, and --after be at least 1")
        }
        guard rounds >= 1, threads >= 1 else { throw ValidationError("--rounds and --threads must be at least 1") }
        guard streams >= 2 else { throw ValidationError("--streams must be at least 2") }
        guard !(coldStartOnly && rebalanceOnly) else {
            throw ValidationError("--cold-start and --rebalance are two benches: pick one")
        }
        _ = try promptLengths()
    }

    func promptLengths() throws -> [Int] {
        let values = lengths.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) >= 1 && ($0 ?? 0) <= 3000 }) else {
            throw ValidationError("--lengths takes whole numbers from 1 to 3000, comma-separated (got \(lengths))")
        }
        return values.map { $0! }
    }

    /// One length's figures.
    struct Row: Encodable {
        var promptTokens: Int
        /// Inter-token gaps of the unmigrated streams, milliseconds.
        var normalGaps: Sample
        var normalP99: Double
        /// The longest gap of each migrated stream, milliseconds; and over the normal p99.
        var pause: Sample
        var pauseOverP99: Sample
        /// The pause the controller measured (last token from the source to the first from the target).
        var handoverPause: Sample
        /// The target's load and engine start, stage 1, and the whole migration, seconds.
        var targetStart: Sample
        var warm: Sample
        var total: Sample
        var warmedTokens: Int
        /// Streams whose job was handed over (not ended before), and whose text was the unmigrated one's.
        var moved: Int
        var identical: Int
        var runs: Int
    }

    func run() async throws {
        _ = global.bootstrap()
        let name = try await ensurePulled(model, global: global)
        if coldStartOnly { return try await coldStart(name: name) }
        if rebalanceOnly { return try await rebalanceBench(name: name) }
        let scratch = try benchScratch("migrate", linking: name, into: ["a", "b"], global: global)
        defer {
            if benchKeepsScratch {
                print("kept \(scratch)")
            } else {
                try? FileManager.default.removeItem(atPath: scratch)
            }
        }
        let (workers, controller) = try startTwoWorkers(in: scratch)
        defer { ([controller] + workers).forEach { $0.stop() } }
        let http = BenchHTTP()
        defer { try? http.shutdown() }
        let lengths = try promptLengths()
        _ = try await http.json(
            .POST, controller.url + "/admin/deployments",
            [
                "model": name.rawValue, "name": "bench", "keep_alive": "-1", "min_instances": 1, "max_instances": 1,
                "context_length": lengths.map { $0 + streamTokens($0) }.max()! + 16,
            ])
        var random = SplitMix(seed: 11)
        let prompts = lengths.map { length in (0..<length).map { _ in 1000 + Int(random.next() % 20_000) } }
        _ = try await timedStream(http, controller.url, prompt: prompts[0], migrate: false)
        print("sllm controller at \(controller.url) over workers at \(workers.map(\.url).joined(separator: ", "))")
        print(
            "greedy streams of \(lengths.map { String(streamTokens($0)) }.joined(separator: "/")) tokens, migrated after \(after); \(rounds) round(s); \(threads) thread(s); model \(name)"
        )

        var results: [[(normal: [Double], stream: Streamed, moved: Streamed)]] = Array(
            repeating: [], count: lengths.count)
        for round in 0..<rounds {
            for (index, prompt) in prompts.enumerated() {
                let normal = try await timedStream(http, controller.url, prompt: prompt, migrate: false)
                let moved = try await timedStream(http, controller.url, prompt: prompt, migrate: true)
                if moved.report?["moved"] != 1 {
                    print("  (the stream ended before its hand-over: give more --tokens)")
                }
                results[index].append((normal.gaps, normal, moved))
                let report = moved.report ?? [:]
                print(
                    String(
                        format:
                            "  round %d, %5d prompt tokens: longest gap %.1f ms (normal p99 %.1f ms), migration %.3f s (%.0f warm rounds, %.0f tokens warmed)%@",
                        round + 1, prompt.count, moved.gaps.max() ?? 0, Sample(values: normal.gaps).percentile(0.99),
                        report["seconds"] ?? .nan, report["rounds"] ?? 0, report["warmed_tokens"] ?? 0,
                        moved.text == normal.text ? "" : ", TEXT DIFFERS"))
            }
        }

        print("")
        print(
            "prompt  normal gap p50 / p99   migrated stream's longest gap   / normal p99   target start    stage 1        whole migration   moved, same text"
        )
        var rows: [Row] = []
        for (index, runs) in results.enumerated() {
            let normal = Sample(values: runs.flatMap(\.normal))
            let p99 = normal.percentile(0.99)
            // Streams that ended before their hand-over saw no pause: only those moved count.
            let handed = runs.filter { $0.moved.report?["moved"] == 1 }
            let pauses = Sample(values: handed.map { $0.moved.gaps.max() ?? .nan })
            func figure(_ key: String) -> Sample {
                Sample(values: handed.map { $0.moved.report?[key] ?? .nan })
            }
            let row = Row(
                promptTokens: lengths[index], normalGaps: normal, normalP99: p99, pause: pauses,
                pauseOverP99: Sample(values: pauses.values.map { $0 / p99 }),
                handoverPause: Sample(values: figure("longest_pause_seconds").values.map { $0 * 1000 }),
                targetStart: figure("load_seconds"), warm: figure("warm_seconds"), total: figure("seconds"),
                warmedTokens: Int(runs.map { $0.moved.report?["warmed_tokens"] ?? 0 }.max() ?? 0),
                moved: handed.count,
                identical: runs.filter { $0.moved.text == $0.stream.text }.count, runs: runs.count)
            rows.append(row)
            print(
                String(format: "%6d  %6.1f / %6.1f ms      ", row.promptTokens, normal.percentile(0.5), p99)
                    + "\(row.pause.formatted(1)) ms  \(row.pauseOverP99.formatted(2))×  "
                    + "\(row.targetStart.formatted(3)) s  \(row.warm.formatted(3)) s  \(row.total.formatted(3)) s  "
                    + "\(row.moved)/\(row.runs), \(row.identical)/\(row.runs)")
        }
        let worst = rows.map(\.pauseOverP99.median).max() ?? .nan
        print(
            String(
                format: "goal: no gap above 2× the normal p99 — worst median here %.2f×: %@", worst,
                worst <= 2 ? "met" : "missed"))
        if let json { try writeReport(rows, to: json) }
        // A moved stream must give the unmigrated text: anything else is a bug, not a figure.
        let differing = rows.reduce(0) { $0 + $1.runs - $1.identical }
        if differing > 0 {
            throw CommandFailure(
                "\(differing) migrated stream(s) gave a text other than the unmigrated stream's (greedy): migration changed a stream"
            )
        }
    }

    /// Two `sllm worker` processes (`node-a`, `node-b`, `--threads` each, no pool fill, plus
    /// `workerArguments`) and an `sllm controller` over them (plus `controllerArguments`), in
    /// `scratch` as `benchScratch` made it. Nothing is left running when a start fails.
    func startTwoWorkers(in scratch: String, workerArguments: [String] = [], controllerArguments: [String] = [])
        throws -> (workers: [ServerProcess], controller: ServerProcess)
    {
        var workers: [ServerProcess] = []
        do {
            for node in ["a", "b"] {
                workers.append(
                    try ServerProcess.start(
                        executable: sllmExecutablePath(),
                        arguments: [
                            "worker", "--data-dir", scratch + "/\(node)", "--node", "node-\(node)", "--token-file",
                            scratch + "/token", "--cache-dir", scratch + "/\(node)-cache", "--port", "0", "--threads",
                            String(threads), "--no-dram-fill",
                        ] + workerArguments, log: scratch + "/\(node).log", banner: "serving on"))
            }
            let controller = try ServerProcess.start(
                executable: sllmExecutablePath(),
                arguments: [
                    "controller", "--data-dir", scratch + "/control", "--port", "0", "--worker", workers[0].url,
                    "--worker", workers[1].url, "--token-file", scratch + "/token", "--default-model", "",
                ] + controllerArguments, log: scratch + "/controller.log", banner: "serving on")
            return (workers, controller)
        } catch {
            workers.forEach { $0.stop() }
            throw error
        }
    }

    /// Tokens a stream of a `length`-token prompt generates: its stage 1 computes the prompt on the
    /// target while the source goes on, so longer prompts need longer streams to be handed over.
    func streamTokens(_ length: Int) -> Int { max(tokens, after + 64 + length * 2) }

    /// A stream's text, its inter-token gaps (ms, after the first token) and, when migrated,
    /// the migration's report.
    struct Streamed {
        var text: String
        var gaps: [Double]
        /// The migration's report, its numbers by key.
        var report: [String: Double]?
    }

    /// Streams a greedy completion of `prompt`; with `migrate`, moves its instance to the other
    /// node once `after` tokens came.
    func timedStream(_ http: BenchHTTP, _ base: String, prompt: [Int], migrate: Bool) async throws -> Streamed {
        var instance = ""
        var target = ""
        if migrate {
            let deployments = try await http.array(.GET, base + "/admin/deployments")
            let instances =
                deployments.flatMap { (($0["status"] as? [String: Any])?["instances"] as? [[String: Any]]) ?? [] }
            guard let running = instances.first, let id = running["id"] as? String,
                let node = running["node"] as? String
            else { throw CommandFailure("the deployment has no running instance to migrate") }
            instance = id
            target = node == "node-a" ? "node-b" : "node-a"
        }
        struct State {
            var text = ""
            var times: [ContinuousClock.Instant] = []
            var migration: Task<[String: Double], any Error>?
        }
        let state = Mutex(State())
        let after = self.after
        let (id, node) = (instance, target)
        let outcome = await http.stream(
            base + "/v1/completions",
            [
                "model": "bench", "prompt": prompt, "max_tokens": streamTokens(prompt.count), "temperature": 0,
                "ignore_eos": true,
                "stream": true,
            ]
        ) { text in
            state.withLock { state in
                state.text += text
                state.times.append(.now)
                if migrate, state.times.count == after {
                    state.migration = Task {
                        let report = try await http.json(
                            .POST, base + "/admin/instances/\(id)/migrate", ["node": node])
                        guard report["succeeded"] as? Bool == true else {
                            throw CommandFailure("the migration failed: \(report)")
                        }
                        return report.compactMapValues { ($0 as? NSNumber)?.doubleValue }
                    }
                }
            }
        }
        if case .failure(let failure) = outcome { throw CommandFailure("a stream failed: \(failure.reason)") }
        let (text, times, migration) = state.withLock { ($0.text, $0.times, $0.migration) }
        let report = try await migration?.value
        if migrate, report == nil { throw CommandFailure("the stream ended before its migration began") }
        let gaps = zip(times.dropFirst(), times).map { pair in
            let (later, earlier) = pair
            let elapsed = later - earlier
            return Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) * 1e-15
        }
        return Streamed(text: text, gaps: gaps, report: report)
    }
}
