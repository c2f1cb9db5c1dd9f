import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import TestSupport
import Testing

@testable import Serving

/// Random mutations of valid chat and completions bodies, and random path spellings, against a
/// running server: no 5xx, no crash, an answer within a bound. Bounded for the suite
/// (`SLLM_FUZZ_ITERATIONS`, default 300 bodies and 300 paths); a longer campaign sets more.
@Suite(.serialized) struct HTTPFuzzTests {
    static var iterations: Int { Fuzz.iterations(default: 300) }

    /// Values that have broken parsers and arithmetic before.
    static var hostileValues: [Any] {
        [
            Int.max, Int.min, 0, -1, 1e300, -1e300, 9_223_372_036_854_775_808.0, 0.5, "nan", "inf", "-1", "", "1e300",
            String(repeating: "a", count: 70_000), "\u{0}", "\u{FFFF}", "<|im_start|>", "{{ 'x' * 1000 }}", NSNull(),
            true, false,
            [Any](), [String: Any](), [[String: Any]()], ["a", 1, NSNull()], ["role": "user"], [["type": "image_url"]],
        ]
    }

    static let keys = [
        "model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "min_p",
        "seed", "stop",
        "stream", "stream_options", "logprobs", "top_logprobs", "n", "keep_alive", "presence_penalty",
        "frequency_penalty",
        "repeat_penalty", "ignore_eos", "echo", "suffix", "content", "role",
    ]

    static func base(chat: Bool) -> [String: Any] {
        var body: [String: Any] = ["model": "smollm2-135m", "max_tokens": 4, "temperature": 0.5]
        if chat { body["messages"] = [["role": "user", "content": "Hi"]] } else { body["prompt"] = "Hello" }
        return body
    }

    /// A structural mutation (keys and values) or, one time in four, raw byte damage.
    static func mutate(chat: Bool, using generator: inout SeededGenerator) -> [UInt8] {
        var body = base(chat: chat)
        for _ in 0..<Int.random(in: 1...4, using: &generator) {
            let key = keys.randomElement(using: &generator)!
            switch Int.random(in: 0..<4, using: &generator) {
            case 0: body[key] = nil
            case 1: body[key] = hostileValues.randomElement(using: &generator)!
            case 2:
                body[key] = [
                    [
                        "role": hostileValues.randomElement(using: &generator)!,
                        "content": hostileValues.randomElement(using: &generator)!,
                    ]
                ]
            default: body[key] = ["include_usage": hostileValues.randomElement(using: &generator)!]
            }
        }
        var bytes = (try? JSONSerialization.data(withJSONObject: body)).map { Array($0) } ?? Array("{}".utf8)
        if Int.random(in: 0..<4, using: &generator) == 0, !bytes.isEmpty {
            for _ in 0..<Int.random(in: 1...6, using: &generator) {
                let at = Int.random(in: 0..<bytes.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: bytes[at] = UInt8.random(in: 0...255, using: &generator)
                case 1: bytes.remove(at: at)
                default:
                    bytes.insert(
                        contentsOf: Array(#"[{"":-0e99999,"#.utf8).prefix(Int.random(in: 1...12, using: &generator)),
                        at: at)
                }
                if bytes.isEmpty { break }
            }
        }
        return bytes
    }

    static let pathPieces = [
        "", ".", "..", "v1", "admin", "keys", "chat", "completions", "models", "health", "%2e%2e", "%2F", "%00", "ps",
        "deployments", "smollm2-135m", "V1", "x?y=/admin", "#frag", "metrics", ";", "~", "console", "events",
        "experiments", "app.js", "style.css", "instances", "nodes", "decisions", "stop", "migrate",
        String(repeating: "a", count: 300),
    ]

    @Test func mutatedBodiesAndPathsNeverGive5xxOrCrash() async throws {
        let server = try await TestServer.start {
            $0.auth = .on
            $0.adminKey = "admin-secret"
            $0.apiKeys = ["user-key"]
            $0.requestTimeout = .seconds(30)
        }
        // A short context bounds what any accepted request can generate.
        #expect(
            try await server.request(
                .PATCH, "/admin/deployments/smollm2-135m", json: ["context_length": 96], key: "admin-secret"
            ).status == 200)
        var generator = SeededGenerator(seed: UInt64(ProcessInfo.processInfo.environment["SLLM_FUZZ_SEED"] ?? "") ?? 11)
        var statuses: [Int: Int] = [:]
        let started = ContinuousClock.now
        for index in 0..<Self.iterations {
            let chat = index % 2 == 0
            let bytes = Self.mutate(chat: chat, using: &generator)
            var request = HTTPClientRequest(
                url: "http://127.0.0.1:\(server.port)" + (chat ? "/v1/chat/completions" : "/v1/completions"))
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer user-key")
            request.body = .bytes(ByteBuffer(bytes: bytes))
            let status: Int
            do {
                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
                _ = try await response.body.collect(upTo: 64 << 20)
                status = Int(response.status.code)
            } catch {
                Issue.record(
                    "no answer to body \(String(decoding: bytes.prefix(300), as: UTF8.self).debugDescription): \(error)"
                )
                continue
            }
            statuses[status, default: 0] += 1
            #expect(
                status < 500, "\(status) for \(String(decoding: bytes.prefix(300), as: UTF8.self).debugDescription)")
        }
        for _ in 0..<Self.iterations {
            let path =
                "/"
                + (0..<Int.random(in: 0...5, using: &generator)).map { _ in
                    Self.pathPieces.randomElement(using: &generator)!
                }
                .joined(separator: Bool.random(using: &generator) ? "/" : "//")
            let target = Int.random(in: 0..<5, using: &generator) == 0 ? "http://127.0.0.1:\(server.port)" + path : path
            let method = ["GET", "POST", "DELETE", "PATCH", "PUT", "HEAD", "OPTIONS"].randomElement(using: &generator)!
            let key = [nil, "user-key", "wrong"].randomElement(using: &generator)!
            var text = "\(method) \(target) HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n"
            if let key { text += "Authorization: Bearer \(key)\r\n" }
            do {
                // The head only: the console's event stream goes on for an hour.
                let response = try await rawRequestHead(port: server.port, text + "\r\n{}", timeout: 30)
                statuses[response.status, default: 0] += 1
                #expect(response.status < 500, "\(response.status) for \(method) \(target)")
                // Nothing reaches an admin route with a user key or none, but the console's
                // read-only ones with a valid key. (The path is what comes before `?` or `#`:
                // `/#x/admin` is the root.)
                let effective = path.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0]
                    .split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
                let readable = key == "user-key" && userReadableAdminRoutes.contains(resolvedPathComponents(effective))
                #expect(
                    !(200..<300).contains(response.status) || !effective.lowercased().contains("admin") || readable,
                    "\(response.status) for \(method) \(target) with \(key ?? "no key")")
            } catch {
                // A target the HTTP parser refuses outright may close the connection: allowed,
                // as long as the server still answers below.
                statuses[0, default: 0] += 1
            }
        }
        #expect(try await server.request(.GET, "/health").status == 200)
        #expect(
            try await server.request(.GET, "/admin/keys", key: "admin-secret").array.isEmpty, "the fuzz minted a key")
        print(
            "HTTP fuzz: \(Self.iterations) bodies + \(Self.iterations) paths in \(ContinuousClock.now - started); statuses \(statuses.sorted { $0.key < $1.key })"
        )
        try await server.stop()
    }

    /// The admin endpoints' bodies and the fields each one takes.
    static var adminEndpoints: [(method: HTTPMethod, path: String, base: [String: Any])] {
        [
            (
                .POST, "/admin/deployments",
                ["model": "smollm2-135m", "name": "fuzz", "max_instances": 1, "keep_alive": "5m"]
            ),
            (
                .PATCH, "/admin/deployments/smollm2-135m",
                ["max_instances": 2, "keep_alive": 60, "queue_limit": 8, "target_concurrency": 4]
            ),
            (.POST, "/admin/keys", ["name": "fuzz", "admin": false]),
            (.POST, "/admin/cache/verify", ["model": "smollm2-135m"]),
            (.POST, "/admin/instances/smollm2-135m-1-0/migrate", ["node": "elsewhere"]),
        ]
    }
    static let adminKeys = [
        "model", "name", "min_instances", "max_instances", "target_concurrency", "keep_alive", "queue_limit",
        "context_length", "admin", "node",
    ]

    /// Mutated admin bodies (deployments, PATCH, keys, cache verify) with the admin key: no
    /// 5xx, no crash, and afterwards the state is whole: every deployment and key readable, the
    /// default deployment still serves. Bounded like the test above.
    @Test func mutatedAdminBodiesNeverGive5xxOrCorruptState() async throws {
        let server = try await TestServer.start {
            $0.auth = .on
            $0.adminKey = "admin-secret"
            $0.requestTimeout = .seconds(30)
        }
        var generator = SeededGenerator(seed: UInt64(ProcessInfo.processInfo.environment["SLLM_FUZZ_SEED"] ?? "") ?? 13)
        var statuses: [Int: Int] = [:]
        let started = ContinuousClock.now
        for index in 0..<Self.iterations {
            let endpoint = Self.adminEndpoints[index % Self.adminEndpoints.count]
            var body = endpoint.base
            for _ in 0..<Int.random(in: 1...3, using: &generator) {
                let key = Self.adminKeys.randomElement(using: &generator)!
                body[key] = Bool.random(using: &generator) ? Self.hostileValues.randomElement(using: &generator)! : nil
            }
            // A model other than the one in the store would start a pull; names stay fuzzed.
            if let model = body["model"] as? String, model != "smollm2-135m", model.count < 200 { body["model"] = nil }
            var bytes = (try? JSONSerialization.data(withJSONObject: body)).map { Array($0) } ?? Array("{}".utf8)
            if Int.random(in: 0..<4, using: &generator) == 0 {
                for _ in 0..<Int.random(in: 1...6, using: &generator) where !bytes.isEmpty {
                    let at = Int.random(in: 0..<bytes.count, using: &generator)
                    switch Int.random(in: 0..<3, using: &generator) {
                    case 0: bytes[at] = UInt8.random(in: 0...255, using: &generator)
                    case 1: bytes.remove(at: at)
                    default:
                        bytes.insert(
                            contentsOf: Array(#"[{"":-0e99999,"#.utf8).prefix(
                                Int.random(in: 1...12, using: &generator)), at: at)
                    }
                }
            }
            let reply: TestServer.Reply
            do {
                reply = try await server.request(
                    endpoint.method, endpoint.path, raw: bytes, key: "admin-secret", timeout: .seconds(60))
            } catch {
                Issue.record(
                    "no answer to \(endpoint.method) \(endpoint.path) \(String(decoding: bytes.prefix(300), as: UTF8.self).debugDescription): \(error)"
                )
                continue
            }
            statuses[reply.status, default: 0] += 1
            #expect(
                reply.status < 500,
                "\(reply.status) for \(endpoint.method) \(endpoint.path) \(String(decoding: bytes.prefix(300), as: UTF8.self).debugDescription)"
            )
            if reply.status >= 400 {
                // OpenAI-style error body: a message, and a type.
                let error = reply.json["error"] as? [String: Any]
                #expect(
                    error?["message"] as? String != nil && error?["type"] as? String != nil,
                    "\(String(decoding: reply.body.prefix(300), as: UTF8.self))")
            }
        }
        // The state is whole: everything lists, and the default deployment still answers.
        let deployments = try await server.request(.GET, "/admin/deployments", key: "admin-secret")
        #expect(
            deployments.status == 200
                && deployments.array.contains {
                    (($0["status"] as? [String: Any])?["spec"] as? [String: Any])?["name"] as? String == "smollm2-135m"
                })
        let keys = try await server.request(.GET, "/admin/keys", key: "admin-secret")
        #expect(
            keys.status == 200 && keys.array.allSatisfy { ($0["name"] as? String).map { !$0.isEmpty } == true },
            "\(keys.array.filter { ($0["name"] as? String).map { !$0.isEmpty } != true })")
        let answer = try await server.request(
            .POST, "/v1/completions", json: ["model": "smollm2-135m", "prompt": "Hi", "max_tokens": 2],
            key: "admin-secret")
        #expect(answer.status == 200, "\(String(decoding: answer.body.prefix(300), as: UTF8.self))")
        print(
            "admin fuzz: \(Self.iterations) bodies in \(ContinuousClock.now - started); statuses \(statuses.sorted { $0.key < $1.key })"
        )
        try await server.stop()
    }
}
