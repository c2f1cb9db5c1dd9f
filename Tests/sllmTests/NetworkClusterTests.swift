import Foundation
import Lab
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A cluster on hosts of its own: PostgreSQL, two controllers and three workers, each in a
/// network namespace with its own address, joined by a bridge (``NetworkLab``), with links shaped
/// by `tc` where bandwidth matters. Faults are real: processes killed, a link cut.
@Suite(
    .serialized,
    .enabled(if: NetworkLab.unavailable == nil, "network namespaces: \(NetworkLab.unavailable ?? "")"))
struct NetworkClusterTests {
    static let token = "network-cluster-token-0123456789"
    static let admin = "network-cluster-admin-key-0123456789"

    /// One cluster through its life: a scale-out fetched from peers, a peer killed mid-transfer,
    /// a cut link, the leading controller killed, a worker killed mid-stream, then every process
    /// restarted — and nothing lost.
    @Test func aClusterOnItsOwnHostsSurvivesItsFaults() async throws {
        let lab = try NetworkLab(hosts: ["pg", "ctl-1", "ctl-2", "node-1", "node-2", "node-3"])
        defer { lab.remove() }
        let root = try TemporaryDirectory("netns-cluster")
        defer { root.remove() }
        let postgres = try PostgresServer.start(namespace: lab.host("pg").namespace, address: lab.host("pg").address)
        let (_, stateURL) = try postgres.createDatabase("netns")
        let controllerURLs = ["ctl-1", "ctl-2"].map { "http://\(lab.host($0).address):8343" }

        func startController(_ name: String) throws -> ServeProcess {
            let process = try ServeProcess(
                [
                    "--host", lab.host(name).address, "--port", "8343", "--state-url", stateURL, "--worker-lease", "3s",
                    "--default-model", "",
                ], home: root.file(name),
                environment: ["SLLM_CLUSTER_TOKEN": Self.token, "SLLM_ADMIN_KEY": Self.admin], command: "controller",
                namespace: lab.host(name).namespace)
            _ = try #require(process.address(), "\(process.output)")
            return process
        }
        func startWorker(_ name: String) throws -> ServeProcess {
            let process = try ServeProcess(
                [
                    "--host", lab.host(name).address, "--port", "8344", "--node", name, "--threads", "1",
                    "--memory-budget", "250MiB", "--cache-dir", root.file("\(name)-cache"), "--dram-cache", "256MiB",
                ] + controllerURLs.flatMap { ["--controller", $0] }, home: root.file(name),
                environment: ["SLLM_CLUSTER_TOKEN": Self.token], command: "worker", namespace: lab.host(name).namespace)
            _ = try #require(process.address(), "\(process.output)")
            return process
        }
        func json(_ server: String, _ path: String, body: [String: Any]? = nil) async throws -> (Int, Any?) {
            try await ClusterCLITests.json(server + path, body: body, key: Self.admin)
        }
        func instances(_ server: String) async throws -> [[String: Any]] {
            let (_, deployments) = try await json(server, "/admin/deployments")
            return (deployments as? [[String: Any]])?.flatMap {
                (($0["status"] as? [String: Any])?["instances"] as? [[String: Any]]) ?? []
            } ?? []
        }
        /// Polls until `check` holds on the instances (up to `seconds`); the last ones seen.
        func waitForInstances(_ server: String, seconds: Int = 90, _ check: ([[String: Any]]) -> Bool)
            async throws -> [[String: Any]]
        {
            let deadline = ContinuousClock.now + .seconds(seconds)
            var seen: [[String: Any]] = []
            while ContinuousClock.now < deadline {
                seen = (try? await instances(server)) ?? []
                if check(seen) { return seen }
                try await Task.sleep(for: .milliseconds(100))
            }
            Issue.record("instances never reached the state wanted: \(seen)")
            return seen
        }
        func ready(_ list: [[String: Any]]) -> [[String: Any]] { list.filter { $0["state"] as? String == "ready" } }
        func complete(_ server: String) async throws -> Int {
            try await json(server, "/v1/completions", body: ["model": "smollm2-135m", "prompt": "Hi", "max_tokens": 3])
                .0
        }
        func sllm(_ arguments: [String], server: String) async throws -> CLIResult {
            try await runSLLM(
                arguments, home: root.path,
                environment: [
                    "SLLM_SERVER": server.replacingOccurrences(of: "http://", with: ""), "SLLM_API_KEY": Self.admin,
                ])
        }

        var controllers = ["ctl-1": try startController("ctl-1")]
        try #require(controllers["ctl-1"]!.waitFor("leading the cluster"), "\(controllers["ctl-1"]!.output)")
        controllers["ctl-2"] = try startController("ctl-2")
        defer { controllers.values.forEach { $0.stop() } }
        try #require(controllers["ctl-2"]!.waitFor("following"), "\(controllers["ctl-2"]!.output)")
        let leader = controllerURLs[0]

        // Only node-1 holds the model; node-2 fetches it from node-1 at its first start.
        try await RealModel.link(into: root.file("node-1"), as: "smollm2-135m")
        var workers: [String: ServeProcess] = [:]
        for name in ["node-1", "node-2", "node-3"] { workers[name] = try startWorker(name) }
        defer { workers.values.forEach { $0.stop() } }
        try await ClusterCLITests.waitForNodes(leader, key: Self.admin) {
            $0 == ["node-1": "alive", "node-2": "alive", "node-3": "alive"]
        }
        let deploy = try await sllm(
            ["deploy", "smollm2-135m", "--min", "2", "--max", "3", "--keep-alive", "-1", "--context", "512"],
            server: leader)
        #expect(deploy.status == 0, "\(deploy.stderr)")
        let two = try await waitForInstances(leader) { ready($0).count == 2 }
        let fetchedByTwo = two.first { $0["tier"] as? String == "peer" }
        let weights = (fetchedByTwo?["fetched_bytes"] as? [String: Int])?.values.reduce(0, +) ?? 0
        #expect(weights > 90 << 20, "\(two)")

        // A scale-out to node-3 over links shaped to 25 MB/s spreads the fetch over both holders;
        // one of them is killed mid-transfer and the other delivers the rest.
        let holders = Set(two.compactMap { $0["node"] as? String })
        let newcomer = try #require(Set(["node-1", "node-2", "node-3"]).subtracting(holders).first)
        let victim = try #require(holders.sorted().last)
        for holder in holders { try lab.shape(holder, rate: "200mbit") }
        #expect(try await sllm(["update", "smollm2-135m", "--min", "3"], server: leader).status == 0)
        _ = try await waitForInstances(leader, seconds: 30) { list in
            list.contains { $0["node"] as? String == newcomer }
        }
        try await Task.sleep(for: .milliseconds(1200))
        kill(workers[victim]!.process.processIdentifier, SIGKILL)
        workers[victim]!.process.waitUntilExit()
        let afterKill = try await waitForInstances(leader) { list in
            ready(list).contains { $0["node"] as? String == newcomer }
        }
        let scaled = try #require(afterKill.first { $0["node"] as? String == newcomer })
        let sources = scaled["fetched_bytes"] as? [String: Int] ?? [:]
        #expect(sources.values.reduce(0, +) == weights, "\(scaled)")
        #expect(Set(sources.keys) == holders, "both holders served a share: \(scaled)")
        #expect((sources[victim] ?? 0) < weights, "\(scaled)")
        for holder in holders { try lab.shape(holder, rate: "10gbit") }
        try await ClusterCLITests.waitForNodes(leader, key: Self.admin) { $0[victim] == "lost" }
        // The victim comes back with the checkpoint it had fetched: the deployment is whole again.
        workers[victim] = try startWorker(victim)
        _ = try await waitForInstances(leader) { ready($0).count == 3 }
        #expect(try await complete(leader) == 200)

        // A cut link: the node is lost within its lease, requests run on the others; healed, it
        // comes back and its instance is adopted or replaced, never run twice.
        try lab.cut(newcomer)
        let detection = try await ClusterCLITests.waitForNodes(leader, key: Self.admin) { $0[newcomer] == "lost" }
        // Lost by its 3 s lease expiring (not by some longer timeout); the bound is loose because
        // a 2-core CI machine running the whole suite delays the controller's sweep (10.4 s seen).
        #expect(detection < 30)
        #expect(try await complete(leader) == 200)
        try lab.heal(newcomer)
        try await ClusterCLITests.waitForNodes(leader, key: Self.admin) { $0[newcomer] == "alive" }
        let healed = try await waitForInstances(leader) { ready($0).count == 3 }
        #expect(Set(healed.compactMap { $0["node"] as? String }) == ["node-1", "node-2", "node-3"], "\(healed)")

        // The leading controller is killed: the other takes over and adopts every running
        // instance (same ids, no cold start).
        let before = Set(healed.compactMap { $0["id"] as? String })
        kill(controllers["ctl-1"]!.process.processIdentifier, SIGKILL)
        controllers["ctl-1"]!.process.waitUntilExit()
        let follower = controllerURLs[1]
        #expect(controllers["ctl-2"]!.waitFor("leading the cluster", timeout: 30), "\(controllers["ctl-2"]!.output)")
        let adopted = try await waitForInstances(follower) { ready($0).count == 3 }
        #expect(Set(adopted.compactMap { $0["id"] as? String }) == before, "\(adopted)")
        #expect(try await complete(follower) == 200)
        controllers["ctl-1"] = try startController("ctl-1")

        // A worker killed mid-stream: the stream ends with an error, not as if it were done.
        #expect(try await sllm(["update", "smollm2-135m", "--min", "1", "--max", "1"], server: follower).status == 0)
        let one = try await waitForInstances(follower) { $0.count == 1 && ready($0).count == 1 }
        let serving = try #require(one.first?["node"] as? String)
        let stream = try await ClusterCLITests.streamThenKill(
            host: lab.host("ctl-2").address, port: 8343, key: Self.admin,
            victim: workers[serving]!.process.processIdentifier, until: "[DONE]")
        #expect(stream.contains("\"error\""), "\(stream.suffix(600))")
        #expect(!stream.contains("\"finish_reason\":\"length\""), "\(stream.suffix(600))")
        workers[serving]!.process.waitUntilExit()
        workers[serving] = try startWorker(serving)

        // Everything restarts: the deployment, its settings and the fetched checkpoints are all
        // still there; nothing is fetched again.
        for process in workers.values { process.stop() }
        for process in controllers.values { process.stop() }
        controllers = ["ctl-1": try startController("ctl-1"), "ctl-2": try startController("ctl-2")]
        for name in ["node-1", "node-2", "node-3"] { workers[name] = try startWorker(name) }
        try await ClusterCLITests.waitForNodes(follower, key: Self.admin) {
            $0 == ["node-1": "alive", "node-2": "alive", "node-3": "alive"]
        }
        let restarted = try await waitForInstances(follower) { $0.count == 1 && ready($0).count == 1 }
        #expect(["ssd", "dram"].contains(restarted.first?["tier"] as? String), "\(restarted)")
        let (_, deployments) = try await json(follower, "/admin/deployments")
        let status = (deployments as? [[String: Any]])?.first?["status"] as? [String: Any]
        let spec = status?["spec"] as? [String: Any] ?? [:]
        #expect(spec["name"] as? String == "smollm2-135m", "\(String(describing: deployments))")
        #expect(try await complete(follower) == 200)
        for name in ["node-1", "node-2", "node-3"] {
            #expect(FileManager.default.fileExists(atPath: root.file("\(name)/models/smollm2-135m/index")), "\(name)")
        }
    }
}
