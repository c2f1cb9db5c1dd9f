import Foundation
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
#if canImport(Glibc)
    import Glibc
#endif

/// `sllm controller` over two `sllm worker` processes: deployments, completions and status go
/// through the controller; instances run on the workers, behind the cluster token.
@Suite struct ClusterCLITests {
    static func json(_ url: String, body: [String: Any]? = nil, key: String? = nil) async throws -> (Int, Any?) {
        var request = URLRequest(url: URL(string: url)!)
        if let key { request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization") }
        if let body {
            request.httpMethod = "POST"
            request.httpBody = try JSONSerialization.data(withJSONObject: body)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, try? JSONSerialization.jsonObject(with: data))
    }

    /// Deploys SmolLM2 with `count` instances kept (no keep-alive end, context 512) through the
    /// CLI, and waits (90 s at most) until that many are ready; returns the instances seen last.
    static func deploy(_ count: Int, server: String, home: String, environment: [String: String]) async throws
        -> [[String: Any]]
    {
        let deploy = try await runSLLM(
            [
                "deploy", "smollm2-135m", "--min", String(count), "--max", String(count), "--keep-alive", "-1",
                "--context", "512",
            ], home: home, environment: environment)
        #expect(deploy.status == 0, "\(deploy.stderr)")
        var instances: [[String: Any]] = []
        let deadline = ContinuousClock.now + .seconds(90)
        while ContinuousClock.now < deadline {
            let (_, deployments) = try await json(server + "/admin/deployments")
            instances =
                (deployments as? [[String: Any]])?.flatMap {
                    (($0["status"] as? [String: Any])?["instances"] as? [[String: Any]]) ?? []
                } ?? []
            if instances.count == count, instances.allSatisfy({ $0["state"] as? String == "ready" }) { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        return instances
    }

    @Test func aControllerServesThroughTwoWorkers() async throws {
        let root = try TemporaryDirectory("cluster-cli")
        defer { root.remove() }
        let token = "cluster-cli-test-token-0123456789"
        try writeFile(root.file("token"), Array("\(token)\n".utf8))
        var workers: [ServeProcess] = []
        var urls: [String] = []
        for node in ["node-a", "node-b"] {
            let home = root.file(node)
            try await RealModel.link(into: home, as: "smollm2-135m")
            let worker = try ServeProcess(
                [
                    "--port", "0", "--node", node, "--token-file", root.file("token"), "--threads", "1",
                    "--cache-dir", root.file("\(node)-cache"), "--dram-cache", "256MiB",
                ], home: home, command: "worker")
            let address = try #require(worker.address(), "\(worker.output)")
            #expect(worker.output.contains("sllm worker \(node) serving on"))
            workers.append(worker)
            urls.append(address)
        }
        defer { workers.forEach { $0.stop() } }

        // A stranger at a worker's port runs nothing.
        let (stranger, _) = try await Self.json(urls[0] + "/worker/v1/call", body: ["inventory": [:]])
        #expect(stranger == 401)

        let (controller, controllerPort, server) = try Self.leaseController(
            root, token: token, ["--worker", urls[0], "--worker", urls[1]])
        try #require(controller.waitFor("[Serving] ready"), "\(controller.output)")
        defer { controller.stop() }
        #expect(controller.output.contains("controller of node-a, node-b"), "\(controller.output)")
        let env = ["SLLM_SERVER": "127.0.0.1:\(controllerPort)"]

        // A controller given a wrong token cannot use the workers, and says which.
        let refused = try await runSLLM(
            ["controller", "--port", "0", "--worker", urls[0]], home: root.file("control-2"),
            environment: ["SLLM_CLUSTER_TOKEN": "not-the-cluster-token-000"])
        #expect(
            refused.status != 0 && refused.stderr.contains("worker \(urls[0])")
                && refused.stderr.contains("cluster token"), "\(refused.stderr)")

        let deploy = try await runSLLM(
            ["deploy", "smollm2-135m", "--keep-alive", "-1"], home: root.path, environment: env)
        #expect(deploy.status == 0, "\(deploy.stderr)")
        let (status, answer) = try await Self.json(
            server + "/v1/completions",
            body: ["model": "smollm2-135m", "prompt": "The capital of France is", "max_tokens": 8])
        #expect(status == 200, "\(String(describing: answer))")
        let text = ((answer as? [String: Any])?["choices"] as? [[String: Any]])?.first?["text"] as? String
        #expect(text?.isEmpty == false)

        // The instance runs on one of the workers, as the controller's status says.
        let (_, deployments) = try await Self.json(server + "/admin/deployments")
        let instances =
            (deployments as? [[String: Any]])?.flatMap {
                (($0["status"] as? [String: Any])?["instances"] as? [[String: Any]]) ?? []
            } ?? []
        let node = instances.first?["node"] as? String
        #expect(node == "node-a" || node == "node-b", "\(String(describing: deployments))")
        let ps = try await runSLLM(["ps"], home: root.path, environment: env)
        #expect(ps.stdout.contains("NODE") && ps.stdout.contains(node ?? "?"), "\(ps.stdout)")

        // The worker holding the (idle) instance is killed: the next request, which had sent
        // nothing when the worker was found lost, runs again on the other worker and succeeds.
        let first = node == "node-a" ? 0 : 1
        let second = 1 - first
        kill(workers[first].process.processIdentifier, SIGKILL)
        workers[first].process.waitUntilExit()
        let (again, retried) = try await Self.json(
            server + "/v1/completions", body: ["model": "smollm2-135m", "prompt": "Hello", "max_tokens": 4])
        #expect(again == 200, "\(String(describing: retried))")
        let (_, after) = try await Self.json(server + "/admin/deployments")
        let survivors =
            (after as? [[String: Any]])?.flatMap {
                (($0["status"] as? [String: Any])?["instances"] as? [[String: Any]]) ?? []
            } ?? []
        #expect(survivors.compactMap { $0["node"] as? String } == [second == 0 ? "node-a" : "node-b"])
        #expect(controller.output.contains("running it on another instance"), "\(controller.output)")

        // The other worker dies while it streams an answer: the stream ends with `worker_lost`
        // naming it (tokens were sent, so it is not run again).
        let streamed = try await Self.streamThenKill(
            port: controllerPort, victim: workers[second].process.processIdentifier, until: "worker_lost")
        workers[second].process.waitUntilExit()
        #expect(streamed.contains("worker_lost") && streamed.contains("node-"), "\(streamed.suffix(600))")

        // No worker answers: a start names each as unreachable.
        let (none, failure) = try await Self.json(
            server + "/v1/completions", body: ["model": "smollm2-135m", "prompt": "Hello", "max_tokens": 4])
        let message = ((failure as? [String: Any])?["error"] as? [String: Any])?["message"] as? String ?? ""
        #expect(none == 503 && message.contains("unreachable"), "\(message)")

        #expect(controller.stop() == 0)
    }

    /// `sllm migrate` moves a streaming request's instance from one worker process to the other
    /// mid-generation: the client's stream goes on with the same text an unmigrated run gives,
    /// and goes on still when the worker it left is killed.
    @Test func aStreamMovesBetweenWorkerProcesses() async throws {
        let root = try TemporaryDirectory("cluster-migrate")
        defer { root.remove() }
        let token = "cluster-migrate-token-0123456789"
        var workers: [String: ServeProcess] = [:]
        var urls: [String] = []
        for node in ["node-a", "node-b"] {
            let home = root.file(node)
            try await RealModel.link(into: home, as: "smollm2-135m")
            let worker = try ServeProcess(
                [
                    "--port", "0", "--node", node, "--threads", "1", "--cache-dir", root.file("\(node)-cache"),
                    "--dram-cache", "256MiB",
                ], home: home, environment: ["SLLM_CLUSTER_TOKEN": token], command: "worker")
            urls.append(try #require(worker.address(), "\(worker.output)"))
            workers[node] = worker
        }
        defer { workers.values.forEach { $0.stop() } }
        let (controller, port, server) = try Self.leaseController(
            root, token: token, ["--worker", urls[0], "--worker", urls[1]])
        try #require(controller.waitFor("[Serving] ready"), "\(controller.output)")
        defer { controller.stop() }
        let env = ["SLLM_SERVER": "127.0.0.1:\(port)"]
        let instances = try await Self.deploy(1, server: server, home: root.path, environment: env)
        let id = try #require(instances.first?["id"] as? String)
        let source = try #require(instances.first?["node"] as? String)
        let target = source == "node-a" ? "node-b" : "node-a"

        let request: [String: Any] = [
            "model": "smollm2-135m", "prompt": "Once upon a time", "max_tokens": 480, "ignore_eos": true,
            "temperature": 0,
        ]
        let (status, answer) = try await Self.json(server + "/v1/completions", body: request)
        #expect(status == 200, "\(String(describing: answer))")
        let reference = ((answer as? [String: Any])?["choices"] as? [[String: Any]])?.first?["text"] as? String
        let sourcePID = try #require(workers[source]).process.processIdentifier

        let home = root.path
        let (text, events, migration) = try await Self.stream(request, port: port, after: 4) {
            let migration = try runSLLMBlocking(["migrate", id, "--to", target], home: home, environment: env)
            // The worker it left dies: the stream, now on the other, goes on.
            kill(sourcePID, SIGKILL)
            return migration
        }
        #expect(migration.status == 0, "\(migration.stderr)\n\(controller.output.suffix(2000))")
        #expect(migration.stdout.contains("migrated \(id) on \(source)"), "\(migration.stdout)")
        #expect(migration.stdout.contains("1 request(s) moved"), "\(migration.stdout)")
        #expect(text == reference, "\(events.suffix(800))")
        #expect(!events.contains("\"error\""), "\(events.suffix(800))")
        let (_, after) = try await Self.json(server + "/admin/deployments")
        let nodes =
            (after as? [[String: Any]])?.flatMap {
                (($0["status"] as? [String: Any])?["instances"] as? [[String: Any]]) ?? []
            }.compactMap { $0["node"] as? String }
        #expect(nodes == [target])
    }

    /// Streams `request` from the server on `port`; once `after` events came, runs `action` (on
    /// the stream's thread). Returns the text the stream carried, its raw events, and what
    /// `action` returned.
    static func stream<T: Sendable>(
        _ request: [String: Any], port: Int, after: Int, _ action: @escaping @Sendable () throws -> T
    ) async throws -> (text: String, events: String, result: T) {
        var streamed = request
        streamed["stream"] = true
        let body = String(decoding: try JSONSerialization.data(withJSONObject: streamed), as: UTF8.self)
        let (events, result) = try await onThread { () -> (String, T) in
            let connection = try RawConnection(port: port, timeout: 120)
            connection.send(
                "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            )
            var seen = connection.receive {
                String(decoding: $0, as: UTF8.self).components(separatedBy: "data: {").count > after
            }
            let result = try action()
            seen += connection.receive { String(decoding: $0, as: UTF8.self).contains("data: [DONE]") }
            return (String(decoding: seen, as: UTF8.self), result)
        }
        var text = ""
        for line in events.replacingOccurrences(of: "\r\n", with: "\n").split(separator: "\n")
        where line.hasPrefix("data: {") {
            let event = try? JSONSerialization.jsonObject(with: Data(line.dropFirst(6).utf8)) as? [String: Any]
            text += ((event?["choices"] as? [[String: Any]])?.first?["text"] as? String) ?? ""
        }
        return (text, events, result)
    }

    /// An `sllm controller` on a free port with `flags` (its workers given by `--worker`, or
    /// joining by lease); its port and URL.
    static func leaseController(_ root: TemporaryDirectory, token: String, _ flags: [String]) throws -> (
        ServeProcess, port: Int, server: String
    ) {
        let port = freeTCPPort()
        let controller = try ServeProcess(
            ["--port", String(port)] + flags, home: root.file("control"),
            environment: ["SLLM_CLUSTER_TOKEN": token], command: "controller")
        _ = try #require(controller.address(), "\(controller.output)")
        return (controller, port, "http://127.0.0.1:\(port)")
    }

    /// A worker stopped with SIGTERM (a scale-in, a pod's termination) first has its running
    /// requests migrated to the other worker: the client's stream goes on with the same text.
    @Test func aLeavingWorkerHandsItsStreamsOver() async throws {
        let root = try TemporaryDirectory("cluster-drain")
        defer { root.remove() }
        let token = "cluster-drain-token-0123456789"
        let (controller, port, server) = try Self.leaseController(root, token: token, ["--worker-lease", "10s"])
        defer { controller.stop() }
        var workers: [String: ServeProcess] = [:]
        for node in ["node-a", "node-b"] {
            try await RealModel.link(into: root.file(node), as: "smollm2-135m")
            let worker = try ServeProcess(
                [
                    "--port", "0", "--node", node, "--threads", "1", "--controller", server,
                    "--cache-dir", root.file("\(node)-cache"), "--dram-cache", "256MiB",
                ], home: root.file(node), environment: ["SLLM_CLUSTER_TOKEN": token], command: "worker")
            _ = try #require(worker.address(), "\(worker.output)")
            workers[node] = worker
        }
        defer { workers.values.forEach { $0.stop() } }
        try await Self.waitForNodes(server) { $0 == ["node-a": "alive", "node-b": "alive"] }
        let env = ["SLLM_SERVER": "127.0.0.1:\(port)"]
        let instances = try await Self.deploy(1, server: server, home: root.path, environment: env)
        let holder = try #require(instances.first?["node"] as? String)
        let request: [String: Any] = [
            "model": "smollm2-135m", "prompt": "Once upon a time", "max_tokens": 480, "ignore_eos": true,
            "temperature": 0,
        ]
        let (status, answer) = try await Self.json(server + "/v1/completions", body: request)
        #expect(status == 200, "\(String(describing: answer))")
        let reference = ((answer as? [String: Any])?["choices"] as? [[String: Any]])?.first?["text"] as? String

        let leaving = try #require(workers[holder])
        let pid = leaving.process.processIdentifier
        let (text, events, _) = try await Self.stream(request, port: port, after: 4) { kill(pid, SIGTERM) }
        #expect(text == reference, "\(events.suffix(800))\n\(controller.output.suffix(2000))")
        #expect(leaving.stop() == 0, "\(leaving.output.suffix(1000))")
        #expect(controller.output.contains("worker drained before leaving"), "\(controller.output.suffix(2000))")
        try await Self.waitForNodes(server) { $0[holder] == "left" }
        let (_, after) = try await Self.json(server + "/admin/deployments")
        let nodes =
            (after as? [[String: Any]])?.flatMap {
                (($0["status"] as? [String: Any])?["instances"] as? [[String: Any]]) ?? []
            }.compactMap { $0["node"] as? String }
        #expect(nodes == [holder == "node-a" ? "node-b" : "node-a"])
    }

    /// Starts a long streamed completion on `port`, SIGKILLs `victim` once a few events came,
    /// and returns what the stream said until `until` appears in it.
    static func streamThenKill(host: String = "127.0.0.1", port: Int, key: String? = nil, victim: pid_t, until: String)
        async throws -> String
    {
        let body =
            #"{"model": "smollm2-135m", "prompt": "Once upon a time", "max_tokens": 2000, "ignore_eos": true, "stream": true}"#
        let authorization = key.map { "Authorization: Bearer \($0)\r\n" } ?? ""
        return try await onThread { () -> String in
            let connection = try RawConnection(host: host, port: port, timeout: 60)
            connection.send(
                "POST /v1/completions HTTP/1.1\r\nHost: x\r\n\(authorization)Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            )
            var seen = connection.receive {
                String(decoding: $0, as: UTF8.self).components(separatedBy: "data: {").count > 3
            }
            kill(victim, SIGKILL)
            seen += connection.receive { String(decoding: $0, as: UTF8.self).contains(until) }
            return String(decoding: seen, as: UTF8.self)
        }
    }

    /// The nodes `GET /admin/nodes` reports, by name, with their state.
    static func nodeStates(_ server: String, key: String? = nil) async throws -> [String: String] {
        let (_, nodes) = try await json(server + "/admin/nodes", key: key)
        var states: [String: String] = [:]
        for node in nodes as? [[String: Any]] ?? [] {
            if let name = node["node"] as? String { states[name] = node["state"] as? String }
        }
        return states
    }

    /// Polls `/admin/nodes` until `check` holds (up to a minute); returns the seconds it took.
    @discardableResult
    static func waitForNodes(_ server: String, key: String? = nil, _ check: ([String: String]) -> Bool) async throws
        -> Double
    {
        let start = ContinuousClock.now
        var states: [String: String] = [:]
        while ContinuousClock.now - start < .seconds(60) {
            states = try await nodeStates(server, key: key)
            if check(states) {
                let elapsed = ContinuousClock.now - start
                return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("nodes never reached the state wanted: \(states)")
        return .infinity
    }

    /// Workers join a controller by their lease (`sllm worker --controller`): the controller is
    /// ready once one has joined; a killed worker is lost once its lease runs out and its work
    /// runs on the other; it joins again when restarted; a worker stopped with SIGTERM leaves.
    @Test func workersJoinByTheirLease() async throws {
        let root = try TemporaryDirectory("cluster-lease")
        defer { root.remove() }
        let token = "cluster-lease-test-token-0123456789"
        let (controller, controllerPort, server) = try Self.leaseController(
            root, token: token, ["--worker-lease", "3s"])
        defer { controller.stop() }
        #expect(controller.waitFor("waiting for a worker to join"), "\(controller.output)")
        let (notReady, _) = try await Self.json(server + "/ready")
        #expect(notReady == 503)
        // A controller still waiting for its first worker stops at once when told to.
        let idle = try ServeProcess(
            ["--port", "0"], home: root.file("idle"), environment: ["SLLM_CLUSTER_TOKEN": token], command: "controller")
        #expect(idle.waitFor("waiting for a worker to join"), "\(idle.output)")
        #expect(idle.stop() == 0, "\(idle.output)")

        func startWorker(_ node: String) throws -> ServeProcess {
            let worker = try ServeProcess(
                [
                    "--port", "0", "--node", node, "--threads", "1", "--controller", server,
                    "--cache-dir", root.file("\(node)-cache"), "--dram-cache", "256MiB",
                ], home: root.file(node), environment: ["SLLM_CLUSTER_TOKEN": token], command: "worker")
            _ = try #require(worker.address(), "\(worker.output)")
            return worker
        }
        for node in ["node-a", "node-b"] { try await RealModel.link(into: root.file(node), as: "smollm2-135m") }
        var workers = ["node-a": try startWorker("node-a"), "node-b": try startWorker("node-b")]
        defer { workers.values.forEach { $0.stop() } }
        try await Self.waitForNodes(server) { $0 == ["node-a": "alive", "node-b": "alive"] }
        #expect(controller.waitFor("[Serving] ready"), "\(controller.output)")

        let env = ["SLLM_SERVER": "127.0.0.1:\(controllerPort)"]
        let deploy = try await runSLLM(
            ["deploy", "smollm2-135m", "--keep-alive", "-1"], home: root.path, environment: env)
        #expect(deploy.status == 0, "\(deploy.stderr)")
        let request: [String: Any] = ["model": "smollm2-135m", "prompt": "The capital of France is", "max_tokens": 4]
        let (first, answer) = try await Self.json(server + "/v1/completions", body: request)
        #expect(first == 200, "\(String(describing: answer))")
        let ps = try await runSLLM(["ps", "--json"], home: root.path, environment: env)
        let rows = (try? JSONSerialization.jsonObject(with: Data(ps.stdout.utf8))) as? [[String: Any]] ?? []
        let holder = try #require((rows.first?["instance"] as? [String: Any])?["node"] as? String, "\(ps.stdout)")
        let other = holder == "node-a" ? "node-b" : "node-a"
        // The decision is logged with its terms and the time the start took.
        let decisions = try await runSLLM(["status", "--decisions"], home: root.path, environment: env)
        #expect(decisions.status == 0, "\(decisions.stderr)")
        #expect(
            decisions.stdout.contains("ESTIMATE") && decisions.stdout.contains("locality")
                && decisions.stdout.contains(holder) && decisions.stdout.contains("started"), "\(decisions.stdout)")
        for limit in [
            "0", "1001", "x", "-1", "", "1e3", "%00", "99999999999999999999", "1.5", "0x10", "5%20", "%EF%BC%95",
            String(repeating: "9", count: 500),
        ] {
            let (status, _) = try await Self.json(server + "/admin/decisions?limit=\(limit)")
            #expect(status == 400, "limit \(limit)")
        }
        let (fine, few) = try await Self.json(server + "/admin/decisions?limit=1")
        #expect(fine == 200 && (few as? [Any])?.count == 1)
        let badPolicy = try await runSLLM(["controller", "--placement", "nearest"], home: root.path)
        #expect(badPolicy.status != 0 && badPolicy.stderr.contains("round-robin"), "\(badPolicy.stderr)")
        let nodeFlag = try await runSLLM(["controller", "--memory-budget", "4GiB"], home: root.path)
        #expect(nodeFlag.status != 0 && nodeFlag.stderr.contains("`sllm worker`"), "\(nodeFlag.stderr)")

        // The holder dies: it is lost once its lease runs out, and the next request runs on the other.
        kill(workers[holder]!.process.processIdentifier, SIGKILL)
        workers[holder]!.process.waitUntilExit()
        let detection = try await Self.waitForNodes(server) { $0[holder] == "lost" }
        print("worker death detected in \(String(format: "%.2f", detection)) s (lease 3 s)")
        #expect(controller.output.contains("node \(holder) lost: no lease renewal"), "\(controller.output)")
        let (second, retried) = try await Self.json(server + "/v1/completions", body: request)
        #expect(second == 200, "\(String(describing: retried))")
        let status = try await runSLLM(["status"], home: root.path, environment: env)
        #expect(status.stdout.contains("NODE") && status.stdout.contains("\(holder)  lost"), "\(status.stdout)")

        // Restarted, it joins again; stopped with SIGTERM, it leaves at once.
        workers[holder] = try startWorker(holder)
        try await Self.waitForNodes(server) { $0[holder] == "alive" && $0[other] == "alive" }
        kill(workers[other]!.process.processIdentifier, SIGTERM)
        #expect(workers[other]!.stop() == 0)
        try await Self.waitForNodes(server) { $0[other] == "left" }
        let (third, last) = try await Self.json(server + "/v1/completions", body: request)
        #expect(third == 200, "\(String(describing: last))")
    }

    /// Only one node holds the model: the others fetch it from their peers at their first start
    /// (a scale-out of three chains: each forwards what it has verified to the next), behind the
    /// cluster token; the decision log names the sources and every instance serves.
    @Test func workersFetchCheckpointsFromTheirPeers() async throws {
        let root = try TemporaryDirectory("cluster-peers")
        defer { root.remove() }
        let token = "cluster-peers-test-token-0123456789"
        let (controller, controllerPort, server) = try Self.leaseController(
            root, token: token, ["--worker-lease", "3s", "--default-model", ""])
        defer { controller.stop() }
        try await RealModel.link(into: root.file("node-a"), as: "smollm2-135m")
        var workers: [String: ServeProcess] = [:]
        for node in ["node-a", "node-b", "node-c"] {
            // Room for one instance each: a deployment of three spreads over the three nodes.
            let worker = try ServeProcess(
                [
                    "--port", "0", "--node", node, "--threads", "1", "--controller", server, "--memory-budget",
                    "250MiB", "--cache-dir", root.file("\(node)-cache"), "--dram-cache", "256MiB",
                ], home: root.file(node), environment: ["SLLM_CLUSTER_TOKEN": token], command: "worker")
            workers[node] = worker
            _ = try #require(worker.address(), "\(worker.output)")
        }
        defer { workers.values.forEach { $0.stop() } }
        try await Self.waitForNodes(server) { $0.count == 3 && $0.values.allSatisfy { $0 == "alive" } }

        // A stranger reads no checkpoint from a worker.
        let holder = try #require(workers["node-a"]?.address())
        let (stranger, _) = try await Self.json(holder + "/cluster/v1/checkpoints/smollm2-135m/index")
        #expect(stranger == 401)

        let env = ["SLLM_SERVER": "127.0.0.1:\(controllerPort)"]
        let instances = try await Self.deploy(3, server: server, home: root.path, environment: env)
        #expect(Set(instances.compactMap { $0["node"] as? String }) == ["node-a", "node-b", "node-c"], "\(instances)")
        // The checkpoint's partitions (its `data-*` files), as the holder's store has them.
        let directory = root.file("node-a/models/smollm2-135m")
        let weights = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix("data-") }
            .reduce(0) { total, file in
                var info = stat()
                return total + (stat(directory + "/" + file, &info) == 0 ? Int(info.st_size) : 0)
            }
        #expect(weights > 0)
        for instance in instances where instance["node"] as? String != "node-a" {
            #expect(instance["tier"] as? String == "peer", "\(instance)")
            let fetched = instance["fetched_bytes"] as? [String: Int] ?? [:]
            #expect(fetched.values.reduce(0, +) == weights, "\(instance)")
            #expect(Set(fetched.keys).isSubset(of: ["node-a", "node-b", "node-c"]), "\(instance)")
            let seconds = instance["fetch_seconds"] as? [String: Double] ?? [:]
            #expect(Set(seconds.keys) == Set(fetched.keys) && seconds.values.allSatisfy { $0 > 0 }, "\(instance)")
        }
        // Each fetching node measured its links: a rate per source, and the bytes it fetched.
        let (_, nodes) = try await Self.json(server + "/admin/nodes")
        for node in nodes as? [[String: Any]] ?? [] where node["node"] as? String != "node-a" {
            let links = (node["inventory"] as? [String: Any])?["links"] as? [[String: Any]] ?? []
            #expect(!links.isEmpty && links.allSatisfy { ($0["bytes_per_second"] as? Double ?? 0) > 0 }, "\(node)")
            #expect(links.reduce(0) { $0 + ($1["bytes"] as? Int ?? 0) } == weights, "\(node)")
            #expect(links.allSatisfy { $0["fetches"] as? Int == 1 }, "\(node)")
        }
        // The controller serves the console, whose snapshot shows the cluster: three nodes, the
        // links measured, a usage row per running instance.
        let page = try await rawRequest(
            port: controllerPort, "GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nConnection: close\r\n\r\n")
        #expect(page.status == 200 && page.body.contains("/console/app.js"), "\(page.status)")
        let (_, console) = try await Self.json(server + "/admin/console")
        let snapshot = (console as? [String: Any])?["snapshot"] as? [String: Any] ?? [:]
        let shown = snapshot["nodes"] as? [[String: Any]] ?? []
        #expect(shown.count == 3, "\(shown)")
        let inventories = shown.compactMap { $0["inventory"] as? [String: Any] }
        #expect(inventories.compactMap { $0["links"] as? [Any] }.filter { !$0.isEmpty }.count == 2)
        #expect(inventories.compactMap { $0["usage"] as? [Any] }.reduce(0) { $0 + $1.count } == 3)
        // Each fetching node now holds the checkpoint in its store.
        for node in ["node-b", "node-c"] {
            #expect(FileManager.default.fileExists(atPath: root.file("\(node)/models/smollm2-135m/index")))
        }
        let (_, decisions) = try await Self.json(server + "/admin/decisions")
        let fetchers = (decisions as? [[String: Any]] ?? []).filter { $0["sources"] != nil }
        #expect(fetchers.count == 2, "\(String(describing: decisions))")
        for _ in 0..<3 {
            let (status, answer) = try await Self.json(
                server + "/v1/completions", body: ["model": "smollm2-135m", "prompt": "Hello", "max_tokens": 3])
            #expect(status == 200, "\(String(describing: answer))")
        }
    }

    /// A cluster whose nodes hold nothing: `sllm store serve` is its remote store. A model only
    /// the store has is deployed (its facts come from there) and each node fetches it at its first
    /// start: from the store, since this controller runs with `--no-peer-fetch`. A worker with
    /// `--no-keep-fetched` drops the checkpoint once its instance stops; the other keeps it. The
    /// store serves checkpoint files to anyone, and nothing else.
    @Test func aRemoteStoreServesNodesThatHoldNothing() async throws {
        let root = try TemporaryDirectory("cluster-remote")
        defer { root.remove() }
        try await RealModel.link(into: root.file("store"), as: "smollm2-135m")
        let store = try ServeProcess(["serve", "--port", "0"], home: root.file("store"), command: "store")
        defer { store.stop() }
        let storeURL = try #require(store.address(), "\(store.output)")
        var request = URLRequest(url: URL(string: storeURL + "/smollm2-135m/index")!)
        request.setValue("bytes=0-15", forHTTPHeaderField: "Range")
        let (head, headResponse) = try await URLSession.shared.data(for: request)
        #expect((headResponse as? HTTPURLResponse)?.statusCode == 206 && head.count == 16)
        for path in [
            "/smollm2-135m/..%2F..%2Fstate.sqlite", "/smollm2-135m/missing", "/nothing/index",
            "/models/smollm2-135m/index", "/smollm2-135m", "/smollm2-135m/index/x", "/%2e%2e/%2e%2e/etc/passwd",
        ] {
            let (status, _) = try await Self.json(storeURL + path)
            #expect(status == 404 || status == 400, "\(path): \(status)")
        }
        // A bounded fuzz of the store's paths and ranges (it answers anyone: no token): never a
        // 5xx or a hang, and it still serves afterwards. Ranges are mutated on the index only,
        // so that no round reads the whole partition.
        let storePort = try #require(URL(string: storeURL)?.port)
        var random = SeededGenerator(seed: 0x5707E)
        let alphabet = Array("/.%2e0123456789-=,bytesindx".utf8)
        var statuses: [Int: Int] = [:]
        for round in 0..<Fuzz.iterations(default: 200) {
            var path = Array((round % 3 == 0 ? "/smollm2-135m/data-0000" : "/smollm2-135m/index").utf8)
            var range = Array("bytes=0-4095".utf8)
            let mutatesRange = round % 3 == 2
            for _ in 0..<Int.random(in: 1...3, using: &random) {
                var bytes = mutatesRange ? range : path
                let at = Int.random(in: 0...bytes.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: bytes.insert(alphabet.randomElement(using: &random)!, at: at)
                case 1 where at < bytes.count: bytes.remove(at: at)
                default: if at < bytes.count { bytes[at] = alphabet.randomElement(using: &random)! }
                }
                if mutatesRange { range = bytes } else { path = bytes }
            }
            if path.first != UInt8(ascii: "/") { path.insert(UInt8(ascii: "/"), at: 0) }
            let request =
                "GET \(String(decoding: path, as: UTF8.self)) HTTP/1.1\r\nHost: x\r\nRange: \(String(decoding: range, as: UTF8.self))\r\nConnection: close\r\n\r\n"
            let answer = try await onThread { () -> String in
                let connection = try RawConnection(port: storePort, timeout: 30)
                connection.send(request)
                return String(
                    decoding: connection.receive { $0.contains(UInt8(ascii: "\n")) }.prefix(64), as: UTF8.self)
            }
            let status = Int(answer.split(separator: " ").dropFirst().first ?? "") ?? 0
            statuses[status, default: 0] += 1
            #expect((200..<500).contains(status), "\(request.debugDescription): \(answer.debugDescription)")
        }
        print("store fuzz: statuses \(statuses.sorted { $0.key < $1.key })")

        let token = "cluster-remote-test-token-0123456789"
        let controllerPort = freeTCPPort()
        let server = "http://127.0.0.1:\(controllerPort)"
        let controller = try ServeProcess(
            ["--port", String(controllerPort), "--worker-lease", "3s", "--default-model", "", "--no-peer-fetch"],
            home: root.file("control"), environment: ["SLLM_CLUSTER_TOKEN": token], command: "controller")
        defer { controller.stop() }
        _ = try #require(controller.address(), "\(controller.output)")
        var workers: [ServeProcess] = []
        defer { workers.forEach { $0.stop() } }
        for node in ["node-a", "node-b"] {
            let worker = try ServeProcess(
                [
                    "--port", "0", "--node", node, "--threads", "1", "--controller", server, "--remote", storeURL,
                    "--memory-budget", "250MiB", "--cache-dir", root.file("\(node)-cache"), "--dram-cache", "256MiB",
                ] + (node == "node-b" ? ["--no-keep-fetched"] : []),
                home: root.file(node), environment: ["SLLM_CLUSTER_TOKEN": token], command: "worker")
            workers.append(worker)
            _ = try #require(worker.address(), "\(worker.output)")
        }
        try await Self.waitForNodes(server) { $0.count == 2 && $0.values.allSatisfy { $0 == "alive" } }

        let env = ["SLLM_SERVER": "127.0.0.1:\(controllerPort)"]
        let instances = try await Self.deploy(2, server: server, home: root.path, environment: env)
        #expect(Set(instances.compactMap { $0["node"] as? String }) == ["node-a", "node-b"], "\(instances)")
        let directory = root.file("store/models/smollm2-135m")
        let weights = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix("data-") }
            .reduce(0) { total, file in
                var info = stat()
                return total + (stat(directory + "/" + file, &info) == 0 ? Int(info.st_size) : 0)
            }
        for instance in instances {
            #expect(instance["tier"] as? String == "remote", "\(instance)")
            let fetched = instance["fetched_bytes"] as? [String: Int] ?? [:]
            #expect(fetched == [storeURL: weights], "\(instance)")
        }
        let (_, decisions) = try await Self.json(server + "/admin/decisions")
        #expect(
            (decisions as? [[String: Any]] ?? []).allSatisfy { $0["sources"] == nil },
            "\(String(describing: decisions))")
        let (status, answer) = try await Self.json(
            server + "/v1/completions", body: ["model": "smollm2-135m", "prompt": "Hello", "max_tokens": 3])
        #expect(status == 200, "\(String(describing: answer))")
        for node in ["node-a", "node-b"] {
            #expect(FileManager.default.fileExists(atPath: root.file("\(node)/models/smollm2-135m/index")), "\(node)")
        }

        // Stopped (with no minimum to keep): node-b drops what it fetched, node-a keeps it.
        let update = try await runSLLM(["update", "smollm2-135m", "--min", "0"], home: root.path, environment: env)
        #expect(update.status == 0, "\(update.stderr)")
        let (stopped, _) = try await Self.json(server + "/admin/deployments/smollm2-135m/stop", body: [:])
        #expect(stopped == 200)
        var dropped = false
        for _ in 0..<100 where !dropped {
            dropped = !FileManager.default.fileExists(atPath: root.file("node-b/models/smollm2-135m"))
            if !dropped { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(dropped, "\(workers[1].output)")
        #expect(FileManager.default.fileExists(atPath: root.file("node-a/models/smollm2-135m/index")))
        #expect(workers[1].output.contains("dropped the fetched checkpoint of smollm2-135m"))
    }

    /// Two controllers share one PostgreSQL database: one leads, the other forwards requests to
    /// it and tells workers where it is. The leader is killed mid-stream: the stream ends with
    /// `controller_lost`, the follower takes over, adopts the running instance (no cold start)
    /// and serves; the old leader, restarted, follows; the new leader stopped with SIGTERM hands
    /// over at once. Keys are required: a key made through the first leader works at the next.
    @Test func controllersFailOver() async throws {
        let postgres = try PostgresServer.start()
        let (database, stateURL) = try postgres.createDatabase("ha")
        let root = try TemporaryDirectory("cluster-ha")
        defer { root.remove() }
        let token = "cluster-ha-test-token-0123456789"
        let admin = "cluster-ha-admin-key-0123456789"
        let ports = [freeTCPPort(), freeTCPPort()]
        let urls = ports.map { "http://127.0.0.1:\($0)" }
        func startController(_ index: Int) throws -> ServeProcess {
            let controller = try ServeProcess(
                ["--port", String(ports[index]), "--state-url", stateURL, "--worker-lease", "3s", "--auth", "on"],
                home: root.file("control-\(index)"),
                environment: ["SLLM_CLUSTER_TOKEN": token, "SLLM_ADMIN_KEY": admin],
                command: "controller")
            _ = try #require(controller.address(), "\(controller.output)")
            return controller
        }
        var controllers = [try startController(0)]
        try #require(controllers[0].waitFor("leading the cluster"), "\(controllers[0].output)")
        controllers.append(try startController(1))
        defer { controllers.forEach { $0.stop() } }
        try #require(controllers[1].waitFor("following"), "\(controllers[1].output)")

        var workers: [ServeProcess] = []
        for node in ["node-a", "node-b"] {
            try await RealModel.link(into: root.file(node), as: "smollm2-135m")
            let worker = try ServeProcess(
                [
                    "--port", "0", "--node", node, "--threads", "1", "--controller", urls[1], "--controller", urls[0],
                    "--cache-dir", root.file("\(node)-cache"), "--dram-cache", "256MiB",
                ], home: root.file(node), environment: ["SLLM_CLUSTER_TOKEN": token], command: "worker")
            _ = try #require(worker.address(), "\(worker.output)")
            workers.append(worker)
        }
        defer { workers.forEach { $0.stop() } }
        // Through the follower: the nodes (the leader's), a deployment, an answer.
        try await Self.waitForNodes(urls[1], key: admin) { $0 == ["node-a": "alive", "node-b": "alive"] }
        let (followerReady, readiness) = try await Self.json(urls[1] + "/ready")
        #expect(followerReady == 200 && "\(readiness ?? "")".contains("follower"))
        let deploy = try await runSLLM(
            ["deploy", "smollm2-135m", "--keep-alive", "-1"], home: root.path,
            environment: ["SLLM_SERVER": "127.0.0.1:\(ports[1])", "SLLM_API_KEY": admin])
        #expect(deploy.status == 0, "\(deploy.stderr)")
        // A user key made through the follower (by the leader, in the shared database).
        let (created, made) = try await Self.json(urls[1] + "/admin/keys", body: ["name": "ha"], key: admin)
        let userKey = try #require(
            (made as? [String: Any])?["key"] as? String, "\(created) \(String(describing: made))")
        let request: [String: Any] = ["model": "smollm2-135m", "prompt": "The capital of France is", "max_tokens": 4]
        let (stranger, _) = try await Self.json(urls[1] + "/v1/completions", body: request)
        #expect(stranger == 401)
        let (first, answer) = try await Self.json(urls[1] + "/v1/completions", body: request, key: userKey)
        #expect(first == 200, "\(String(describing: answer))")
        try await Self.fuzzForwarding(port: ports[1], userKey: userKey)
        let (again, _) = try await Self.json(urls[1] + "/v1/completions", body: request, key: userKey)
        #expect(again == 200, "the follower still forwards after the fuzz")

        // The leader dies while a stream passes through the follower.
        let streamed = try await Self.streamThenKill(
            port: ports[1], key: admin, victim: controllers[0].process.processIdentifier, until: "controller_lost")
        let killed = ContinuousClock.now
        controllers[0].process.waitUntilExit()
        #expect(streamed.contains("controller_lost"), "\(streamed.suffix(600))")

        // The follower takes over and serves on the instance that ran on (adopted, no cold start).
        var failover: Duration?
        var served: [String: Any]?
        while ContinuousClock.now - killed < .seconds(60) {
            let (status, answer) = try await Self.json(urls[1] + "/v1/completions", body: request, key: userKey)
            if status == 200 {
                failover = ContinuousClock.now - killed
                served = answer as? [String: Any]
                break
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        let took = try #require(failover, "\(controllers[1].output)")
        print("controller failover: first answer \(took) after the leader was killed (worker lease 3 s)")
        #expect(
            (served?["timings"] as? [String: Any])?["cold_start"] as? Bool == false, "\(String(describing: served))")
        #expect(controllers[1].output.contains("adopted instance"), "\(controllers[1].output)")
        #expect(try postgres.psql(database, "SELECT epoch FROM leader") == "2")
        // The first leader's cold start is in the decision log.
        #expect(
            try postgres.psql(database, "SELECT count(*) FROM placement_decision WHERE outcome = 'started'") != "0")

        // The old leader comes back as a follower; the new one, stopped, hands over at once.
        controllers[0] = try startController(0)
        try #require(controllers[0].waitFor("following"), "\(controllers[0].output)")
        #expect(controllers[1].stop() == 0)
        try #require(controllers[0].waitFor("leading the cluster"), "\(controllers[0].output)")
        try await Self.waitForNodes(urls[0], key: admin) { $0["node-a"] == "alive" && $0["node-b"] == "alive" }
        let (third, last) = try await Self.json(urls[0] + "/v1/completions", body: request, key: userKey)
        #expect(third == 200, "\(String(describing: last))")
        #expect(try postgres.psql(database, "SELECT epoch FROM leader") == "3")
    }

    /// Bounded fuzz of what a follower forwards (`SLLM_FUZZ_ITERATIONS`, default 150): random
    /// methods, paths, hop-by-hop and forwarding headers, keys and bodies sent to the follower
    /// never get a 500 (the leader's own 4xx, or 502/503 for a hop that failed, come back), and
    /// no admin route answers 2xx without the admin key but the console's read-only ones.
    static func fuzzForwarding(port: Int, userKey: String) async throws {
        let iterations = Fuzz.iterations(default: 150)
        var generator = SeededGenerator(seed: 131)
        let pieces = [
            "v1", "completions", "models", "admin", "nodes", "keys", "console", "deployments", "cluster", "lease",
            "smollm2-135m", "..", ".", "%2e%2e", "%2F", "health", "ready", "metrics", "", "x?y=/admin",
        ]
        let headers = [
            "Connection: upgrade", "Upgrade: websocket", "Transfer-Encoding: identity", "TE: trailers",
            "sllm-forwarded-by: 127.0.0.1", "Keep-Alive: timeout=1", "Trailer: x",
            "Proxy-Authorization: Basic eA==", "X-Long: " + String(repeating: "a", count: 4000), "Accept: text/html",
        ]
        let bodies = [
            "", "{}", #"{"model": "smollm2-135m", "prompt": "Hi", "max_tokens": 2}"#, #"{"model": 1}"#, "[", "\u{0}",
            #"{"model": "smollm2-135m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "stream": true}"#,
        ]
        var statuses: [Int: Int] = [:]
        for _ in 0..<iterations {
            let path =
                "/"
                + (0..<Int.random(in: 0...4, using: &generator)).map { _ in pieces.randomElement(using: &generator)! }
                .joined(separator: "/")
            let method = ["GET", "POST", "DELETE", "PATCH", "PUT", "HEAD", "OPTIONS"].randomElement(using: &generator)!
            let key = [nil, userKey, "wrong"].randomElement(using: &generator)!
            let body = bodies.randomElement(using: &generator)!
            var text = "\(method) \(path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            text += "Content-Length: \(body.utf8.count)\r\n"
            for _ in 0..<Int.random(in: 0...2, using: &generator) {
                text += headers.randomElement(using: &generator)! + "\r\n"
            }
            if let key { text += "Authorization: Bearer \(key)\r\n" }
            do {
                let response = try await rawRequestHead(port: port, text + "\r\n" + body, timeout: 30)
                statuses[response.status, default: 0] += 1
                #expect(response.status != 500, "500 for \(method) \(path)")
                let effective = path.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
                let components = resolvedPathComponents(effective)
                let readable = key == userKey && userReadableAdminRoutes.contains(components)
                #expect(
                    !(200..<300).contains(response.status) || !effective.lowercased().contains("admin") || readable,
                    "\(response.status) for \(method) \(path) with \(key == nil ? "no key" : key == userKey ? "the user key" : "a wrong key")"
                )
            } catch {
                statuses[0, default: 0] += 1
            }
        }
        print("follower forwarding fuzz: \(iterations) requests; statuses \(statuses.sorted { $0.key < $1.key })")
    }

    /// A certificate authority and a certificate for 127.0.0.1 signed by it, made with openssl.
    static func makeCertificates(in directory: TemporaryDirectory) throws {
        let steps: [[String]] = [
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", directory.file("ca.key"), "-out", directory.file("ca.pem"), "-days", "2", "-subj",
                "/CN=sllm test authority",
            ],
            [
                "openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                directory.file("node.key"), "-out", directory.file("node.csr"), "-subj", "/CN=127.0.0.1",
            ],
        ]
        for step in steps {
            let (status, output) = try runProgram(step)
            try #require(status == 0, "\(step.joined(separator: " ")): \(output)")
        }
        try writeFile(directory.file("san.cnf"), Array("subjectAltName=IP:127.0.0.1\n".utf8))
        let (status, output) = try runProgram([
            "openssl", "x509", "-req", "-in", directory.file("node.csr"), "-CA", directory.file("ca.pem"), "-CAkey",
            directory.file("ca.key"), "-CAcreateserial", "-out", directory.file("node.pem"), "-days", "2", "-extfile",
            directory.file("san.cnf"),
        ])
        try #require(status == 0, "openssl x509: \(output)")
    }

    /// The cluster over TLS: a worker serving HTTPS joins a controller serving HTTPS, both
    /// trusting the cluster's authority (`--tls-ca`); a deployment answers through them. A worker
    /// that does not trust the authority cannot join, plain HTTP to a TLS port gets nothing, and
    /// bad certificate settings stop a start with the file named.
    @Test func theClusterSpeaksTLS() async throws {
        let root = try TemporaryDirectory("cluster-tls")
        defer { root.remove() }
        try Self.makeCertificates(in: root)
        let token = "cluster-tls-test-token-0123456789"
        let tls = ["--tls-cert", root.file("node.pem"), "--tls-key", root.file("node.key")]
        let port = freeTCPPort()
        let base = "https://127.0.0.1:\(port)"
        let controller = try ServeProcess(
            ["--port", String(port), "--tls-ca", root.file("ca.pem")] + tls, home: root.file("control"),
            environment: ["SLLM_CLUSTER_TOKEN": token], command: "controller")
        defer { controller.stop() }
        _ = try #require(controller.address(), "\(controller.output)")
        #expect(controller.output.contains("serving on https://"), "\(controller.output)")
        try await RealModel.link(into: root.file("node-a"), as: "smollm2-135m")
        let worker = try ServeProcess(
            [
                "--port", "0", "--node", "node-a", "--threads", "1", "--controller", base, "--tls-ca",
                root.file("ca.pem"), "--cache-dir", root.file("a-cache"), "--dram-cache", "256MiB",
            ] + tls, home: root.file("node-a"), environment: ["SLLM_CLUSTER_TOKEN": token], command: "worker")
        defer { worker.stop() }
        _ = try #require(worker.address(), "\(worker.output)")
        #expect(worker.output.contains("serving on https://"), "\(worker.output)")
        try #require(controller.waitFor("[Serving] ready"), "\(controller.output)")

        func curl(_ path: String, _ body: String? = nil) throws -> String {
            var arguments = ["curl", "-sS", "--max-time", "60", "--cacert", root.file("ca.pem"), base + path]
            if let body { arguments += ["-H", "Content-Type: application/json", "-d", body] }
            return try runProgram(arguments).output
        }
        #expect(try curl("/admin/nodes").contains("\"alive\""))
        #expect(
            try curl("/admin/deployments", #"{"model": "smollm2-135m", "keep_alive": "-1"}"#).contains("smollm2-135m"))
        let answer = try curl("/v1/completions", #"{"model": "smollm2-135m", "prompt": "Hello", "max_tokens": 3}"#)
        #expect(answer.contains("\"choices\""), "\(answer)")
        // Without the authority, neither curl nor a worker trusts the controller.
        let (untrusted, _) = try runProgram(["curl", "-sS", "--max-time", "10", base + "/health"])
        #expect(untrusted != 0)
        let (plain, _) = try runProgram(["curl", "-sS", "--max-time", "10", "http://127.0.0.1:\(port)/health"])
        #expect(plain != 0)
        let stranger = try ServeProcess(
            [
                "--port", "0", "--node", "node-b", "--threads", "1", "--controller", base, "--cache-dir",
                root.file("b-cache"), "--dram-cache", "64MiB",
            ], home: root.file("node-b"), environment: ["SLLM_CLUSTER_TOKEN": token], command: "worker")
        defer { stranger.stop() }
        #expect(stranger.waitFor("cannot renew the lease"), "\(stranger.output)")
        #expect(stranger.output.lowercased().contains("certificate"), "\(stranger.output)")
        #expect(try curl("/admin/nodes").contains("node-b") == false)

        // Bad settings stop the start, naming what is wrong.
        for (arguments, expected) in [
            (["--tls-cert", root.file("missing.pem"), "--tls-key", root.file("node.key")], "missing.pem"),
            (["--tls-cert", root.file("node.pem")], "go together"),
            (["--tls-cert", root.file("node.key"), "--tls-key", root.file("node.key")], "node.key"),
        ] {
            let result = try await runSLLM(["serve", "--port", "0"] + arguments, home: root.file("bad"))
            #expect(result.status != 0 && result.stderr.contains(expected), "\(arguments): \(result.stderr)")
        }
        let badCA = try await runSLLM(
            ["controller", "--port", "0", "--tls-ca", root.file("node.key")], home: root.file("bad"),
            environment: ["SLLM_CLUSTER_TOKEN": token])
        #expect(badCA.status != 0 && badCA.stderr.contains("--tls-ca"), "\(badCA.stderr)")
    }
}
