import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import Serving

/// What a controller that does not lead does with a request: it forwards it to the leader (one
/// hop, the body and the answer streamed through, so a stream flows as it is generated) and
/// answers for itself only `/health`, `/metrics`, `/ready` (ready once a leader is known) and the
/// lease protocol (which tells workers where the leader is). API keys are checked by the leader,
/// which reads them from the shared database. A request already forwarded once is not forwarded
/// again (two controllers that each think the other leads answer 503 rather than loop).
///
/// A stream that the leader stops sending (it died) ends with an error event naming the cause
/// (`controller_lost`); the worker that generated it stops the job when the leader's connection closes.
struct LeaderForwarding: RouterMiddleware {
    typealias Context = BasicRequestContext
    let leadership: Leadership
    let client: HTTPClient
    /// Until the leader's answer begins (a whole completion begins when it is done); the body
    /// then streams for as long as it takes.
    let timeout: TimeAmount
    let maxBodyBytes: Int
    let logger: Logger

    static let forwardedHeader = "sllm-forwarded-by"
    /// Headers of one connection, not of the request: not forwarded either way.
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
        "transfer-encoding", "upgrade", "host", "content-length",
    ]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        let path = request.uri.path
        if leadership.isLeader || path.hasPrefix("/cluster/") || path == "/health" || path == "/metrics" {
            return try await next(request, context)
        }
        if path == "/ready" {
            guard leadership.leaderURL != nil else {
                throw ServingError(.unavailable, "no controller leads yet (an election is under way)")
            }
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: #"{"status":"ready","role":"follower"}"#)))
        }
        guard request.headers[HTTPField.Name(Self.forwardedHeader)!] == nil else {
            throw ServingError(
                .unavailable, "the request was forwarded to a controller that does not lead either; retry shortly")
        }
        // The body is read first (it is bounded, and small: JSON), so that a request the leader
        // never received can be sent again to the next one.
        let body: ByteBuffer
        do { body = try await request.body.collect(upTo: maxBodyBytes) } catch {
            throw ServingError(.bodyTooLarge, "the request body exceeds the limit of \(maxBodyBytes) bytes")
        }
        // Through an election (the leader died: its lease runs out, another takes it), new
        // requests wait for the next leader instead of failing.
        let deadline = ContinuousClock.now + leadership.lease * 3
        var failed: String?
        while true {
            if leadership.isLeader {
                var local = request
                local.body = .init(buffer: body)
                return try await next(local, context)
            }
            if let leader = leadership.leaderURL, leader != failed {
                do {
                    return try await forward(request, body: body, to: leader)
                } catch let error as NotSent {
                    logger.info(
                        "the leader did not take a request; waiting for the next", metadata: ["error": "\(error)"])
                    failed = leader
                }
            }
            guard ContinuousClock.now < deadline else {
                throw ServingError(
                    .unavailable,
                    failed.map {
                        "the leading controller \($0) cannot be reached, and no other has taken over yet; retry shortly"
                    }
                        ?? "no controller leads yet (an election is under way); retry shortly")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// The leader could not be reached: it received nothing.
    struct NotSent: Error, CustomStringConvertible {
        var description: String
    }

    private func forward(_ request: Request, body: ByteBuffer, to leader: String) async throws -> Response {
        var upstream = HTTPClientRequest(url: leader + request.uri.description)
        upstream.method = HTTPMethod(rawValue: request.method.rawValue)
        for field in request.headers where !Self.hopByHop.contains(field.name.canonicalName) {
            upstream.headers.add(name: field.name.rawName, value: field.value)
        }
        upstream.headers.add(name: Self.forwardedHeader, value: leadership.url)
        if body.readableBytes > 0 || (request.method != .get && request.method != .head) {
            upstream.body = .bytes(body)
        }
        let response: HTTPClientResponse
        do {
            response = try await client.execute(upstream, timeout: timeout)
        } catch let error as HTTPClientError where error == .connectTimeout {
            throw NotSent(description: "\(error)")
        } catch {
            // A refused connection (the leader's process is gone): nothing was sent.
            if "\(error)".contains("Connection refused") { throw NotSent(description: "\(error)") }
            throw ServingError(.unavailable, "the leading controller \(leader) did not answer: \(error)")
        }
        var headers = HTTPFields()
        for (name, value) in response.headers where !Self.hopByHop.contains(name.lowercased()) {
            if let field = HTTPField.Name(name) { headers.append(HTTPField(name: field, value: value)) }
        }
        let events = response.headers.first(name: "content-type")?.hasPrefix("text/event-stream") == true
        let body = response.body
        let logger = logger
        return Response(
            status: HTTPResponse.Status(code: Int(response.status.code)), headers: headers,
            body: ResponseBody { writer in
                do {
                    for try await chunk in body { try await writer.write(chunk) }
                } catch {
                    logger.warning(
                        "the leader's answer broke off", metadata: ["leader": "\(leader)", "error": "\(error)"])
                    guard events else { throw error }
                    let message = "the leading controller \(leader) stopped answering mid-stream (\(error))"
                    let event = try JSONSerialization.data(withJSONObject: [
                        "error": ["message": message, "type": "server_error", "code": "controller_lost"]
                    ])
                    try await writer.write(ByteBuffer(string: "data: \(String(decoding: event, as: UTF8.self))\n\n"))
                }
                try await writer.finish(nil)
            })
    }
}
