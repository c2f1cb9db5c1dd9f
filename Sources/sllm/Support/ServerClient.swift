import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Serving

/// Where the admin commands find the server: `--server`, else `SLLM_SERVER`, else the address
/// the server itself would take from its config file and `SLLM_HOST`/`SLLM_PORT` (so `sllm serve
/// --port` set in `config.yaml` and `sllm status` agree without another setting).
struct ServerOptions: ParsableArguments {
    /// A connection error in a few words (`connection refused`) instead of a type dump.
    static func reason(_ error: any Error) -> String {
        let text = "\(error)"
        if text.contains("connectTimeout") || text.contains("ConnectTimeout") { return "connecting timed out" }
        if text.contains("Connection refused") || text.contains("connectionRefused") || text.contains("ECONNREFUSED") {
            return "connection refused"
        }
        if text.contains("invalidURL") { return "not a valid URL" }
        return text
    }

    @Option(
        help:
            "Server address: URL or host:port (default: $SLLM_SERVER, else the host and port sllm serve reads from config.yaml, $SLLM_HOST, $SLLM_PORT)."
    )
    var server: String?

    @Option(
        name: .customLong("api-key"),
        help: "Key for the admin API (default: $SLLM_API_KEY, else $SLLM_ADMIN_KEY, else admin_key of config.yaml).")
    var apiKey: String?

    /// The server's own view of its settings (config file and environment), when readable.
    private var serverConfiguration: ServeConfiguration? {
        try? ServeConfiguration.resolved(dataDirectory: GlobalOptions.defaultRoot)
    }

    var baseURL: String {
        let environment = ProcessInfo.processInfo.environment
        if let server { return Self.url(server) }
        if let url = environment["SLLM_SERVER"], !url.isEmpty { return Self.url(url) }
        return serverConfiguration?.clientURL ?? "http://127.0.0.1:8343"
    }

    /// `host:port` and `host` get `http://`; a trailing slash goes.
    static func url(_ text: String) -> String {
        var url = text.trimmingCharacters(in: .whitespaces)
        if !url.contains("://") { url = "http://" + url }
        while url.hasSuffix("/") { url.removeLast() }
        return url
    }

    var key: String? {
        let environment = ProcessInfo.processInfo.environment
        return apiKey ?? environment["SLLM_API_KEY"] ?? environment["SLLM_ADMIN_KEY"] ?? serverConfiguration?.adminKey
    }

    /// Fails fast when nothing listens (the shared client retries connecting for a minute).
    private static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .seconds(3)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    /// Sends `request` with the key; a server that cannot be reached fails with a hint to start one.
    private func execute(_ request: HTTPClientRequest, timeout: TimeAmount) async throws -> HTTPClientResponse {
        var request = request
        if let key { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
        do {
            return try await Self.client.execute(request, timeout: timeout)
        } catch {
            throw CommandFailure(
                "cannot reach the server at \(baseURL): \(Self.reason(error)). Is `sllm serve` running there? Point at another with --server or SLLM_SERVER (host:port)."
            )
        }
    }

    /// Reads a server-sent event stream (`GET path`) to its end, calling `each` with every
    /// event's JSON data.
    func follow(_ path: String, each: ([String: Any]) throws -> Void) async throws {
        let response = try await execute(HTTPClientRequest(url: baseURL + path), timeout: .hours(2))
        guard response.status.code == 200 else {
            let bytes = try await response.body.collect(upTo: 1 << 20)
            let json = try? JSONSerialization.jsonObject(with: Data(bytes.readableBytesView))
            let message = ((json as? [String: Any])?["error"] as? [String: Any])?["message"] as? String
            if response.status.code == 401, key == nil {
                throw CommandFailure("the server at \(baseURL) needs a key: pass --api-key or set SLLM_API_KEY")
            }
            throw CommandFailure(message ?? "the server answered \(response.status)")
        }
        var parser = EventStreamParser()
        for try await chunk in response.body {
            let events: [String]
            do { events = try parser.feed(chunk.readableBytesView) } catch { throw CommandFailure("\(error)") }
            // Each event's data is one JSON object.
            for data in events {
                guard let event = try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any]
                else { continue }
                try each(event)
            }
        }
    }

    /// Sends a request to the server; returns the decoded JSON body, or fails with the server's
    /// error message (or a hint to start the server).
    func call(_ method: HTTPMethod, _ path: String, body: [String: Any]? = nil, timeout: TimeAmount = .seconds(60))
        async throws -> Any
    {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
        }
        let response = try await execute(request, timeout: timeout)
        let bytes = try await response.body.collect(upTo: 64 << 20)
        if response.status.code == 401 || response.status.code == 403, key == nil {
            throw CommandFailure("the server at \(baseURL) needs an admin key: pass --api-key or set SLLM_API_KEY")
        }
        let json = try? JSONSerialization.jsonObject(with: Data(bytes.readableBytesView), options: [.fragmentsAllowed])
        guard (200..<300).contains(response.status.code) else {
            let message = ((json as? [String: Any])?["error"] as? [String: Any])?["message"] as? String
            throw CommandFailure(message ?? "the server answered \(response.status)")
        }
        return json ?? [:]
    }
}

/// `text` as one segment of a URL path: every byte but the unreserved ones percent-encoded.
func pathSegment(_ text: String) -> String {
    let unreserved = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~"))
    return text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? text
}
