import Foundation
import NIOHTTP1
import TestSupport
import Testing

@testable import Serving

/// The OpenAI-compatible endpoints against a running server and the real model.
@Suite(.serialized) struct OpenAIAPITests {
    @Test func chatCompletionMatchesLlamaCppTokenForToken() async throws {
        let server = try await TestServer.start()
        let expected = try fixture("chat-01.json")
        let reply = try await server.request(
            .POST, "/v1/chat/completions",
            json: [
                "model": "smollm2-135m", "messages": expected["messages"]!, "max_tokens": 32, "temperature": 0,
            ])
        #expect(reply.status == 200)
        let choice = (reply.json["choices"] as? [[String: Any]])?.first ?? [:]
        #expect((choice["message"] as? [String: Any])?["content"] as? String == expected["output_text"] as? String)
        #expect(choice["finish_reason"] as? String == "length")
        let usage = reply.json["usage"] as? [String: Any] ?? [:]
        let expectedUsage = expected["usage"] as? [String: Any] ?? [:]
        #expect(usage["prompt_tokens"] as? Int == expectedUsage["prompt_tokens"] as? Int)
        #expect(usage["completion_tokens"] as? Int == 32)
        #expect(usage["total_tokens"] as? Int == expectedUsage["total_tokens"] as? Int)
        #expect(reply.json["object"] as? String == "chat.completion")
        // The first request found no instance: a cold start, reported with its phases.
        let timings = reply.json["timings"] as? [String: Any] ?? [:]
        #expect(timings["cold_start"] as? Bool == true)
        try await server.stop()
    }

    @Test func completionMatchesLlamaCppAndReportsLogprobs() async throws {
        let server = try await TestServer.start()
        let expected = try fixture("greedy-01.json")
        let reply = try await server.request(
            .POST, "/v1/completions",
            json: [
                "model": "smollm2-135m", "prompt": expected["prompt"]!, "max_tokens": 32, "temperature": 0,
                "ignore_eos": true, "logprobs": 3,
            ])
        #expect(reply.status == 200)
        let choice = (reply.json["choices"] as? [[String: Any]])?.first ?? [:]
        #expect(choice["text"] as? String == expected["output_text"] as? String)
        let logprobs = choice["logprobs"] as? [String: Any] ?? [:]
        let tokens = logprobs["tokens"] as? [String] ?? []
        #expect(tokens.count == 32)
        #expect(tokens.joined() == expected["output_text"] as? String)
        let top = logprobs["top_logprobs"] as? [[String: Double]] ?? []
        #expect(top.count == 32 && top.allSatisfy { $0.count == 3 })
        // Greedy: the chosen token is the most likely one.
        let chosen = (logprobs["token_logprobs"] as? [Double] ?? [])
        #expect(zip(chosen, top).allSatisfy { abs($0 - ($1.values.max() ?? 0)) < 1e-3 })

        // The same prompt again: served from the instance's prompt cache, same text.
        let again = try await server.request(
            .POST, "/v1/completions",
            json: [
                "model": "smollm2-135m", "prompt": expected["prompt"]!, "max_tokens": 32, "temperature": 0,
                "ignore_eos": true,
            ])
        #expect(
            (again.json["choices"] as? [[String: Any]])?.first?["text"] as? String == expected["output_text"] as? String
        )
        let details = (again.json["usage"] as? [String: Any])?["prompt_tokens_details"] as? [String: Any]
        #expect(details?["cached_tokens"] as? Int == 4)
        // The node reports the instance's prompt-cache hits and the KV cache its kept sequence holds.
        let nodes = try await server.request(.GET, "/admin/nodes").array
        let usage = ((nodes.first?["inventory"] as? [String: Any])?["usage"] as? [[String: Any]])?.first ?? [:]
        #expect(usage["requests"] as? Int == 2 && usage["prompt_cache_hits"] as? Int == 1)
        #expect(usage["cached_prompt_tokens"] as? Int == 4 && usage["prompt_tokens"] as? Int == 10)
        #expect(usage["active_sequences"] as? Int == 0 && usage["retained_sequences"] as? Int == 1)
        let kvUsed = usage["kv_used_bytes"] as? Int ?? 0
        let kvBudget = usage["kv_cache_bytes"] as? Int ?? 0
        #expect(kvUsed > 0 && kvUsed <= kvBudget, "KV cache \(kvUsed) of \(kvBudget) bytes")

        // Token ids as the prompt give the same text.
        let ids = try await server.request(
            .POST, "/v1/completions",
            json: [
                "model": "smollm2-135m", "prompt": expected["prompt_ids"]!, "max_tokens": 8, "temperature": 0,
            ])
        let idsText = ((ids.json["choices"] as? [[String: Any]])?.first?["text"] as? String) ?? ""
        #expect((expected["output_text"] as? String ?? "").hasPrefix(idsText) && !idsText.isEmpty)
        try await server.stop()
    }

    @Test func streamingSendsChunksUsageAndDone() async throws {
        let server = try await TestServer.start()
        let body: [String: Any] = [
            "model": "smollm2-135m", "messages": [["role": "user", "content": "What is the capital of France?"]],
            "max_tokens": 12, "temperature": 0, "stream": true, "stream_options": ["include_usage": true],
        ]
        let (status, lines) = try await server.stream("/v1/chat/completions", json: body)
        #expect(status == 200)
        #expect(lines.last == "data: [DONE]")
        let events = TestServer.events(lines)
        let deltas = events.compactMap { (($0["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any]) }
        #expect(deltas.first?["role"] as? String == "assistant")
        let streamed = deltas.compactMap { $0["content"] as? String }.joined()
        let finish = events.compactMap { ($0["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String }
        #expect(finish == ["length"])
        let usage = events.last?["usage"] as? [String: Any]
        #expect(usage?["completion_tokens"] as? Int == 12)
        #expect((events.last?["choices"] as? [Any])?.isEmpty == true)
        #expect(
            events.allSatisfy {
                $0["object"] as? String == "chat.completion.chunk" && $0["id"] as? String == events[0]["id"] as? String
            })

        var whole = body
        whole["stream"] = false
        let reply = try await server.request(.POST, "/v1/chat/completions", json: whole)
        #expect(
            ((reply.json["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String
                == streamed)

        // A stop string ends the text before it (not included), finish_reason stop.
        var stopped = whole
        stopped["stop"] = ","
        stopped["max_tokens"] = 32
        let cut = try await server.request(.POST, "/v1/chat/completions", json: stopped)
        let cutChoice = (cut.json["choices"] as? [[String: Any]])?.first ?? [:]
        #expect((cutChoice["message"] as? [String: Any])?["content"] as? String == "L'Étoile")
        #expect(cutChoice["finish_reason"] as? String == "stop")
        try await server.stop()
    }

    @Test func modelsHealthAndMetrics() async throws {
        let server = try await TestServer.start()
        #expect(try await server.request(.GET, "/health").status == 200)
        #expect(try await server.request(.GET, "/ready").status == 200)
        let models = try await server.request(.GET, "/v1/models")
        #expect(models.json["object"] as? String == "list")
        let data = models.json["data"] as? [[String: Any]] ?? []
        #expect(data.map { $0["id"] as? String } == ["smollm2-135m"])
        #expect(data.first?["object"] as? String == "model")
        #expect(try await server.request(.GET, "/v1/models/smollm2-135m").json["id"] as? String == "smollm2-135m")
        let missing = try await server.request(.GET, "/v1/models/gpt-9")
        #expect(missing.status == 404)
        #expect(missing.errorParam == "model")

        _ = try await server.request(
            .POST, "/v1/completions", json: ["model": "smollm2-135m", "prompt": "Hello", "max_tokens": 3])
        let metrics = try await server.request(.GET, "/metrics").text
        for name in [
            "sllm_requests_total{model=\"smollm2-135m\",status=\"200\"} 1", "sllm_time_to_first_token_seconds_count",
            "sllm_cold_start_seconds_count{model=\"smollm2-135m\",phase=\"load\"} 1", "sllm_load_seconds_count",
            "sllm_load_bytes_total", "sllm_generation_tokens_total{model=\"smollm2-135m\"} 3", "sllm_instances{",
            "sllm_queue_depth{", "sllm_dram_cache_misses_total 1",
        ] {
            #expect(metrics.contains(name), "missing \(name)")
        }
        try await server.stop()
    }

    @Test func badInputGetsTheRight4xxAndTheServerKeepsServing() async throws {
        let server = try await TestServer.start { $0.maxBodyBytes = 64 << 10 }
        let message: [[String: Any]] = [["role": "user", "content": "Hi"]]
        func post(_ json: [String: Any]) async throws -> TestServer.Reply {
            try await server.request(.POST, "/v1/chat/completions", json: json)
        }
        let malformed = try await server.request(.POST, "/v1/chat/completions", raw: Array("{\"model\": ".utf8))
        #expect(malformed.status == 400 && malformed.errorMessage?.contains("not valid JSON") == true)
        let notUTF8 = try await server.request(.POST, "/v1/chat/completions", raw: [0xff, 0xfe, 0x7b, 0x22])
        #expect(notUTF8.status == 400)
        let huge = try await server.request(
            .POST, "/v1/chat/completions", raw: Array(repeating: 0x20, count: 200 << 10))
        #expect(huge.status == 413)
        let wrongType = try await post(["model": "smollm2-135m", "messages": message, "temperature": "hot"])
        #expect(wrongType.status == 400 && wrongType.errorParam == "temperature")
        let wrongMessages = try await post(["model": "smollm2-135m", "messages": "hello"])
        #expect(wrongMessages.status == 400 && wrongMessages.errorParam == "messages")
        let badRole = try await post(["model": "smollm2-135m", "messages": [["role": "wizard", "content": "x"]]])
        #expect(badRole.status == 400 && badRole.errorParam == "messages[0].role")
        let noModel = try await post(["messages": message])
        #expect(noModel.status == 400 && noModel.errorParam == "model")
        let unknownModel = try await post(["model": "gpt-4o", "messages": message])
        #expect(unknownModel.status == 404)
        #expect((unknownModel.json["error"] as? [String: Any])?["code"] as? String == "model_not_found")
        let empty = try await post(["model": "smollm2-135m", "messages": []])
        #expect(empty.status == 400 && empty.errorParam == "messages")
        let zero = try await post(["model": "smollm2-135m", "messages": message, "max_tokens": 0])
        #expect(zero.status == 400 && zero.errorParam == "max_tokens")
        let tooMany = try await post(["model": "smollm2-135m", "messages": message, "max_completion_tokens": 1_000_000])
        #expect(
            tooMany.status == 400
                && (tooMany.json["error"] as? [String: Any])?["code"] as? String == "context_length_exceeded")
        let longPrompt = try await server.request(
            .POST, "/v1/completions",
            json: [
                "model": "smollm2-135m", "prompt": String(repeating: "word ", count: 9000),
            ])
        #expect(longPrompt.status == 400 && longPrompt.errorParam == "prompt")
        let n = try await post(["model": "smollm2-135m", "messages": message, "n": 2])
        #expect(n.status == 400 && n.errorParam == "n")
        let badToken = try await server.request(
            .POST, "/v1/completions", json: ["model": "smollm2-135m", "prompt": [1, 999_999]])
        #expect(badToken.status == 400)
        let image = try await post([
            "model": "smollm2-135m",
            "messages": [["role": "user", "content": [["type": "image_url", "image_url": ["url": "x"]]]]],
        ])
        #expect(image.status == 400)
        let nullTemperature = try await post([
            "model": "smollm2-135m", "messages": message, "max_tokens": 1, "temperature": NSNull(),
        ])
        #expect(nullTemperature.status == 200)
        let route = try await server.request(.GET, "/v2/everything")
        #expect(route.status == 404 && route.errorMessage != nil)

        // Unknown fields are ignored; text parts are joined; the server still answers.
        let fine = try await post([
            "model": "smollm2-135m", "messages": [["role": "user", "content": [["type": "text", "text": "Hi"]]]],
            "max_tokens": 2, "user": "someone", "parallel_tool_calls": false, "frobnicate": [1, 2],
        ])
        #expect(fine.status == 200)
        #expect(try await server.metric("sllm_requests_total{model=\"smollm2-135m\",status=\"200\"}") >= 2)
        try await server.stop()
    }
}
