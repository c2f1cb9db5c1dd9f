import Foundation
import Lab
import NIOHTTP1
import Scheduling
import Simulation
import Store
import Synchronization

/// `sllm bench migrate --cold-start`: the request that triggers a migration, three ways. Hosts
/// made of network namespaces (a controller and two workers, links shaped to `--link`): node a
/// holds models `x` and `y` (y kept in its DRAM) and has memory for one instance, busy with a
/// stream of `x`; node b holds only `x`. A request for `y` then starts: **migration** moves the
/// busy `x` to b (which loads it from its SSD and recomputes its tokens), then `y` starts on a
/// from DRAM; **elsewhere** starts `y` on b, which fetches it from a over the link; **wait**
/// (b has no memory) waits for the stream on a to end. Each is timed from the moment the
/// request is decided to its one-token answer, with fresh processes per run.
extension MigrateBench {
    struct ColdStartRow: Encodable {
        var mode: String
        var seconds: Sample
        var nodes: [String]
    }

    func coldStart(name: ModelName) async throws {
        if let reason = NetworkLab.unavailable {
            throw CommandFailure("--cold-start needs network namespaces: \(reason)")
        }
        let source = global.store.directory(for: name)
        let weights = try FileManager.default.contentsOfDirectory(atPath: source).filter { $0.hasPrefix("data-") }
            .reduce(0) { total, file in
                total + ((try? FileManager.default.attributesOfItem(atPath: source + "/" + file)[.size] as? Int) ?? 0)
            }
        let modes = ["migration", "elsewhere", "wait"]
        var results: [String: (seconds: [Double], nodes: [String])] = [:]
        print(
            "cold start of y on a full node: \(rounds) round(s), links \(link), model \(name) (\(weights >> 20) MiB), \(threads) thread(s)"
        )
        for round in 0..<rounds {
            for mode in modes {
                let (seconds, node) = try await coldStartRun(mode, model: name, weights: weights)
                results[mode, default: ([], [])].seconds.append(seconds)
                results[mode, default: ([], [])].nodes.append(node)
                print(String(format: "  round %d, %-9@: %.3f s (y started on %@)", round + 1, mode, seconds, node))
            }
        }
        print("")
        print("triggering request   time to its answer     y started on")
        var rows: [ColdStartRow] = []
        for mode in modes {
            let row = ColdStartRow(
                mode: mode, seconds: Sample(values: results[mode]?.seconds ?? []), nodes: results[mode]?.nodes ?? [])
            rows.append(row)
            print(
                mode.padding(toLength: 21, withPad: " ", startingAt: 0) + "\(row.seconds.formatted(3)) s   "
                    + Set(row.nodes).sorted().joined(separator: ", "))
        }
        if let migration = rows.first?.seconds.median, let others = rows.dropFirst().map(\.seconds.median).min() {
            print(String(format: "migration against the better of the others: %.2f×", migration / others))
        }
        if let json { try writeReport(rows, to: json) }
    }

    /// One run of `mode` on fresh hosts: seconds from the decision to y's answer, and y's node.
    private func coldStartRun(_ mode: String, model name: ModelName, weights: Int) async throws -> (Double, String) {
        let scratch = FileManager.default.temporaryDirectory.path + "/sllm-bench-migrate-cold-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let checkpoint = global.store.directory(for: name)
        for (node, models) in [("node-a", ["x", "y"]), ("node-b", ["x"])] {
            try FileManager.default.createDirectory(
                atPath: scratch + "/\(node)/models", withIntermediateDirectories: true)
            for model in models {
                try FileManager.default.createSymbolicLink(
                    atPath: scratch + "/\(node)/models/\(model)", withDestinationPath: checkpoint)
            }
        }
        let token = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        try Data(token.utf8).write(to: URL(fileURLWithPath: scratch + "/token"))
        let lab = try NetworkLab(hosts: ["ctl", "node-a", "node-b"])
        defer { lab.remove() }
        for host in ["node-a", "node-b"] { try lab.shape(host, rate: link) }
        let controllerURL = "http://\(lab.host("ctl").address):8343"
        let controller = try ServerProcess.start(
            on: "ctl", of: lab,
            [
                "controller", "--data-dir", scratch + "/ctl", "--host", lab.host("ctl").address, "--port", "8343",
                "--token-file", scratch + "/token", "--default-model", "", "--auth", "off",
            ], log: scratch + "/ctl.log")
        defer { controller.stop() }
        // Node a: room for one instance (weights and a 1024-token KV cache); node b: for several,
        // or (wait) for none.
        let one = weights + (40 << 20)
        var workers: [ServerProcess] = []
        defer { workers.forEach { $0.stop() } }
        for (host, budget) in [("node-a", one), ("node-b", mode == "wait" ? 16 << 20 : 4 * one)] {
            workers.append(
                try ServerProcess.start(
                    on: host, of: lab,
                    [
                        "worker", "--data-dir", scratch + "/" + host, "--node", host, "--host", lab.host(host).address,
                        "--port", "8344", "--controller", controllerURL, "--token-file", scratch + "/token",
                        "--threads", String(threads), "--memory-budget", String(budget), "--cache-dir",
                        scratch + "/\(host)-cache", "--dram-cache", String(2 * weights + (16 << 20)), "--no-dram-fill",
                    ], log: scratch + "/\(host).log"))
        }
        let http = BenchHTTP()
        defer { try? http.shutdown() }
        try await waitForNodes(http, controller: controllerURL, count: 2, log: controller.log)
        for (deployment, replicas) in [("x", 0), ("y", 1)] {
            _ = try await http.json(
                .POST, controllerURL + "/admin/deployments",
                [
                    "model": deployment, "name": deployment, "keep_alive": "-1", "max_instances": 1,
                    "target_concurrency": 1, "context_length": 1024, "dram_replicas": replicas,
                ])
        }
        // y kept in node a's DRAM (its only holder).
        let deadline = ContinuousClock.now + .seconds(60)
        while try await !Self.holds(http, controllerURL, node: "node-a", model: "y", tier: "dram") {
            guard ContinuousClock.now < deadline else { throw CommandFailure("node a never kept y in DRAM") }
            try await Task.sleep(for: .milliseconds(100))
        }

        // A stream of x on node a; once it runs, y's request is decided.
        struct Trigger {
            var count = 0
            /// Puts x on node a (the scheduler may have started it on b).
            var setup: Task<Void, any Error>?
            var task: Task<(Double, String), any Error>?
        }
        let trigger = Mutex(Trigger())
        var random = SplitMix(seed: 5)
        let prompt = (0..<64).map { _ in 1000 + Int(random.next() % 20_000) }
        let base = controllerURL
        let outcome = await http.stream(
            base + "/v1/completions",
            [
                "model": "x", "prompt": prompt, "max_tokens": 600, "temperature": 0, "ignore_eos": true,
                "stream": true,
            ]
        ) { _ in
            trigger.withLock { state in
                state.count += 1
                if state.count == 8 {
                    state.setup = Task {
                        let instances = try await Self.instances(http, base, deployment: "x")
                        guard let id = instances.first?["id"] as? String else {
                            throw CommandFailure("x has no instance")
                        }
                        if instances.first?["node"] as? String != "node-a" {
                            _ = try await http.json(.POST, base + "/admin/instances/\(id)/migrate", ["node": "node-a"])
                        }
                    }
                }
                guard state.count == 32, let setup = state.setup else { return }
                state.task = Task {
                    try await setup.value
                    // Settled on a for a moment, as a stream that had been running there.
                    try await Task.sleep(for: .milliseconds(300))
                    let started = ContinuousClock.now
                    if mode == "migration" {
                        let instances = try await Self.instances(http, base, deployment: "x")
                        guard let id = instances.first?["id"] as? String else {
                            throw CommandFailure("x has no instance to migrate")
                        }
                        let report = try await http.json(
                            .POST, base + "/admin/instances/\(id)/migrate", ["node": "node-b"])
                        let figures = report.compactMapValues { ($0 as? NSNumber)?.doubleValue }
                        print(
                            String(
                                format:
                                    "    migration of x: %.3f s (its target's start %.3f s, %.0f warm rounds of %.0f tokens in %.3f s, pause %.1f ms)",
                                figures["seconds"] ?? .nan, figures["load_seconds"] ?? .nan, figures["rounds"] ?? 0,
                                figures["warmed_tokens"] ?? 0, figures["warm_seconds"] ?? .nan,
                                (figures["longest_pause_seconds"] ?? .nan) * 1000))
                    }
                    _ = try await http.json(
                        .POST, base + "/v1/completions", ["model": "y", "prompt": "Hi", "max_tokens": 1])
                    let elapsed = ContinuousClock.now - started
                    let node = try await Self.instances(http, base, deployment: "y").first?["node"] as? String ?? "?"
                    return (
                        Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18, node
                    )
                }
            }
        }
        if case .failure(let failure) = outcome { throw CommandFailure("x's stream failed: \(failure.reason)") }
        guard let task = trigger.withLock({ $0.task }) else { throw CommandFailure("x's stream ended early") }
        return try await task.value
    }

    static func instances(_ http: BenchHTTP, _ base: String, deployment: String) async throws -> [[String: Any]] {
        let status = try await http.json(.GET, base + "/admin/deployments/\(deployment)")
        return ((status["status"] as? [String: Any])?["instances"] as? [[String: Any]]) ?? []
    }

    /// Whether `node`'s inventory lists `model` in `tier`.
    static func holds(_ http: BenchHTTP, _ base: String, node: String, model: String, tier: String) async throws
        -> Bool
    {
        let nodes = try await http.array(.GET, base + "/admin/nodes")
        let inventory = nodes.first { $0["node"] as? String == node }?["inventory"] as? [String: Any]
        let tiers = inventory?["tiers"] as? [[String: Any]] ?? []
        return tiers.contains { entry in
            entry["tier"] as? String == tier
                && ((entry["models"] as? [[String: Any]]) ?? []).contains { $0["name"] as? String == model }
        }
    }
}
