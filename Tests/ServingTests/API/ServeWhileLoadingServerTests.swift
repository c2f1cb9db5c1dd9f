import Checkpoint
import Foundation
import NIOHTTP1
import Store
import TestSupport
import Testing

@testable import Serving

/// Cold starts that serve while the weights arrive, seen from a client.
@Suite(.serialized) struct ServeWhileLoadingServerTests {
    @Test func bothModesAnswerAColdStartFromTheSSDAlike() async throws {
        var answers: [String] = []
        for streaming in [true, false] {
            let server = try await TestServer.start { $0.serveWhileLoading = streaming }
            let body: [String: Any] = [
                "model": "smollm2-135m", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0,
            ]
            let reply = try await server.request(.POST, "/v1/completions", json: body)
            #expect(reply.status == 200, "\(reply.text)")
            let timings = reply.json["timings"] as? [String: Any]
            #expect(timings?["cold_start"] as? Bool == true && timings?["tier"] as? String == "ssd", "\(reply.text)")
            answers.append(((reply.json["choices"] as? [[String: Any]])?.first?["text"] as? String) ?? "")
            try await server.stop()
        }
        #expect(answers[0] == answers[1] && !answers[0].isEmpty, "\(answers)")
    }

    @Test func aLayerFailingItsChecksumMidLoadFailsTheRequestAndStopsTheInstance() async throws {
        let server = try await TestServer.start()
        // A copy of the real model with one byte of a late layer flipped.
        let store = ModelStore(root: server.directory.file("home"))
        let broken = store.directory(for: try ModelName("broken"))
        try FileManager.default.copyItem(atPath: try await RealModel.checkpoint.value, toPath: broken)
        let reader = try store.reader(for: try ModelName("broken"))
        let victim = try #require(reader.index.tensors.first { $0.name == "blk.25.ffn_up.weight" })
        try corruptByte(of: broken + "/" + reader.index.partitions[victim.partition].file, at: victim.offset + 64)
        let deployed = try await server.request(.POST, "/admin/deployments", json: ["model": "broken"])
        #expect(deployed.status == 201 || deployed.status == 200, "\(deployed.text)")
        let body: [String: Any] = ["model": "broken", "prompt": "Hello", "max_tokens": 4]
        let failed = try await server.request(.POST, "/v1/completions", json: body)
        #expect(failed.status == 503, "\(failed.text)")
        let error = failed.json["error"] as? [String: Any]
        #expect((error?["message"] as? String)?.contains(victim.name) == true, "\(failed.text)")
        #expect(error?["code"] as? String == "model_load_failed", "\(failed.text)")
        // The instance whose weights did not load is stopped; nothing corrupt stays cached.
        #expect(try await server.eventually { try await server.instances("broken").isEmpty })
        #expect(try await server.request(.POST, "/v1/completions", json: body).status == 503)
        // The server goes on serving its other model.
        let healthy = try await server.request(
            .POST, "/v1/completions", json: ["model": "smollm2-135m", "prompt": "Hi", "max_tokens": 1])
        #expect(healthy.status == 200, "\(healthy.text)")
        try await server.stop()
    }
}
