import AsyncHTTPClient
import Foundation
import Lab
import NIOCore
import NIOHTTP1
import Store

#if canImport(Glibc)
    import Glibc
#endif

/// The bench's HTTP client: a pool wide enough for every concurrent stream.
final class BenchHTTP: Sendable {
    let client: HTTPClient

    init() {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 512
        configuration.timeout.connect = .seconds(5)
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    func shutdown() throws { try client.syncShutdown() }

    func json(_ method: HTTPMethod, _ url: String, _ body: [String: Any]? = nil) async throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: try await send(method, url, body)) as? [String: Any] ?? [:]
    }

    func array(_ method: HTTPMethod, _ url: String) async throws -> [[String: Any]] {
        try JSONSerialization.jsonObject(with: try await send(method, url, nil)) as? [[String: Any]] ?? []
    }

    private func send(_ method: HTTPMethod, _ url: String, _ body: [String: Any]?) async throws -> Data {
        var request = HTTPClientRequest(url: url)
        request.method = method
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
        }
        let response = try await client.execute(request, timeout: .seconds(300))
        let bytes = try await response.body.collect(upTo: 16 << 20)
        guard response.status == .ok || response.status == .created else {
            throw CommandFailure("\(method) \(url): \(response.status): \(String(buffer: bytes))")
        }
        return Data(bytes.readableBytesView)
    }

    /// One streamed completion on a connection of its own, checked: HTTP 200, every event JSON with `choices`, `[DONE]` last.
    /// Returns the completion tokens (from usage, else the count of text events), or why the
    /// stream failed or was malformed.
    /// `onText` sees each event's text as it arrives.
    func stream(_ url: String, _ body: [String: Any], onText: (@Sendable (String) -> Void)? = nil) async -> Result<
        Int, StreamFailure
    > {
        do {
            var request = HTTPClientRequest(url: url)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            // A fresh connection per stream, for both servers: a pooled keep-alive connection the
            // server has closed meanwhile would fail the POST (it is not retried), which
            // measures the client's pool, not the server.
            request.headers.add(name: "Connection", value: "close")
            request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
            let response = try await client.execute(request, timeout: .seconds(600))
            guard response.status == .ok else { return .failure(StreamFailure("HTTP \(response.status.code)")) }
            var pending = ""
            var events = 0
            var usage: Int?
            var done = false
            for try await buffer in response.body {
                pending += String(buffer: buffer)
                while let newline = pending.firstIndex(of: "\n") {
                    let line = pending[..<newline]
                    pending = String(pending[pending.index(after: newline)...])
                    guard line.hasPrefix("data: ") else { continue }
                    guard !done else { return .failure(StreamFailure("data after [DONE]")) }
                    if line == "data: [DONE]" { done = true; continue }
                    guard
                        let event = try? JSONSerialization.jsonObject(with: Data(line.dropFirst(6).utf8))
                            as? [String: Any],
                        event["choices"] is [Any]
                    else { return .failure(StreamFailure("malformed event: \(line.prefix(120))")) }
                    if let tokens = (event["usage"] as? [String: Any])?["completion_tokens"] as? Int { usage = tokens }
                    if let choice = (event["choices"] as? [[String: Any]])?.first, let text = choice["text"] as? String,
                        !text.isEmpty
                    {
                        events += 1
                        onText?(text)
                    }
                }
            }
            return done ? .success(usage ?? events) : .failure(StreamFailure("ended without [DONE]"))
        } catch {
            return .failure(StreamFailure("\(error)"))
        }
    }
}

struct StreamFailure: Error, Hashable {
    var reason: String
    init(_ reason: String) { self.reason = reason }
}

/// A server process of the bench, its output in a log file; stopped with SIGTERM (then SIGKILL).
final class ServerProcess: @unchecked Sendable {
    // Sendable: `process` is only started and signalled; Foundation's Process is thread-safe for that.
    let process: Process
    let url: String
    /// Where its output goes.
    let log: String

    private init(process: Process, url: String, log: String) {
        self.process = process
        self.url = url
        self.log = log
    }

    /// Starts `executable`; the URL comes from the log's `http://HOST:PORT` once `banner` appears
    /// there, or from the `--port` argument when `banner` is nil.
    static func start(executable: String, arguments: [String], log: String, banner: String?) throws -> ServerProcess {
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        if let banner {
            for _ in 0..<1200 {
                let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                if text.contains(banner),
                    let range = text.range(of: #"http://[0-9.]+:\d+"#, options: .regularExpression)
                {
                    return ServerProcess(process: process, url: String(text[range]), log: log)
                }
                guard process.isRunning else { break }
                usleep(25_000)
            }
            process.terminate()
            throw CommandFailure("\(executable) did not start\(logTail(log))")
        }
        let port = arguments[(arguments.firstIndex(of: "--port") ?? 0) + 1]
        return ServerProcess(process: process, url: "http://127.0.0.1:\(port)", log: log)
    }

    /// Starts `sllm ARGUMENTS` on a host of `lab` (through `ip netns exec`), waiting for its
    /// `serving on` banner.
    static func start(on host: String, of lab: NetworkLab, _ arguments: [String], log: String) throws
        -> ServerProcess
    {
        try start(
            executable: NetworkLab.ip,
            arguments: Array(lab.command(on: host, [sllmExecutablePath()] + arguments).dropFirst()),
            log: log, banner: "serving on")
    }

    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        for _ in 0..<400 where process.isRunning { usleep(25_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}

/// Waits until `count` workers are alive at the controller (within a minute).
func waitForNodes(_ http: BenchHTTP, controller: String, count: Int, log: String) async throws {
    let deadline = ContinuousClock.now + .seconds(60)
    while try await http.array(.GET, controller + "/admin/nodes").filter({ $0["state"] as? String == "alive" }).count
        < count
    {
        guard ContinuousClock.now < deadline else { throw CommandFailure("the workers did not join\(logTail(log))") }
        try await Task.sleep(for: .milliseconds(50))
    }
}

/// The last lines of a server's log, for an error message (the bench's scratch directory, and
/// the log with it, is removed when the bench ends).
func logTail(_ log: String, lines: Int = 8) -> String {
    let text = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").trimmingCharacters(
        in: .whitespacesAndNewlines)
    guard !text.isEmpty else { return " (its log is empty)" }
    return "; the end of its log:\n"
        + text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
}

/// A TCP port nothing listens on now.
func freePort() -> Int {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(descriptor) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) }
    }
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Whether `SLLM_BENCH_KEEP` is set: the benches then keep their scratch directories (the
/// processes' logs) and print what they would otherwise only count.
var benchKeepsScratch: Bool { ProcessInfo.processInfo.environment["SLLM_BENCH_KEEP"] != nil }

/// A bench's scratch directory (the caller removes it): `name` linked into the store of each
/// data directory `homes` (relative to it), and a fresh cluster token in its file `token`.
func benchScratch(_ label: String, linking name: ModelName, into homes: [String], global: GlobalOptions) throws
    -> String
{
    let scratch = FileManager.default.temporaryDirectory.path + "/sllm-bench-\(label)-\(getpid())"
    for home in homes {
        try FileManager.default.createDirectory(atPath: scratch + "/\(home)/models", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(
            atPath: scratch + "/\(home)/models/\(name)", withDestinationPath: global.store.directory(for: name))
    }
    let token = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
    try Data(token.utf8).write(to: URL(fileURLWithPath: scratch + "/token"))
    return scratch
}

/// This executable.
func sllmExecutablePath() -> String {
    Bundle.main.executablePath ?? CommandLine.arguments[0]
}
