import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// Where the admin commands find the server.
struct ServerOptions: ParsableArguments {
    @Option(help: "Server URL (default: $SLLM_SERVER, else http://127.0.0.1:$SLLM_PORT or :8343).")
    var server: String?

    @Option(name: .customLong("api-key"), help: "Key for the admin API (default: $SLLM_API_KEY, else $SLLM_ADMIN_KEY).")
    var apiKey: String?

    var baseURL: String {
        let environment = ProcessInfo.processInfo.environment
        if let server { return server.hasSuffix("/") ? String(server.dropLast()) : server }
        if let url = environment["SLLM_SERVER"], !url.isEmpty { return url }
        return "http://127.0.0.1:\(environment["SLLM_PORT"] ?? "8343")"
    }

    var key: String? {
        let environment = ProcessInfo.processInfo.environment
        return apiKey ?? environment["SLLM_API_KEY"] ?? environment["SLLM_ADMIN_KEY"]
    }

    /// Fails fast when nothing listens (the shared client retries connecting for a minute).
    private static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .seconds(3)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    /// Sends a request to the server; returns the decoded JSON body, or fails with the server's
    /// error message (or a hint to start the server).
    func call(_ method: HTTPMethod, _ path: String, body: [String: Any]? = nil) async throws -> Any {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        if let key { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
        }
        let response: HTTPClientResponse
        do {
            response = try await Self.client.execute(request, timeout: .seconds(60))
        } catch {
            throw CommandFailure("cannot reach the server at \(baseURL) (\(error)); start it with `sllm serve`")
        }
        let bytes = try await response.body.collect(upTo: 64 << 20)
        let json = try? JSONSerialization.jsonObject(with: Data(bytes.readableBytesView), options: [.fragmentsAllowed])
        guard (200..<300).contains(response.status.code) else {
            let message = ((json as? [String: Any])?["error"] as? [String: Any])?["message"] as? String
            throw CommandFailure(message ?? "the server answered \(response.status)")
        }
        return json ?? [:]
    }
}
