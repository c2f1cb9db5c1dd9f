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
    static func json(_ url: String, body: [String: Any]? = nil) async throws -> (Int, Any?) {
        var request = URLRequest(url: URL(string: url)!)
        if let body {
            request.httpMethod = "POST"
            request.httpBody = try JSONSerialization.data(withJSONObject: body)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, try? JSONSerialization.jsonObject(with: data))
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

        let controllerPort = freeTCPPort()
        let controller = try ServeProcess(
            ["--port", String(controllerPort), "--worker", urls[0], "--worker", urls[1]], home: root.file("control"),
            environment: ["SLLM_CLUSTER_TOKEN": token], command: "controller")
        let server = try #require(controller.address(), "\(controller.output)")
        try #require(controller.waitFor("[Serving] ready"), "\(controller.output)")
        defer { controller.stop() }
        #expect(controller.output.contains("controller of node-a, node-b"), "\(controller.output)")
        let env = ["SLLM_SERVER": "127.0.0.1:\(controllerPort)"]

        let deploy = try runSLLM(["deploy", "smollm2-135m", "--keep-alive", "-1"], home: root.path, environment: env)
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
        let ps = try runSLLM(["ps"], home: root.path, environment: env)
        #expect(ps.stdout.contains("NODE") && ps.stdout.contains(node ?? "?"), "\(ps.stdout)")

        // The worker holding the instance is killed: the request on it fails with `worker_lost`
        // naming it, the instance is dropped, and the next request starts on the other worker.
        let dying = node == "node-a" ? 0 : 1
        kill(workers[dying].process.processIdentifier, SIGKILL)
        workers[dying].process.waitUntilExit()
        let (lost, failure) = try await Self.json(
            server + "/v1/completions", body: ["model": "smollm2-135m", "prompt": "Hello", "max_tokens": 4])
        let details = (failure as? [String: Any])?["error"] as? [String: Any]
        #expect(lost == 503 && details?["code"] as? String == "worker_lost", "\(String(describing: failure))")
        #expect((details?["message"] as? String)?.contains(node ?? "?") == true)
        let (again, _) = try await Self.json(
            server + "/v1/completions", body: ["model": "smollm2-135m", "prompt": "Hello", "max_tokens": 4])
        #expect(again == 200)
        let (_, after) = try await Self.json(server + "/admin/deployments")
        let survivors =
            (after as? [[String: Any]])?.flatMap {
                (($0["status"] as? [String: Any])?["instances"] as? [[String: Any]]) ?? []
            } ?? []
        #expect(survivors.compactMap { $0["node"] as? String } == [dying == 0 ? "node-b" : "node-a"])

        // A controller given a wrong token cannot use the workers, and says which.
        let refused = try runSLLM(
            ["controller", "--port", "0", "--worker", urls[1 - dying]], home: root.file("control-2"),
            environment: ["SLLM_CLUSTER_TOKEN": "not-the-cluster-token-000"])
        #expect(refused.status != 0 && refused.stderr.contains("worker \(urls[1 - dying])"), "\(refused.stderr)")
        #expect(controller.stop() == 0)
    }
}
