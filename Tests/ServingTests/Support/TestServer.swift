import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Scheduling
import Store
import TestSupport

@testable import Serving

/// A server on 127.0.0.1 and a free port, in a data directory of its own, with the real model.
final class TestServer: Sendable {
    let server: Server
    let port: Int
    let directory: TemporaryDirectory
    private let task: Task<Void, any Error>

    /// Starts a server; `configure` adjusts the settings (defaults: 2 threads, small DRAM cache
    /// in the data directory without the background pool fill, default model deployed).
    static func start(
        directory existing: TemporaryDirectory? = nil,
        _ configure: (inout ServeConfiguration) -> Void = { _ in },
        clock: any SchedulerClock = SystemClock(),
        wrapWorker: @escaping (LocalWorker) -> any Worker = { $0 }
    ) async throws -> TestServer {
        let directory = try existing ?? TemporaryDirectory("serve")
        try await RealModel.link(into: directory.file("home"), as: "smollm2-135m")
        var configuration = ServeConfiguration(dataDirectory: directory.file("home"))
        configuration.port = 0
        configuration.threads = 2
        configuration.dramCacheBytes = 512 << 20
        configuration.cacheDirectory = directory.file("cache")
        configuration.memoryBudgetBytes = 8 << 30
        configuration.shutdownTimeout = .seconds(10)
        configuration.dramFill = false
        configure(&configuration)
        var logger = Logger(label: "test.serve")
        logger.logLevel = .warning
        let worker = try LocalWorker(configuration: configuration, logger: logger)
        let state = try SQLiteStateStore(path: configuration.dataDirectory + "/state.sqlite")
        let server = try Server(
            configuration: configuration, worker: worker, state: state, storedKeyHashes: try state.keyHashes(),
            logger: logger, clock: clock, wrapWorker: wrapWorker)
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let task = Task {
            defer { continuation.finish() }
            try await server.run(signals: false) { port in continuation.yield(port) }
        }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else {
            try await task.value
            throw TestSupportError("the server stopped before listening")
        }
        let started = TestServer(server: server, port: port, directory: directory, task: task)
        try await started.waitUntilReady()
        return started
    }

    private init(server: Server, port: Int, directory: TemporaryDirectory, task: Task<Void, any Error>) {
        self.server = server
        self.port = port
        self.directory = directory
        self.task = task
    }

    /// Graceful shutdown; returns when `run()` has returned.
    func stop(removing: Bool = true) async throws {
        await server.shutdown()
        try await task.value
        if removing { directory.remove() }
    }

    private func waitUntilReady() async throws {
        for _ in 0..<400 {
            if try await request(.GET, "/ready").status == 200 { return }
            try await Task.sleep(for: .milliseconds(25))
        }
        throw TestSupportError("the server did not become ready")
    }

    // MARK: - Requests

    struct Reply {
        var status: Int
        var body: Data
        var headers: HTTPHeaders
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
        var array: [[String: Any]] { (try? JSONSerialization.jsonObject(with: body)) as? [[String: Any]] ?? [] }
        var text: String { String(decoding: body, as: UTF8.self) }
        var errorMessage: String? { (json["error"] as? [String: Any])?["message"] as? String }
        var errorParam: String? { (json["error"] as? [String: Any])?["param"] as? String }
    }

    func request(
        _ method: HTTPMethod, _ path: String, json: [String: Any]? = nil, raw: [UInt8]? = nil, key: String? = nil,
        timeout: TimeAmount = .seconds(120)
    ) async throws -> Reply {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        if let key { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
        if let json {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: json)))
        } else if let raw {
            request.body = .bytes(ByteBuffer(bytes: raw))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: timeout)
        let body = try await response.body.collect(upTo: 64 << 20)
        return Reply(status: Int(response.status.code), body: Data(body.readableBytesView), headers: response.headers)
    }

    /// A streaming request: the raw SSE lines (comments included), read until the stream ends
    /// or `stopAfter` data events (then the connection is dropped).
    func stream(
        _ path: String, json: [String: Any], stopAfter: Int? = nil, onEvent: (@Sendable (String) -> Void)? = nil
    ) async throws -> (status: Int, lines: [String]) {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: json)))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(120))
        var lines: [String] = []
        var pending = ""
        var events = 0
        for try await buffer in response.body {
            pending += String(decoding: buffer.readableBytesView, as: UTF8.self)
            while let newline = pending.firstIndex(of: "\n") {
                let line = String(pending[..<newline])
                pending = String(pending[pending.index(after: newline)...])
                guard !line.isEmpty else { continue }
                lines.append(line)
                onEvent?(line)
                if line.hasPrefix("data: ") {
                    events += 1
                    if let stopAfter, events >= stopAfter { return (Int(response.status.code), lines) }
                }
            }
        }
        return (Int(response.status.code), lines)
    }

    /// `data:` payloads of an SSE stream, decoded (the final `[DONE]` excluded).
    static func events(_ lines: [String]) -> [[String: Any]] {
        lines.filter { $0.hasPrefix("data: ") && $0 != "data: [DONE]" }.compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.dropFirst(6).utf8))) as? [String: Any]
        }
    }

    /// The current value of a metric line (`name{labels}`), 0 when absent.
    func metric(_ line: String) async throws -> Double {
        let text = try await request(.GET, "/metrics").text
        for row in text.split(separator: "\n") where row.hasPrefix(line + " ") {
            return Double(row.split(separator: " ").last!) ?? 0
        }
        return 0
    }

    /// The deployment's status report.
    func deployment(_ name: String) async throws -> [String: Any] {
        try await request(.GET, "/admin/deployments/\(name)").json
    }

    func instances(_ name: String) async throws -> [[String: Any]] {
        ((try await deployment(name))["status"] as? [String: Any])?["instances"] as? [[String: Any]] ?? []
    }

    /// Waits (at most `seconds`) until `condition` holds.
    func eventually(_ seconds: Double = 20, _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return try await condition()
    }
}

/// Reads a fixture copied from llama.cpp's reference outputs.
func fixture(_ name: String) throws -> [String: Any] {
    guard let url = Bundle.module.url(forResource: "Resources/\(name)", withExtension: nil) else {
        throw TestSupportError("missing fixture \(name)")
    }
    return try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any] ?? [:]
}
