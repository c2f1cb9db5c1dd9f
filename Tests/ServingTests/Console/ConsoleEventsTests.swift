import Foundation
import NIOHTTP1
import TestSupport
import Testing

@testable import Serving

/// The console's event stream: one snapshot at once, the caller's access in it, many viewers
/// sharing one feed, and every stream ending by itself when the server shuts down (not held
/// until the shutdown timeout cuts it).
@Suite struct ConsoleEventsTests {
    /// Connections handed between threads (each used by one thread at a time).
    final class Stream: @unchecked Sendable {
        let connection: RawConnection
        let head: String
        init(_ connection: RawConnection, _ head: String) {
            self.connection = connection
            self.head = head
        }
    }

    @Test func streamsCarryTheirAccessAndEndAtShutdown() async throws {
        let server = try await TestServer.start {
            $0.auth = .on
            $0.adminKey = "admin-secret"
            $0.apiKeys = ["user-key"]
            $0.shutdownTimeout = .seconds(60)
        }
        let port = server.port
        /// Opens a stream with `key`; returns the connection and what it read up to the first event.
        func open(_ key: String) async throws -> Stream {
            try await onThread {
                let connection = try RawConnection(port: port, timeout: 30)
                connection.send("GET /admin/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(key)\r\n\r\n")
                let head = connection.receive { String(decoding: $0, as: UTF8.self).contains("event: snapshot") }
                return Stream(connection, String(decoding: head, as: UTF8.self))
            }
        }
        var streams: [Stream] = []
        for index in 0..<10 { streams.append(try await open(index == 0 ? "admin-secret" : "user-key")) }
        #expect(streams[0].head.contains("text/event-stream") && streams[0].head.contains(#""access":"admin""#))
        #expect(streams[1].head.contains(#""access":"user""#))
        #expect(streams.allSatisfy { $0.head.contains(#""deployments":[{"#) })
        // Shutdown: each stream ends with the chunked body's last chunk, well before the timeout.
        let stopping = Task { try await server.stop() }
        let opened = streams
        let endings = try await onThread { () -> [Bool] in
            opened.map { stream in
                let rest = stream.connection.receive { String(decoding: $0, as: UTF8.self).hasSuffix("0\r\n\r\n") }
                return String(decoding: rest, as: UTF8.self).hasSuffix("0\r\n\r\n")
            }
        }
        #expect(endings.allSatisfy { $0 }, "\(endings)")
        try await stopping.value
    }

    /// A cold start is recorded with its phases; a load that read every byte before the instance
    /// started (serve-while-loading off) carries the thread time its checksums took. The instance
    /// stopped by an operator is gone from the snapshot.
    @Test func aColdStartCarriesItsPhasesAndChecksumTime() async throws {
        let server = try await TestServer.start { $0.serveWhileLoading = false }
        let reply = try await server.request(
            .POST, "/v1/completions", json: ["model": "smollm2-135m", "prompt": "Hi", "max_tokens": 2])
        #expect(reply.status == 200)
        let snapshot = try await server.request(.GET, "/admin/console").json["snapshot"] as? [String: Any] ?? [:]
        let cold = (snapshot["cold_starts"] as? [[String: Any]])?.first ?? [:]
        #expect(cold["tier"] as? String == "ssd", "\(cold)")
        #expect((cold["load_seconds"] as? Double ?? 0) > 0 && (cold["verify_seconds"] as? Double ?? 0) > 0, "\(cold)")
        #expect(cold["fetched_bytes"] == nil, "read from this node's SSD: \(cold)")
        let instance = try #require(cold["instance"] as? String)
        let stopped = try await server.request(.POST, "/admin/instances/\(instance)/stop")
        #expect(stopped.status == 200 && stopped.json["stopping"] as? String == "now", "\(stopped.json)")
        let ps = try await server.request(.GET, "/admin/ps").array
        #expect(ps.isEmpty, "\(ps)")
        #expect(try await server.request(.POST, "/admin/instances/\(instance)/stop").status == 404)
        try await server.stop()
    }
}
