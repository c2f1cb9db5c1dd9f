import Foundation
import NIOCore
import NIOHTTP1
import Scheduling
import TestSupport
import Testing

@testable import Serving

/// `finish_reason` and `usage` as OpenAI defines them, for {chat, completions} × {stream,
/// whole} × {max tokens reached, stop string, end of generation}; logprobs from one distribution;
/// per-request keep-alive durations as the server reports them.
@Suite(.serialized) struct OpenAIContractTests {
    enum Ending: String, CaseIterable {
        case length, stopString, endOfGeneration
    }

    static let system =
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    static let question = "What is 2+2? Answer with a number only."

    /// A request that ends the given way under greedy decoding (outputs checked against the
    /// model: "2 + 2 = 4" then end of generation; " Paris.\n\nThe United States ...").
    static func body(chat: Bool, ending: Ending) -> [String: Any] {
        var body: [String: Any] = ["model": "smollm2-135m", "temperature": 0, "max_tokens": 48]
        switch (chat, ending) {
        case (true, .length), (true, .endOfGeneration), (true, .stopString):
            body["messages"] = [["role": "user", "content": question]]
        case (false, .endOfGeneration):
            body["prompt"] = system + "<|im_start|>user\n" + question + "<|im_end|>\n<|im_start|>assistant\n"
        case (false, _):
            body["prompt"] = "The capital of France is"
        }
        switch ending {
        case .length: body["max_tokens"] = 3
        case .stopString: body["stop"] = chat ? ["= 4"] : ["United"]
        case .endOfGeneration: break
        }
        return body
    }

    static var table: [(chat: Bool, stream: Bool, ending: Ending)] {
        [true, false].flatMap { chat in [true, false].flatMap { stream in Ending.allCases.map { (chat, stream, $0) } } }
    }

    @Test func finishReasonAndUsageFollowTheContract() async throws {
        let server = try await TestServer.start()
        for (chat, stream, ending) in Self.table {
            let label = "\(chat ? "chat" : "completions") \(stream ? "stream" : "whole") \(ending)"
            let path = chat ? "/v1/chat/completions" : "/v1/completions"
            var body = Self.body(chat: chat, ending: ending)
            var finishReasons: [String] = []
            var text = ""
            var usage: [String: Any] = [:]
            if stream {
                body["stream"] = true
                body["stream_options"] = ["include_usage": true]
                let (status, lines) = try await server.stream(path, json: body)
                #expect(status == 200, "\(label)")
                #expect(lines.last == "data: [DONE]", "\(label): \(lines.suffix(2))")
                let events = TestServer.events(lines)
                for event in events {
                    let choice = (event["choices"] as? [[String: Any]])?.first
                    if let reason = choice?["finish_reason"] as? String { finishReasons.append(reason) }
                    text +=
                        chat
                        ? ((choice?["delta"] as? [String: Any])?["content"] as? String ?? "")
                        : (choice?["text"] as? String ?? "")
                }
                // Usage comes once, in the last chunk, whose choices are empty.
                let last = events.last ?? [:]
                #expect((last["choices"] as? [Any])?.isEmpty == true, "\(label)")
                usage = last["usage"] as? [String: Any] ?? [:]
                #expect(events.dropLast().allSatisfy { $0["usage"] is NSNull }, "\(label): usage before the last chunk")
            } else {
                let reply = try await server.request(.POST, path, json: body)
                #expect(reply.status == 200, "\(label): \(reply.text)")
                let choice = (reply.json["choices"] as? [[String: Any]])?.first ?? [:]
                if let reason = choice["finish_reason"] as? String { finishReasons.append(reason) }
                text =
                    chat
                    ? ((choice["message"] as? [String: Any])?["content"] as? String ?? "")
                    : (choice["text"] as? String ?? "")
                usage = reply.json["usage"] as? [String: Any] ?? [:]
                #expect(reply.json["object"] as? String == (chat ? "chat.completion" : "text_completion"), "\(label)")
            }
            #expect(
                finishReasons == [ending == .length ? "length" : "stop"],
                "\(label): finish reasons \(finishReasons), text \(text.debugDescription)")
            let prompt = usage["prompt_tokens"] as? Int ?? 0
            let completion = usage["completion_tokens"] as? Int ?? -1
            #expect(prompt > 0 && usage["total_tokens"] as? Int == prompt + completion, "\(label): \(usage)")
            switch ending {
            case .length:
                #expect(completion == 3, "\(label): \(usage)")
            case .stopString:
                #expect(completion > 0 && completion < 48, "\(label): \(usage)")
                #expect(
                    !text.contains(chat ? "= 4" : "United") && text == (chat ? "2 + 2 " : " Paris.\n\nThe "),
                    "\(label): \(text.debugDescription)")
            case .endOfGeneration:
                #expect(completion > 0 && completion < 48, "\(label): \(usage)")
                #expect(text == "2 + 2 = 4", "\(label): \(text.debugDescription)")
            }
        }
        try await server.stop()
    }

    /// At a temperature other than 0 or 1 the chosen token's `logprob` is the model's, the same
    /// value its own entry in `top_logprobs` carries.
    @Test(arguments: [false, true])
    func chosenLogprobsMatchTheirTopLogprobsEntry(stream: Bool) async throws {
        let server = try await TestServer.start()
        let body: [String: Any] = [
            "model": "smollm2-135m", "messages": [["role": "user", "content": "Tell me a story."]], "temperature": 0.7,
            "seed": 3, "max_tokens": 12, "logprobs": true, "top_logprobs": 20, "stream": stream,
        ]
        var entries: [[String: Any]] = []
        if stream {
            let (_, lines) = try await server.stream("/v1/chat/completions", json: body)
            for event in TestServer.events(lines) {
                let logprobs = (event["choices"] as? [[String: Any]])?.first?["logprobs"] as? [String: Any]
                entries += logprobs?["content"] as? [[String: Any]] ?? []
            }
        } else {
            let reply = try await server.request(.POST, "/v1/chat/completions", json: body)
            let logprobs = (reply.json["choices"] as? [[String: Any]])?.first?["logprobs"] as? [String: Any]
            entries = logprobs?["content"] as? [[String: Any]] ?? []
        }
        #expect(entries.count == 12)
        var compared = 0
        for entry in entries {
            let token = entry["token"] as? String
            let logprob = entry["logprob"] as? Double ?? 1
            #expect(logprob <= 0)
            let top = entry["top_logprobs"] as? [[String: Any]] ?? []
            if let own = top.first(where: { $0["token"] as? String == token }) {
                #expect(
                    abs((own["logprob"] as? Double ?? 1) - logprob) < 1e-4,
                    "\(token ?? "?"): \(logprob) vs \(own["logprob"] ?? "-")")
                compared += 1
            }
        }
        #expect(compared >= 8, "most sampled tokens are among the top 20")
        try await server.stop()
    }

    /// A request's `keep_alive` duration (not only 0 and -1) sets when its instance expires, as
    /// `sllm ps` and the admin API report it.
    @Test func perRequestKeepAliveDurationsSetTheReportedExpiry() async throws {
        let server = try await TestServer.start()
        for (value, seconds) in [("7m", 420.0), ("90s", 90.0), ("1h30m", 5400.0)] as [(Any, Double)] + [
            (45, 45.0), (2.5, 2.5),
        ] {
            let sent = Date()
            let reply = try await server.request(
                .POST, "/v1/completions",
                json: ["model": "smollm2-135m", "prompt": "Hi", "max_tokens": 1, "keep_alive": value])
            #expect(reply.status == 200)
            // The keep-alive runs from the request's end: a cold start's seconds come on top of `sent`.
            let answered = Date()
            let instance = try await server.instances("smollm2-135m").first ?? [:]
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            let expires = (instance["expires_at"] as? String).flatMap {
                formatter.date(from: $0) ?? ISO8601DateFormatter().date(from: $0)
            }
            guard let expires else {
                // 2.5 s may have passed on a loaded machine: the instance is then gone, as it should be.
                if seconds < 10 { continue }
                Issue.record("keep_alive \(value): no expiry in \(instance)")
                continue
            }
            let remaining = expires.timeIntervalSince(sent)
            let afterAnswer = expires.timeIntervalSince(answered)
            #expect(
                remaining > seconds - 30 && afterAnswer <= seconds + 1,
                "keep_alive \(value): expires \(remaining) s after the request, \(afterAnswer) s after its answer")
        }
        try await server.stop()
    }
}
