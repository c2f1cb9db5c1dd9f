import Foundation
import Hummingbird

/// Who may call a route when keys are required.
enum RouteAccess: String, Sendable, Comparable {
    /// Probes, scrapers and the console's page: `/`, `/health`, `/ready`, `/metrics`, `/console/*`.
    case open
    /// Any valid key (the OpenAI API).
    case user
    /// An admin key.
    case admin

    static func < (lhs: RouteAccess, rhs: RouteAccess) -> Bool {
        let order: [RouteAccess] = [.open, .user, .admin]
        return order.firstIndex(of: lhs)! < order.firstIndex(of: rhs)!
    }
}

/// One registered route, as the router matches it.
struct RouteEntry: Sendable, Equatable {
    var method: HTTPRequest.Method
    var path: String
    var access: RouteAccess
    /// Whether the answer is a stream that does not end by itself (server-sent events).
    var streams = false

    /// `GET`, `POST`, …
    var methodName: String { method.rawValue }
    /// Whether the route reads a JSON body.
    var takesBody: Bool { method == .post || method == .patch }
}

/// Registers every route with the access it needs, so that authorization is decided on the route
/// the router matched (never on a second reading of the path), and keeps the list (the auth
/// tests are generated from it, so a new route cannot be left out).
final class Routes {
    typealias Handler = @Sendable (Request, BasicRequestContext) async throws -> Response

    private let router: Router<BasicRequestContext>
    private let keys: KeyRing
    private let lifecycle: ServerLifecycle?
    /// Every route registered so far.
    private(set) var entries: [RouteEntry] = []

    /// - Parameter lifecycle: when given, a route that is not open waits for the server to be
    ///   ready (its deployments restored) before it answers.
    init(router: Router<BasicRequestContext>, keys: KeyRing, lifecycle: ServerLifecycle? = nil) {
        self.router = router
        self.keys = keys
        self.lifecycle = lifecycle
    }

    func add(
        _ method: HTTPRequest.Method, _ path: String, _ access: RouteAccess, streams: Bool = false,
        _ handler: @escaping Handler
    ) {
        entries.append(RouteEntry(method: method, path: path, access: access, streams: streams))
        if access == .open {
            precondition(
                AuthMiddleware.openPaths.contains(RouterPath(path).components.map(\.description)),
                "open route \(path) is missing from AuthMiddleware.openPaths")
        }
        let keys = self.keys
        let lifecycle = access == .open ? nil : self.lifecycle
        router.on(RouterPath(path), method: method) { request, context in
            try keys.authorize(request, for: access)
            try await lifecycle?.awaitReady()
            return try await handler(request, context)
        }
    }
}

extension KeyRing {
    /// Throws 401 (no or unknown key) or 403 (a user key on an admin route) unless the request
    /// may call a route of `access`. Does nothing when keys are not required.
    func authorize(_ request: Request, for access: RouteAccess) throws {
        guard required, access != .open else { return }
        let granted = self.access(for: Self.bearer(request))
        guard granted != .none else {
            throw request.headers[.authorization] == nil
                ? ServingError(.unauthorized, "missing API key: send `Authorization: Bearer <key>`")
                : ServingError(.unauthorized, "invalid API key")
        }
        if access == .admin, granted != .admin {
            throw ServingError(.forbidden, "this endpoint needs an admin key")
        }
    }

    static func bearer(_ request: Request) -> String {
        guard let header = request.headers[.authorization] else { return "" }
        let trimmed = header.trimmingCharacters(in: .whitespaces)
        if trimmed.count > 7, trimmed.prefix(7).lowercased() == "bearer " {
            return String(trimmed.dropFirst(7)).trimmingCharacters(in: .whitespaces)
        }
        return trimmed
    }
}

/// Default-deny before routing: when keys are required, every request needs a valid key unless
/// its path, split exactly as the router splits it, is one of the open probes. Paths no route
/// matches therefore answer 401, not 404, to a caller without a key. The route itself then
/// checks the level it needs (`Routes.add`).
struct AuthMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let keys: KeyRing
    /// First path components whose routes authenticate themselves (``ServerExtension``).
    var extensionPrefixes: Set<String> = []
    /// While the server is not ready, a key it does not know waits for it: the keys are read
    /// again as it becomes ready (a controller taking over).
    var lifecycle: ServerLifecycle?

    /// The paths (as the router's components) anyone may call.
    static let openPaths: Set<[String]> = [
        [], ["health"], ["ready"], ["metrics"], ["console", "app.js"], ["console", "style.css"],
    ]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        let components = RouterPath(request.uri.path).components.map(\.description)
        if keys.required, !Self.openPaths.contains(components),
            !(components.first.map(extensionPrefixes.contains) ?? false)
        {
            if let lifecycle, !lifecycle.isReady, keys.access(for: KeyRing.bearer(request)) == .none {
                try await lifecycle.awaitReady()
            }
            try keys.authorize(request, for: .user)
        }
        return try await next(request, context)
    }
}
