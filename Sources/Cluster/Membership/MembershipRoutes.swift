public import AsyncHTTPClient
import Foundation
import HTTPTypes
public import Hummingbird
public import Logging
import NIOCore
import NIOFoundationCompat
public import ServiceLifecycle
public import Serving

/// The controller's side of the lease protocol, mounted on its HTTP server (`/cluster/...`):
/// `POST /cluster/v1/lease` and `POST /cluster/v1/leave`, behind the cluster token and the
/// worker protocol's version header, answered as ``WireReply``s.
public struct MembershipRoutes: ServerExtension {
    let membership: Membership
    let token: String
    let forwarding: LeaderForwarding?
    let leadership: Leadership?

    /// - Parameters:
    ///   - leadership: the campaign among controllers sharing the state (nil: this one alone);
    ///     while it does not lead, requests are forwarded to the leader with `client`.
    public init(
        membership: Membership, token: String, leadership: Leadership? = nil, client: HTTPClient? = nil,
        maxBodyBytes: Int = 8 << 20,
        logger: Logger = Logger(label: "sllm.controller")
    ) throws(ServingError) {
        guard token.utf8.count >= 16 else {
            throw ServingError(.invalidRequest, "the cluster token must be at least 16 bytes (got \(token.utf8.count))")
        }
        self.membership = membership
        self.token = token
        self.leadership = leadership
        if let leadership, let client {
            forwarding = LeaderForwarding(
                leadership: leadership, client: client,
                timeout: RemoteWorker.streamTimeout, maxBodyBytes: maxBodyBytes,
                logger: logger)
        } else {
            forwarding = nil
        }
    }

    public var pathPrefix: String { "cluster" }

    public var services: [any Service] {
        [MembershipService(membership: membership)] + (leadership.map { [LeadershipService($0)] } ?? [])
    }

    public func addMiddleware(to router: Router<BasicRequestContext>) {
        if let forwarding { router.middlewares.add(forwarding) }
    }

    public func register(on router: Router<BasicRequestContext>) {
        let group = router.group("cluster").add(middleware: TokenMiddleware(token: token, open: []))
        group.post("v1/lease") { request, _ in
            await Self.answer(request, as: LeaseRequest.self) { lease in try await membership.renew(lease) }
        }
        group.post("v1/leave") { request, _ in
            await Self.answer(request, as: LeaveRequest.self) { leave in
                await membership.leave(leave)
                return WireDone()
            }
        }
    }

    /// Checks the version header, reads the body as `Body` (bounded) and answers `handle`'s value
    /// or error as a ``WireReply``.
    static func answer<Body: Decodable & Sendable, Value: Codable & Sendable>(
        _ request: Request, as: Body.Type, _ handle: (Body) async throws -> Value
    ) async -> Response {
        let body: Body
        switch await WorkerRoutes.read(request, as: Body.self, upTo: LeaseWire.maxBodyBytes, by: "controller") {
        case .success(let read): body = read
        case .failure(let refusal): return refusal.response
        }
        do {
            return WorkerRoutes.reply(WireReply.value(try await handle(body)))
        } catch {
            let serving = ServingError(error)
            return WorkerRoutes.reply(WireReply<Value>.error(WireError(serving)), status: serving.status)
        }
    }
}

/// Ends the membership's watches when the controller stops.
struct MembershipService: Service {
    let membership: Membership

    func run() async throws {
        try? await gracefulShutdown()
        await membership.close()
    }
}
