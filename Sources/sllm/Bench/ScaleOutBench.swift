import ArgumentParser
import Checkpoint
import Foundation
import Lab
import NIOHTTP1
import Store

/// `sllm bench scale-out`: a model scaled out to k nodes at once, against one node fetching it,
/// over links shaped alike, on hosts made of network namespaces.
struct ScaleOutBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scale-out",
        abstract: "k nodes fetching one model at once from one holder vs one node fetching it (goal: 4-way ≤ 1.3×).",
        discussion: """
            Builds hosts from network namespaces (needs root and iproute2): a controller, the node \
            holding the model, and k empty nodes, every worker's link shaped both ways with tc. \
            Each round starts the processes afresh with empty stores, deploys the model on the \
            holder and k other nodes (one instance each) and reads each fetching node's own load \
            time; rounds alternate between k nodes and one. The controller chains concurrent \
            fetches (each node relays what it has verified to the next), so k nodes should take \
            about one transfer, not k.
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Model (pulled if missing).") var model = ModelSource.defaultModel.name
    @Option(help: "Nodes scaled out to at once.") var nodes = 4
    @Option(help: "Rounds of each side.") var rounds = 3
    @Option(help: "Each worker's link, both ways (tc rate: 400mbit, 1gbit).") var link = "400mbit"
    @Flag(help: "Keep the scratch directory (every process's log) and print where it is.") var keep = false

    func validate() throws {
        guard (2...16).contains(nodes), (1...50).contains(rounds) else {
            throw ValidationError("--nodes must be 2...16 and --rounds 1...50")
        }
    }

    func run() async throws {
        _ = global.bootstrap()
        if let reason = NetworkLab.unavailable { throw CommandFailure("bench scale-out: \(reason)") }
        let name = try await ensurePulled(model, global: global)
        let index = try global.store.reader(for: name).index
        let weights = index.partitions.reduce(0) { $0 + $1.byteCount }
        // One instance per node: the weights, a 512-token KV cache and room to spare.
        let budget = weights + (160 << 20)
        let lab = try NetworkLab(hosts: ["ctl", "holder"] + (1...nodes).map { "node-\($0)" })
        defer { lab.remove() }
        for host in ["holder"] + (1...nodes).map({ "node-\($0)" }) { try lab.shape(host, rate: link) }
        let scratch = FileManager.default.temporaryDirectory.path + "/sllm-bench-scale-out-\(getpid())"
        defer {
            if keep { print("logs kept in \(scratch)") } else { try? FileManager.default.removeItem(atPath: scratch) }
        }
        let token = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        try Data(token.utf8).write(to: URL(fileURLWithPath: scratch + "/token"))
        let http = BenchHTTP()
        defer { try? http.shutdown() }
        print(
            "\(name) (\(formatBytes(Int64(weights)))) from one holder to 1 and to \(nodes) nodes at once; every worker link \(link) both ways; \(rounds) rounds each, alternating"
        )

        var single: [Double] = []
        var many: [Double] = []
        var lastSources: [(String, [String: Int])] = []
        for round in 0..<(2 * rounds) {
            let count = round % 2 == 0 ? nodes : 1
            let directory = scratch + "/round-\(round)"
            try FileManager.default.createDirectory(
                atPath: directory + "/holder/models", withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(
                atPath: directory + "/holder/models/\(name)", withDestinationPath: global.store.directory(for: name))
            let controllerURL = "http://\(lab.host("ctl").address):8343"
            let controller = try ServerProcess.start(
                on: "ctl", of: lab,
                [
                    "controller", "--data-dir", directory + "/ctl", "--host", lab.host("ctl").address, "--port",
                    "8343", "--auth", "off", "--default-model", "", "--token-file", scratch + "/token",
                ], log: directory + "/ctl.log")
            defer { controller.stop() }
            var workers: [ServerProcess] = []
            defer { workers.forEach { $0.stop() } }
            for host in ["holder"] + (1...count).map({ "node-\($0)" }) {
                workers.append(
                    try ServerProcess.start(
                        on: host, of: lab,
                        [
                            "worker", "--data-dir", directory + "/" + host, "--node", host, "--host",
                            lab.host(host).address, "--port", "8344", "--controller", controllerURL, "--token-file",
                            scratch + "/token", "--threads", "1", "--memory-budget", String(budget), "--cache-dir",
                            directory + "/\(host)-cache", "--dram-cache", String(weights + (64 << 20)),
                            "--no-dram-fill",
                        ], log: directory + "/\(host).log"))
            }
            // Every node joined before the deployment, so all k starts are placed at once.
            try await waitForNodes(http, controller: controllerURL, count: count + 1, log: controller.log)
            let deadline = ContinuousClock.now + .seconds(60)
            _ = try await http.json(
                .POST, controllerURL + "/admin/deployments",
                [
                    "model": name.rawValue, "name": "bench", "keep_alive": "-1", "min_instances": count + 1,
                    "max_instances": count + 1, "context_length": 512,
                ])
            var fetchers: [[String: Any]] = []
            while true {
                let deployments = try await http.array(.GET, controllerURL + "/admin/deployments")
                let instances =
                    deployments.flatMap {
                        (($0["status"] as? [String: Any])?["instances"] as? [[String: Any]]) ?? []
                    }
                let ready = instances.filter { $0["state"] as? String == "ready" }
                if ready.count == count + 1 {
                    fetchers = ready.filter { $0["node"] as? String != "holder" }
                    break
                }
                guard ContinuousClock.now < deadline + .seconds(40) else {
                    let problems = ([controller] + workers).map { process in
                        ((try? String(contentsOfFile: process.log, encoding: .utf8)) ?? "").split(separator: "\n")
                            .filter { $0.contains("error") || $0.contains("warning") }.suffix(4).joined(separator: "\n")
                    }.filter { !$0.isEmpty }
                    throw CommandFailure(
                        "the instances did not start: \(instances.map { "\($0["node"] ?? "?"): \($0["state"] ?? "?")" })\n"
                            + problems.joined(separator: "\n"))
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            let slowest = fetchers.compactMap { $0["load_seconds"] as? Double }.max() ?? .nan
            if count == 1 { single.append(slowest) } else { many.append(slowest) }
            if count > 1 {
                lastSources = fetchers.map {
                    ($0["node"] as? String ?? "?", $0["fetched_bytes"] as? [String: Int] ?? [:])
                }
            }
            let each = fetchers.sorted { ($0["node"] as? String ?? "") < ($1["node"] as? String ?? "") }
                .map {
                    "\($0["node"] as? String ?? "?") \(String(format: "%.2f", $0["load_seconds"] as? Double ?? .nan))"
                }
            print(
                "round \(round + 1): \(count) node\(count == 1 ? "" : "s") \(String(format: "%.2f", slowest)) s (the slowest fetching node's load; \(each.joined(separator: ", ")))"
            )
        }
        let one = Sample(values: single)
        let k = Sample(values: many)
        print("")
        print("one node fetching:     \(one.formatted()) s")
        print(
            "\(nodes) nodes at once:     \(k.formatted()) s   (\(nodes) transfers from one holder would take ~\(String(format: "%.1f", Double(nodes) * one.median)) s)"
        )
        let ratio = k.median / one.median
        print(String(format: "ratio %.2f× one fetch: %@ the ≤ 1.3× goal", ratio, ratio <= 1.3 ? "meets" : "misses"))
        print("bytes by source in the last \(nodes)-node round:")
        for (node, sources) in lastSources.sorted(by: { $0.0 < $1.0 }) {
            print(
                "  \(node) ← "
                    + sources.sorted { $0.key < $1.key }.map { "\($0.key) \(formatBytes(Int64($0.value)))" }.joined(
                        separator: ", "))
        }
    }
}
