import Crypto
import Foundation
import HTTPTypes
public import Hummingbird
public import Logging
import NIOCore
import NIOFoundationCompat
public import Serving
public import Store
import Synchronization

/// A node's worker served over HTTP to the cluster's controllers (`sllm worker`): the
/// ``Worker`` protocol as ``WorkerWire`` calls, behind the cluster token.
///
/// A stranger who reaches the port can run nothing and read nothing: every path but `/health`
/// needs `Authorization: Bearer <cluster token>` (compared in constant time; 401 otherwise), and
/// an unknown path answers 404 only after that check.
public struct WorkerRoutes: Sendable {
    let worker: any Worker
    let tokenDigest: [UInt8]
    /// The node's loader, whose checkpoints peers fetch (``CheckpointRoutes``); nil serves none.
    let checkpoints: ModelLoader?
    let logger: Logger
    /// The newest leader epoch seen in a call (``WorkerWire/epochHeader``).
    let epochs = LeaderEpochs()

    /// - Parameters:
    ///   - token: the cluster token (at least 16 bytes: a Kubernetes Secret's value).
    ///   - checkpoints: the loader whose store (and fetches under way) peers read.
    public init(worker: any Worker, token: String, checkpoints: ModelLoader? = nil, logger: Logger)
        throws(ServingError)
    {
        guard token.utf8.count >= 16 else {
            throw ServingError(.invalidRequest, "the cluster token must be at least 16 bytes (got \(token.utf8.count))")
        }
        self.checkpoints = checkpoints
        self.worker = worker
        tokenDigest = Array(SHA256.hash(data: Data(token.utf8)))
        self.logger = logger
    }

    /// The router of a worker's HTTP server.
    public func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.middlewares.add(TokenMiddleware(tokenDigest: tokenDigest))
        router.get("health") { _, _ in "ok" }
        router.post(RouterPath(WorkerWire.callPath)) { request, context in
            try await handle(request, context: context)
        }
        if let checkpoints { CheckpointRoutes.add(to: router, loader: checkpoints, logger: logger) }
        return router
    }

    func handle(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let call: WorkerCall
        switch await Self.read(request, as: WorkerCall.self, upTo: WorkerWire.maxCallBytes, by: "worker") {
        case .success(let body): call = body
        case .failure(let refusal): return refusal.response
        }
        logger.debug("worker call", metadata: ["call": "\(call.name)"])
        if let refusal = epochs.admit(request.headers[HTTPField.Name(WorkerWire.epochHeader)!]) {
            logger.warning(
                "refused a call of a former leader", metadata: ["call": "\(call.name)", "why": "\(refusal)"])
            return Self.reply(
                WireReply<WireDone>.error(WireError(refusal)),
                status: refusal.kind == .conflict ? .conflict : .badRequest)
        }
        switch call {
        case .inventory:
            return Self.reply(WireReply.value(await worker.inventory()))
        case .modelFacts(let model):
            return await Self.unary { try await worker.modelFacts(model) }
        case .resolve(let source):
            return await Self.unary { try await worker.resolve(source) }
        case .pull(let source, let name):
            return Self.stream(worker.pull(source, as: name))
        case .prefetch(let model, let tier):
            return await Self.unary { try await worker.prefetch(model, into: tier) }
        case .evict(let model, let tier):
            return await Self.unary { try await worker.evict(model, from: tier) }
        case .verifyCache(let model):
            return await Self.unary { try await worker.verifyCache(model) }
        case .startInstance(let spec):
            return Self.stream(worker.startInstance(spec))
        case .stopInstance(let id):
            await worker.stopInstance(id)
            return Self.reply(WireReply.value(WireDone()))
        case .run(let job, let instance):
            return Self.stream(worker.run(job, on: instance))
        case .cancel(let job, let instance):
            await worker.cancel(job: job, on: instance)
            return Self.reply(WireReply.value(WireDone()))
        case .snapshot(let job, let instance):
            return Self.reply(WireReply.value(await worker.snapshot(job: job, on: instance)))
        case .warm(let tokens, let instance):
            return await Self.unary { try await worker.warm(tokens, on: instance) }
        case .detach(let job, let instance):
            return Self.reply(WireReply.value(await worker.detach(job: job, on: instance)))
        }
    }

    /// A request refused before it was read: its 400 answer.
    struct Refusal: Error {
        var response: Response
    }

    /// Checks a cluster request's protocol version (`by` names this end in the message) and reads
    /// its body, at most `limit` bytes, as `Body`; a refusal is the 400 to answer.
    static func read<Body: Decodable>(_ request: Request, as: Body.Type, upTo limit: Int, by end: String) async
        -> Result<Body, Refusal>
    {
        let theirs = request.headers[HTTPField.Name(WorkerWire.versionHeader)!]
        guard theirs == String(WorkerWire.version) else {
            return .failure(
                Refusal(
                    response: reply(
                        WireReply<WireDone>.error(
                            WireError(
                                ServingError(
                                    .invalidRequest,
                                    "worker protocol \(theirs ?? "(none)") is not this \(end)'s (\(WorkerWire.version)): run one sllm version across the cluster"
                                ))), status: .badRequest)))
        }
        do {
            let buffer = try await request.body.collect(upTo: limit)
            return .success(try JSONDecoder.wire.decode(Body.self, from: Data(buffer: buffer)))
        } catch {
            let what = Body.self == WorkerCall.self ? "a worker call" : "a \(Body.self)"
            return .failure(
                Refusal(
                    response: reply(
                        WireReply<WireDone>.error(WireError(ServingError(.invalidRequest, "not \(what): \(error)"))),
                        status: .badRequest)))
        }
    }

    static func unary<Value: Codable & Sendable>(_ body: () async throws -> Value) async -> Response {
        do { return reply(WireReply.value(try await body())) } catch {
            return reply(WireReply<Value>.error(WireError(error)))
        }
    }

    static func reply<Value>(_ reply: WireReply<Value>, status: HTTPResponse.Status = .ok) -> Response {
        let data =
            (try? JSONEncoder.wire.encode(reply))
            ?? Data(#"{"error":{"_0":{"kind":"internalError","message":"unencodable reply"}}}"#.utf8)
        return Response(
            status: status, headers: headers(contentType: "application/json"),
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// Events as they come, one JSON line each, then `end` (or the error that ended them). The
    /// controller going away ends the writes, which ends the iteration and so the work (a
    /// generation's job is cancelled as when a local consumer stops).
    static func stream<Event: Codable & Sendable>(_ events: AsyncThrowingStream<Event, any Error>) -> Response {
        Response(
            status: .ok, headers: headers(contentType: "application/x-ndjson"),
            body: ResponseBody { writer in
                let encoder = JSONEncoder.wire
                func line(_ line: WireLine<Event>) throws -> ByteBuffer {
                    var data = try encoder.encode(line)
                    data.append(0x0A)
                    return ByteBuffer(bytes: data)
                }
                do {
                    for try await event in events { try await writer.write(try line(.event(event))) }
                    try await writer.write(try line(.end))
                } catch let error as CancellationError {
                    throw error
                } catch {
                    // An error of the work goes to the controller; a failed write (it left) ends here.
                    try? await writer.write(try line(.error(WireError(error))))
                }
                try await writer.finish(nil)
            })
    }

    static func headers(contentType: String) -> HTTPFields {
        var headers = HTTPFields()
        headers[.contentType] = contentType
        headers[HTTPField.Name(WorkerWire.versionHeader)!] = String(WorkerWire.version)
        return headers
    }
}

/// Every path but the open ones (a worker's `/health`) needs the cluster token.
struct TokenMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let tokenDigest: [UInt8]
    var open: Set<String> = ["/health"]

    init(tokenDigest: [UInt8], open: Set<String> = ["/health"]) {
        self.tokenDigest = tokenDigest
        self.open = open
    }

    init(token: String, open: Set<String>) {
        self.init(tokenDigest: Array(SHA256.hash(data: Data(token.utf8))), open: open)
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        if !open.contains(request.uri.path) {
            let header = request.headers[.authorization] ?? ""
            let given = header.hasPrefix("Bearer ") ? String(header.dropFirst(7)) : ""
            let digest = Array(SHA256.hash(data: Data(given.utf8)))
            var difference: UInt8 = 0
            for (a, b) in zip(digest, tokenDigest) { difference |= a ^ b }
            guard difference == 0 else {
                var headers = WorkerRoutes.headers(contentType: "application/json")
                headers[.wwwAuthenticate] = "Bearer"
                let body = try JSONEncoder.wire.encode(
                    WireReply<WireDone>.error(
                        WireError(ServingError(.unauthorized, "this needs the cluster token"))))
                return Response(
                    status: .unauthorized, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
            }
        }
        return try await next(request, context)
    }
}

/// The leader epochs a worker has seen: a call of an older epoch than the newest comes from a
/// controller that another has replaced (paused past its lease, or cut off), and is refused, so
/// two controllers never both start, stop or run things on a worker. Calls without an epoch (a
/// controller with no shared database) are let through.
final class LeaderEpochs: Sendable {
    private let newest = Mutex<Int64?>(nil)

    /// Nil when a call with `header` may go ahead (the newest epoch is then updated); else why not.
    func admit(_ header: String?) -> ServingError? {
        guard let header else { return nil }
        guard let epoch = Int64(header), epoch > 0 else {
            return ServingError(
                .invalidRequest, "\(WorkerWire.epochHeader) must be a positive whole number (got \(header))")
        }
        return newest.withLock { newest in
            if let seen = newest, epoch < seen {
                return ServingError(
                    .conflict,
                    "the controller of leader epoch \(epoch) no longer leads: this worker takes calls from the leader of epoch \(seen) (a worker remembers the newest epoch until it restarts: restart it if the cluster's state database was made anew)"
                )
            }
            newest = epoch
            return nil
        }
    }
}
