import Foundation
import Hummingbird
import Synchronization

/// API keys: the configured ones (`api_keys`, `admin_key`) and those created through the admin
/// API (stored hashed in SQLite; cached here, refreshed on every change).
final class KeyRing: Sendable {
    enum Access: Comparable {
        case none, user, admin
    }

    let required: Bool
    private let state: any StateStore
    private let configured: [String: Access]
    private let stored: Mutex<[String: Bool]>

    /// - Parameter storedHashes: the stored keys at start (``StateStore/keyHashes()``).
    init(configuration: ServeConfiguration, state: any StateStore, storedHashes: [String: Bool]) {
        required = configuration.requiresKeys
        self.state = state
        var configured: [String: Access] = [:]
        for key in configuration.apiKeys { configured[key] = .user }
        if let admin = configuration.adminKey { configured[admin] = .admin }
        self.configured = configured
        stored = Mutex(storedHashes)
    }

    /// Whether anything could authenticate (binding beyond loopback without keys is refused).
    var hasAnyKey: Bool { !configured.isEmpty || stored.withLock { !$0.isEmpty } }

    func access(for secret: String) -> Access {
        if let access = configured[secret] { return access }
        let hash = APIKey.hash(secret)
        return stored.withLock { $0[hash] }.map { $0 ? .admin : .user } ?? .none
    }

    func create(name: String, admin: Bool) async throws -> (APIKey, secret: String) {
        let created = try await state.createKey(name: name, admin: admin)
        try await refresh()
        return created
    }

    func list() async throws -> [APIKey] { try await state.keys() }

    func revoke(_ id: String) async throws -> Bool {
        let revoked = try await state.revokeKey(id)
        try await refresh()
        return revoked
    }

    /// Reads the stored keys again (a controller taking over learns those made under the last leader).
    func refresh() async throws {
        let hashes = try await state.keyHashes()
        stored.withLock { $0 = hashes }
    }
}

/// Turns every error into an OpenAI error object (Hummingbird's own 404/405 included).
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        do {
            return try await next(request, context)
        } catch let error as ServingError {
            throw error
        } catch let error as HTTPError {
            let kind: ServingError.Kind =
                switch error.status.code {
                case 404: .notFound
                case 413: .bodyTooLarge
                case 401: .unauthorized
                case 400..<500: .invalidRequest
                default: .internalError
                }
            var mapped = ServingError(
                kind, error.body ?? "\(error.status.reasonPhrase): \(request.method) \(request.uri.path)")
            if error.status.code == 405 {
                mapped = ServingError(.invalidRequest, "method \(request.method) is not allowed on \(request.uri.path)")
            }
            throw mapped
        } catch {
            throw ServingError(.internalError, "internal error: \(error)")
        }
    }
}
