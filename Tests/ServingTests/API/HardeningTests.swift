import Foundation
import NIOCore
import NIOHTTP1
import TestSupport
import Testing

@testable import Serving

/// Client-supplied numbers at their extremes, huge prompts and odd encodings: each gets a 4xx
/// naming what was wrong, and the server keeps serving (several of these crashed it before).
@Suite(.serialized) struct HardeningTests {
    static var message: [[String: Any]] { [["role": "user", "content": "Hi"]] }

    @Test func keepAliveAtItsExtremesIsRefusedNotACrash() async throws {
        let server = try await TestServer.start()
        let hostile: [Any] = [
            1e300, 1e30, 9_223_372_036_854_775_808.0, "nan", "NaN", "inf", "-inf", "1e300", "1e30s",
            "99999999999999999999h", "2562047788015216h",
        ]
        for value in hostile {
            let reply = try await server.request(
                .POST, "/v1/chat/completions",
                json: [
                    "model": "smollm2-135m", "messages": Self.message, "max_tokens": 1, "keep_alive": value,
                ])
            let label = "keep_alive \(value)"
            // "-inf" is a negative number: forever, as Ollama takes any negative value.
            if "\(value)" == "-inf" {
                #expect(reply.status == 200, "\(label)")
                continue
            }
            #expect(
                reply.status == 400 && reply.errorParam == "keep_alive",
                "\(label): \(reply.status) \(reply.errorMessage ?? "")")
            let patch = try await server.request(.PATCH, "/admin/deployments/smollm2-135m", json: ["keep_alive": value])
            #expect(patch.status == 400, "PATCH \(label): \(patch.status)")
        }
        // Ten years is the longest duration; more is refused, less is taken.
        #expect(
            try await server.request(.PATCH, "/admin/deployments/smollm2-135m", json: ["keep_alive": "87600h"]).status
                == 200)
        #expect(
            try await server.request(.PATCH, "/admin/deployments/smollm2-135m", json: ["keep_alive": "87601h"]).status
                == 400)
        let fine = try await server.request(
            .POST, "/v1/chat/completions", json: ["model": "smollm2-135m", "messages": Self.message, "max_tokens": 1])
        #expect(fine.status == 200)
        try await server.stop()
    }

    @Test func everyNumericFieldAtItsExtremesGetsA400() async throws {
        let server = try await TestServer.start()
        let cases: [(field: String, value: Any, param: String)] = [
            ("max_tokens", Int.max, "max_tokens"), ("max_completion_tokens", Int.max, "max_completion_tokens"),
            ("max_tokens", Int.min, "max_tokens"), ("max_tokens", 1e300, "max_tokens"),
            ("max_tokens", 9_223_372_036_854_775_808.0, "max_tokens"),
            ("temperature", 1e308, "temperature"), ("temperature", -1e308, "temperature"), ("top_p", 1e300, "top_p"),
            ("top_k", Int.min, "top_k"), ("min_p", -1e300, "min_p"), ("repeat_penalty", -1e300, "repeat_penalty"),
            ("presence_penalty", 1e300, "presence_penalty"), ("frequency_penalty", -1e300, "frequency_penalty"),
            ("seed", 1e300, "seed"), ("seed", 18_446_744_073_709_551_615.0, "seed"), ("n", Int.max, "n"),
            ("n", Int.min, "n"),
            ("top_logprobs", Int.max, "top_logprobs"), ("logprobs", "yes", "logprobs"),
        ]
        for (field, value, param) in cases {
            var body: [String: Any] = ["model": "smollm2-135m", "messages": Self.message]
            body[field] = value
            if field == "top_logprobs" { body["logprobs"] = true }
            let reply = try await server.request(.POST, "/v1/chat/completions", json: body)
            #expect(
                reply.status == 400 && reply.errorParam == param,
                "\(field)=\(value): \(reply.status) \(reply.errorParam ?? "-") \(reply.errorMessage ?? "")")
        }
        // Legal extremes are served: top_k beyond the vocabulary keeps every candidate; a seed at Int64's edge.
        for (field, value) in [("top_k", Int.max as Any), ("seed", Int64.min as Any), ("seed", Int64.max as Any)] {
            let reply = try await server.request(
                .POST, "/v1/chat/completions",
                json: ["model": "smollm2-135m", "messages": Self.message, "max_tokens": 1, field: value])
            #expect(reply.status == 200, "\(field)=\(value): \(reply.errorMessage ?? "")")
        }
        let completion = try await server.request(
            .POST, "/v1/completions",
            json: ["model": "smollm2-135m", "prompt": "Hi", "max_tokens": Int.max, "logprobs": Int.max])
        #expect(completion.status == 400)
        let admin: [(String, Any)] = [
            ("min_instances", Int.max), ("max_instances", Int.min), ("target_concurrency", Int.max),
            ("queue_limit", Int.min),
            ("context_length", Int.min), ("context_length", 1e300),
        ]
        for (field, value) in admin {
            let reply = try await server.request(.PATCH, "/admin/deployments/smollm2-135m", json: [field: value])
            #expect(reply.status == 400, "PATCH \(field)=\(value): \(reply.status)")
        }
        #expect(
            try await server.request(
                .POST, "/v1/chat/completions",
                json: ["model": "smollm2-135m", "messages": Self.message, "max_tokens": 1]
            ).status == 200)
        try await server.stop()
    }

    /// Text far beyond the context is refused before it is tokenized: a 7 MiB one-word prompt
    /// (which took minutes to tokenize) gets its 400 at once.
    @Test func aMegabytePromptIsRefusedBeforeTokenizing() async throws {
        let server = try await TestServer.start()
        let word = String(repeating: "a", count: 7 << 20)
        let completion = try await server.request(
            .POST, "/v1/completions", json: ["model": "smollm2-135m", "prompt": word], timeout: .seconds(20))
        #expect(completion.status == 400 && completion.errorParam == "prompt")
        #expect((completion.json["error"] as? [String: Any])?["code"] as? String == "context_length_exceeded")
        let chat = try await server.request(
            .POST, "/v1/chat/completions",
            json: [
                "model": "smollm2-135m", "messages": [["role": "user", "content": word]],
            ], timeout: .seconds(20))
        #expect(chat.status == 400 && chat.errorParam == "messages")
        // Under the bound, a long word without splits is tokenized (heap-ordered merges, not a
        // quadratic loop) and its tokens are counted against the context.
        let long = try await server.request(
            .POST, "/v1/completions",
            json: [
                "model": "smollm2-135m", "prompt": String(repeating: "a", count: 60_000), "max_tokens": 8192,
            ], timeout: .seconds(60))
        #expect(
            long.status == 400 && (long.errorMessage ?? "").contains("the prompt has 15000"),
            "\(long.errorMessage ?? "")")
        try await server.stop()
    }

    /// A client that sends a large prompt and leaves cancels its tokenizing (recorded as 499),
    /// instead of the server finishing the work for nobody (it would answer 400 after ~0.1 s).
    @Test func aClientThatLeavesCancelsTheTokenizingOfItsPrompt() async throws {
        let server = try await TestServer.start()
        let body = #"{"model": "smollm2-135m", "prompt": ""# + String(repeating: "ab", count: 32_000) + #""}"#
        let port = server.port
        try await onThread {
            let connection = try RawConnection(port: port)
            connection.send(
                "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n"
                    + body)
            shutdown(connection.descriptor, Int32(SHUT_RDWR))
        }
        #expect(
            try await server.eventually {
                try await server.metric("sllm_requests_total{model=\"smollm2-135m\",status=\"499\"}") >= 1
            })
        #expect(try await server.metric("sllm_requests_total{model=\"smollm2-135m\",status=\"400\"}") == 0)
        // Whoever stays gets the answer, as before.
        let stays = try await server.request(
            .POST, "/v1/completions", json: ["model": "smollm2-135m", "prompt": String(repeating: "ab", count: 32_000)])
        #expect(
            stays.status == 400
                && (stays.json["error"] as? [String: Any])?["code"] as? String == "context_length_exceeded")
        // A watched connection ends after its answer, an error too, and says so (a client that
        // reused it failed with "I/O on closed channel").
        #expect(stays.headers.first(name: "connection") == "close")
        try await server.stop()
    }

    @Test func bodiesThatAreNotUTF8JSONAreRefused() async throws {
        let server = try await TestServer.start()
        let json = #"{"model": "smollm2-135m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}"#
        let utf16LE: [UInt8] = [0xFF, 0xFE] + json.utf16.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        let utf16BE: [UInt8] = json.utf16.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
        let utf32: [UInt8] = json.unicodeScalars.flatMap { scalar -> [UInt8] in
            let value = scalar.value
            return [UInt8(value & 0xFF), UInt8((value >> 8) & 0xFF), UInt8((value >> 16) & 0xFF), UInt8(value >> 24)]
        }
        let latin1: [UInt8] =
            Array(#"{"model": "smollm2-135m", "messages": [{"role": "user", "content": "caf"#.utf8) + [0xE9]
            + Array(#""}]}"#.utf8)
        let bodies: [(String, [UInt8])] = [
            ("UTF-16LE", utf16LE), ("UTF-16BE", utf16BE), ("UTF-32", utf32), ("Latin-1", latin1),
        ]
        for (label, body) in bodies {
            for path in ["/v1/chat/completions", "/admin/deployments"] {
                let reply = try await server.request(.POST, path, raw: body)
                #expect(reply.status == 400, "\(label) to \(path): \(reply.status)")
                #expect(reply.errorMessage?.contains("UTF-8") == true, "\(label): \(reply.errorMessage ?? "")")
            }
        }
        #expect(try await server.request(.POST, "/v1/chat/completions", raw: Array(json.utf8)).status == 200)
        try await server.stop()
    }
}

/// The DRAM copy of a model is checked on request (`POST /admin/cache/verify`) and in the
/// background at a bounded rate; a corrupt copy is dropped and the next start reads the SSD.
@Suite(.serialized) struct DRAMScrubTests {
    @Test func verifyOnRequestFindsAFlippedBit() async throws {
        let server = try await TestServer.start { $0.dramScrubBytesPerSecond = 0 }
        let body: [String: Any] = ["model": "smollm2-135m", "prompt": "Hi", "max_tokens": 1, "keep_alive": 0]
        #expect(try await server.request(.POST, "/v1/completions", json: body).status == 200)
        #expect(try await server.eventually { try await server.instances("smollm2-135m").isEmpty })
        let clean = try await server.request(.POST, "/admin/cache/verify", json: ["model": "smollm2-135m"])
        #expect(clean.status == 200 && (clean.json["corrupt"] as? [String]) == [], "\(clean.text)")
        #expect(((clean.json["verified"] as? [[String: Any]])?.first?["tensors"] as? Int ?? 0) > 200)
        try flipFirstByteOfEverySlab(cacheDirectory: server.directory.file("cache"))
        let bad = try await server.request(.POST, "/admin/cache/verify")
        #expect((bad.json["corrupt"] as? [String]) == ["smollm2-135m"], "\(bad.text)")
        // The next cold start reads the SSD (and answers as before).
        let next = try await server.request(.POST, "/v1/completions", json: body)
        #expect(
            next.status == 200 && (next.json["timings"] as? [String: Any])?["tier"] as? String == "ssd", "\(next.text)")
        #expect(try await server.request(.POST, "/admin/cache/verify", json: ["model": "nosuch"]).status == 404)
        try await server.stop()
    }

    @Test func theBackgroundCheckFindsAFlippedBit() async throws {
        let server = try await TestServer.start {
            $0.dramScrubBytesPerSecond = 1 << 30
            $0.dramScrubInterval = .milliseconds(100)
        }
        let body: [String: Any] = ["model": "smollm2-135m", "prompt": "Hi", "max_tokens": 1, "keep_alive": 0]
        #expect(try await server.request(.POST, "/v1/completions", json: body).status == 200)
        #expect(try await server.eventually { try await server.metric("sllm_dram_verified_bytes_total") > 0 })
        try flipFirstByteOfEverySlab(cacheDirectory: server.directory.file("cache"))
        #expect(
            try await server.eventually(30) {
                try await server.metric("sllm_dram_corrupt_total{model=\"smollm2-135m\"}") >= 1
            })
        #expect(try await server.request(.GET, "/admin/deployments/smollm2-135m").json["tiers"] as? [String] == ["ssd"])
        try await server.stop()
    }
}
