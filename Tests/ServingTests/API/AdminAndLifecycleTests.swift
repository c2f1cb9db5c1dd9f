import Foundation
import NIOCore
import NIOHTTP1
import TestSupport
import Testing

@testable import Serving

@Suite(.serialized) struct AdminAndLifecycleTests {
    @Test func deploymentsAreCreatedUpdatedAndDeleted() async throws {
        let server = try await TestServer.start()
        let created = try await server.request(
            .POST, "/admin/deployments",
            json: [
                "model": "smollm2-135m", "name": "small", "max_instances": 3, "target_concurrency": 2,
                "keep_alive": "10m", "context_length": 1024,
            ])
        #expect(created.status == 201)
        let spec = (created.json["status"] as? [String: Any])?["spec"] as? [String: Any] ?? [:]
        #expect((spec["scaling"] as? [String: Any])?["keep_alive"] as? String == "10m")
        #expect((created.json["status"] as? [String: Any])?["context_length"] as? Int == 1024)
        #expect(
            try await server.request(.POST, "/admin/deployments", json: ["model": "smollm2-135m", "name": "small"])
                .status == 409)
        let invalid = try await server.request(
            .POST, "/admin/deployments",
            json: ["model": "smollm2-135m", "name": "x", "min_instances": 3, "max_instances": 1])
        #expect(invalid.status == 400 && invalid.errorParam == "min_instances")
        let unpullable = try await server.request(.POST, "/admin/deployments", json: ["model": "not-a-model"])
        #expect(unpullable.status == 400 && unpullable.errorParam == "model")
        let badName = try await server.request(
            .POST, "/admin/deployments", json: ["model": "smollm2-135m", "name": "../etc"])
        #expect(badName.status == 400)

        // The context limit applies to requests of that deployment.
        let long = try await server.request(
            .POST, "/v1/completions", json: ["model": "small", "prompt": "Hello", "max_tokens": 1024])
        #expect(long.status == 400)
        #expect(
            try await server.request(
                .POST, "/v1/completions", json: ["model": "small", "prompt": "Hello", "max_tokens": 2]
            ).status == 200)

        #expect(
            try await server.request(.PATCH, "/admin/deployments/small", json: ["max_instances": 1, "keep_alive": -1])
                .status == 200)
        let updated = try await server.deployment("small")
        #expect(
            ((updated["status"] as? [String: Any])?["spec"] as? [String: Any]).flatMap {
                ($0["scaling"] as? [String: Any])?["max_instances"] as? Int
            } == 1)
        #expect(try await server.request(.PATCH, "/admin/deployments/nope", json: ["max_instances": 1]).status == 404)

        #expect(try await server.request(.DELETE, "/admin/deployments/small").status == 200)
        #expect(
            try await server.request(.POST, "/v1/completions", json: ["model": "small", "prompt": "Hello"]).status
                == 404)
        #expect(try await server.request(.DELETE, "/admin/deployments/small").status == 404)
        let models = try await server.request(.GET, "/v1/models").json["data"] as? [[String: Any]] ?? []
        #expect(models.map { $0["id"] as? String } == ["smollm2-135m"])
        try await server.stop()
    }

    @Test func aModelThatIsNotLocalIsPulledWithoutBlockingTheAPI() async throws {
        let server = try await TestServer.start { $0.defaultModel = "" }
        let created = try await server.request(
            .POST, "/admin/deployments", json: ["model": try RealModel.ggufPath(), "name": "pulled"])
        #expect(created.status == 201)
        #expect(try await server.request(.GET, "/health").status == 200)
        // A request waits for the pull, then cold-starts.
        let reply = try await server.request(
            .POST, "/v1/completions",
            json: ["model": "pulled", "prompt": "The capital of France is", "max_tokens": 3, "temperature": 0])
        #expect(reply.status == 200)
        #expect(((reply.json["choices"] as? [[String: Any]])?.first?["text"] as? String) == " Paris.\n")
        #expect(try await server.deployment("pulled")["state"] as? String == "ready")
        // Without a name, the deployment is named as `sllm pull` names the model.
        let unnamed = try await server.request(.POST, "/admin/deployments", json: ["model": try RealModel.ggufPath()])
        #expect(
            ((unnamed.json["status"] as? [String: Any])?["spec"] as? [String: Any])?["name"] as? String
                == "smollm2-135m-instruct.q4_1")
        try await server.stop()
    }

    @Test func stateSurvivesARestartScaledToZero() async throws {
        let directory = try TemporaryDirectory("restart")
        let first = try await TestServer.start(directory: directory)
        #expect(
            try await first.request(
                .POST, "/admin/deployments",
                json: ["model": "smollm2-135m", "name": "kept", "max_instances": 2, "keep_alive": -1]
            ).status == 201)
        #expect(
            try await first.request(.POST, "/v1/completions", json: ["model": "kept", "prompt": "Hi", "max_tokens": 2])
                .status == 200)
        #expect(try await first.request(.DELETE, "/admin/deployments/smollm2-135m").status == 200)
        let key = try await first.request(.POST, "/admin/keys", json: ["name": "ci"]).json["key"] as? String
        try await first.stop(removing: false)

        let second = try await TestServer.start(directory: directory)
        let models = try await second.request(.GET, "/v1/models").json["data"] as? [[String: Any]] ?? []
        // The deleted default model is not deployed again; the other deployment is back, with no instance.
        #expect(models.map { $0["id"] as? String } == ["kept"])
        #expect(try await second.instances("kept").isEmpty)
        let scaling = ((try await second.deployment("kept"))["status"] as? [String: Any]).flatMap {
            ($0["spec"] as? [String: Any])?["scaling"] as? [String: Any]
        }
        #expect(scaling?["max_instances"] as? Int == 2 && scaling?["keep_alive"] as? String == "forever")
        let keys = try await second.request(.GET, "/admin/keys").array
        #expect(keys.map { $0["name"] as? String } == ["ci"] && key != nil)
        try await second.stop()
    }

    @Test func apiKeysGuardTheAPIAndAdminKeysTheAdminAPI() async throws {
        let server = try await TestServer.start {
            $0.auth = .on
            $0.adminKey = "admin-secret"
            $0.apiKeys = ["user-key"]
        }
        let chat: [String: Any] = [
            "model": "smollm2-135m", "messages": [["role": "user", "content": "Hi"]], "max_tokens": 1,
        ]
        let missing = try await server.request(.POST, "/v1/chat/completions", json: chat)
        #expect(
            missing.status == 401
                && (missing.json["error"] as? [String: Any])?["type"] as? String == "authentication_error")
        #expect(missing.headers["WWW-Authenticate"].first == "Bearer")
        #expect(try await server.request(.POST, "/v1/chat/completions", json: chat, key: "wrong").status == 401)
        #expect(try await server.request(.POST, "/v1/chat/completions", json: chat, key: "user-key").status == 200)
        #expect(try await server.request(.GET, "/v1/models", key: "admin-secret").status == 200)
        #expect(try await server.request(.GET, "/admin/deployments", key: "user-key").status == 403)
        #expect(try await server.request(.GET, "/admin/deployments").status == 401)
        #expect(try await server.request(.GET, "/health").status == 200)
        #expect(try await server.request(.GET, "/metrics").status == 200)

        let created = try await server.request(.POST, "/admin/keys", json: ["name": "app"], key: "admin-secret")
        #expect(created.status == 201)
        let secret = created.json["key"] as? String ?? ""
        let id = created.json["id"] as? String ?? ""
        #expect(secret.hasPrefix("sk-sllm-"))
        #expect(try await server.request(.GET, "/v1/models", key: secret).status == 200)
        #expect(try await server.request(.GET, "/admin/keys", key: secret).status == 403)
        #expect(try await server.request(.DELETE, "/admin/keys/\(id)", key: "admin-secret").status == 200)
        #expect(try await server.request(.GET, "/v1/models", key: secret).status == 401)
        // A key's name is a printable one-line label (the fuzz stored "\u{0}" as an empty name).
        for name in ["", "  ", "\u{0}", "a\nb", "tab\there", String(repeating: "k", count: 129)] {
            let refused = try await server.request(.POST, "/admin/keys", json: ["name": name], key: "admin-secret")
            #expect(
                refused.status == 400 && refused.errorParam == "name", "\(name.debugDescription): \(refused.status)")
        }
        #expect(try await server.request(.GET, "/admin/keys", key: "admin-secret").array.isEmpty)
        try await server.stop()
    }

    @Test func bindingBeyondLoopbackWithoutKeysIsRefused() throws {
        let directory = try TemporaryDirectory("open")
        defer { directory.remove() }
        var configuration = ServeConfiguration(dataDirectory: directory.file("home"))
        configuration.host = "0.0.0.0"
        configuration.cacheDirectory = directory.file("cache")
        #expect { try Server(configuration: configuration) } throws: { error in
            (error as? ServingError)?.message.contains("requires API keys") == true
        }
    }

    @Test func requestsOnAnOpenConnectionGet503OnceShutdownBegan() async throws {
        let server = try await TestServer.start()
        #expect(try await server.request(.GET, "/ready").status == 200)
        // What the shutdown gate does on SIGTERM, before the listener closes.
        server.server.lifecycle.beginShutdown()
        let reply = try await server.request(
            .POST, "/v1/completions", json: ["model": "smollm2-135m", "prompt": "Hi", "max_tokens": 1])
        #expect(reply.status == 503)
        #expect((reply.json["error"] as? [String: Any])?["code"] as? String == "shutting_down")
        #expect(try await server.request(.GET, "/ready").status == 503)
        #expect(try await server.request(.GET, "/health").status == 200)
        try await server.stop()
    }

    /// A stream still running when `shutdown_timeout` passes ends with an error event the
    /// OpenAI clients raise (then `[DONE]`), not by just stopping.
    @Test func aStreamCutByTheShutdownDeadlineEndsWithAnErrorEvent() async throws {
        // The streams are cut a quarter of the deadline (at most 2 s) before it: room for the error
        // event even on a loaded CI machine. 4000 tokens outlast it.
        let server = try await TestServer.start { $0.shutdownTimeout = .seconds(8) }
        let (status, lines) = try await streamStoppedAfterTheFirstEvent(
            server,
            [
                "model": "smollm2-135m", "prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": true,
                "stream": true,
            ])
        #expect(status == 200)
        let data = lines.filter { $0.hasPrefix("data: ") }
        #expect(data.last == "data: [DONE]", "\(data.suffix(2))")
        let error = TestServer.events(data).last?["error"] as? [String: Any]
        #expect(error?["code"] as? String == "shutting_down", "\(data.suffix(2))")
        #expect((error?["message"] as? String)?.contains("shutdown_timeout") == true)
    }

    @Test func shutdownLetsInFlightStreamsFinish() async throws {
        // A deadline far beyond what 48 tokens take even on a loaded CI machine: the test is
        // about the stream finishing whole, not about how fast.
        let server = try await TestServer.start { $0.shutdownTimeout = .seconds(120) }
        let (status, lines) = try await streamStoppedAfterTheFirstEvent(
            server,
            [
                "model": "smollm2-135m", "prompt": "Once upon a time", "max_tokens": 48, "ignore_eos": true,
                "stream": true,
                "stream_options": ["include_usage": true],
            ])
        #expect(status == 200)
        #expect(lines.last == "data: [DONE]")
        // Every token was generated (usage), the stream ended as a whole one does.
        let events = TestServer.events(lines)
        #expect((events.last?["usage"] as? [String: Any])?["completion_tokens"] as? Int == 48)
        #expect(
            events.compactMap { ($0["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String } == ["length"])
        // The listener is closed: connecting fails.
        await #expect { try await server.request(.GET, "/health", timeout: .seconds(2)) } throws: { error in
            "\(error)".contains("connect") || "\(error)".contains("Connect") || "\(error)".contains("refused")
        }
    }

    /// Streams a completion and shuts the server down once the first event arrived; returns
    /// what the stream carried to its end.
    private func streamStoppedAfterTheFirstEvent(_ server: TestServer, _ body: [String: Any]) async throws -> (
        status: Int, lines: [String]
    ) {
        let firstEvent = AsyncStream.makeStream(of: Void.self)
        let sendableBody = UncheckedBody(value: body)
        let streaming = Task {
            try await server.stream("/v1/completions", json: sendableBody.value) { line in
                if line.hasPrefix("data: ") { firstEvent.continuation.yield() }
            }
        }
        var iterator = firstEvent.stream.makeAsyncIterator()
        _ = await iterator.next()
        try await server.stop()
        return try await streaming.value
    }
}

/// A JSON body handed to a task (built once, read only).
private struct UncheckedBody: @unchecked Sendable {
    let value: [String: Any]
}
