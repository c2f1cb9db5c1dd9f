import Foundation
public import Logging
import NIOSSL
import PostgresNIO
public import Serving
import Synchronization

/// The control side's state in PostgreSQL: what `sllm serve --state-url postgres://...` and a
/// cluster's controllers keep (deployments, settings, API keys as hashes), in a database several
/// processes share. Writes are single statements or transactions, so a crash never leaves half
/// of one; the schema is brought up to date at open (``PostgresSchema``).
///
/// Every call runs within the location's connect timeout: a database that stops answering fails
/// the call with `ServingError(.unavailable)` naming it, instead of holding the request.
public final class PostgresStateStore: StateStore {
    public let location: PostgresLocation
    let client: PostgresClient
    private let runner: Task<Void, Never>
    private let logger: Logger

    private init(location: PostgresLocation, logger: Logger) {
        self.location = location
        self.logger = logger
        var configuration: PostgresClient.Configuration
        if let socket = location.socketPath {
            configuration = .init(
                unixSocketPath: socket, username: location.user, password: location.password,
                database: location.database)
        } else {
            let tls: PostgresClient.Configuration.TLS =
                switch location.tls {
                case .disable: .disable
                case .prefer: .prefer(.makeClientConfiguration())
                case .require: .require(.makeClientConfiguration())
                }
            configuration = .init(
                host: location.host ?? "127.0.0.1", port: location.port, username: location.user,
                password: location.password, database: location.database, tls: tls)
        }
        configuration.options.connectTimeout = location.connectTimeout
        configuration.options.maximumConnections = 8
        configuration.options.additionalStartupParameters = [("application_name", location.applicationName)]
        var background = logger
        background.logLevel = max(logger.logLevel, .warning)
        let client = PostgresClient(configuration: configuration, backgroundLogger: background)
        self.client = client
        runner = Task { await client.run() }
    }

    /// Connects, checks that the server answers and that this user may use the database, and
    /// migrates the schema (``PostgresSchema``), all within the connect timeout.
    ///
    /// - Throws: `ServingError(.unavailable)` when the server cannot be reached or refuses the
    ///   login; `.internalError` when the schema is newer than this program or a migration fails.
    public static func open(_ location: PostgresLocation, logger: Logger = Logger(label: "sllm.state"))
        async throws(ServingError) -> PostgresStateStore
    {
        let store = PostgresStateStore(location: location, logger: logger)
        do {
            // A connection of its own first: the pool retries a failed connect quietly, and the
            // user is owed the server's own answer (refused, no such user, wrong password).
            let configuration = try connectionConfiguration(location)
            try await store.run("connect and bring the schema up to date") { client, logger in
                let connection = try await PostgresConnection.connect(
                    configuration: configuration, id: 0, logger: logger)
                do {
                    try await PostgresSchema.migrate(connection, logger: logger)
                } catch {
                    try? await connection.close()
                    throw error
                }
                try? await connection.close()
            }
        } catch {
            store.close()
            throw error
        }
        logger.info("state in PostgreSQL", metadata: ["database": "\(location.redacted)"])
        return store
    }

    private static func connectionConfiguration(_ location: PostgresLocation) throws(ServingError)
        -> PostgresConnection.Configuration
    {
        var configuration: PostgresConnection.Configuration
        if let socket = location.socketPath {
            configuration = .init(
                unixSocketPath: socket, username: location.user, password: location.password,
                database: location.database)
        } else {
            let tls: PostgresConnection.Configuration.TLS
            do {
                switch location.tls {
                case .disable: tls = .disable
                case .prefer: tls = .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
                case .require: tls = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
                }
            } catch {
                throw ServingError(.internalError, "cannot set up TLS for the state database: \(error)")
            }
            configuration = .init(
                host: location.host ?? "127.0.0.1", port: location.port, username: location.user,
                password: location.password, database: location.database, tls: tls)
        }
        configuration.options.connectTimeout = .nanoseconds(
            location.connectTimeout.components.seconds * 1_000_000_000 + location.connectTimeout.components.attoseconds
                / 1_000_000_000)
        configuration.options.additionalStartupParameters = [("application_name", location.applicationName)]
        return configuration
    }

    /// Closes the connections (calls made after this fail).
    public func close() { runner.cancel() }

    deinit { runner.cancel() }

    // MARK: - Deployments

    public func deployments() async throws -> [DeploymentSpec] {
        try await run("read the deployments") { client, logger in
            var specs: [DeploymentSpec] = []
            let rows = try await client.query("SELECT spec::text FROM deployment ORDER BY name", logger: logger)
            for try await text in rows.decode(String.self) { specs.append(try StateCoding.decodeDeployment(text)) }
            return specs
        }
    }

    public func save(_ spec: DeploymentSpec) async throws {
        let text = try StateCoding.encode(spec)
        try await write("save deployment \(spec.name)") { connection, logger in
            try await connection.query(
                """
                INSERT INTO deployment (name, spec, updated_at) VALUES (\(spec.name), \(text)::jsonb, now())
                ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at
                """, logger: logger)
        }
    }

    public func deleteDeployment(_ name: String) async throws {
        try await write("delete deployment \(name)") { connection, logger in
            try await connection.query("DELETE FROM deployment WHERE name = \(name)", logger: logger)
        }
    }

    // MARK: - Settings

    public func setting(_ key: String) async throws -> String? {
        try await run("read setting \(key)") { client, logger in
            let rows = try await client.query("SELECT value FROM setting WHERE key = \(key)", logger: logger)
            for try await value in rows.decode(String.self) { return value }
            return nil
        }
    }

    public func setSetting(_ key: String, _ value: String) async throws {
        try await write("write setting \(key)") { connection, logger in
            try await connection.query(
                """
                INSERT INTO setting (key, value) VALUES (\(key), \(value))
                ON CONFLICT (key) DO UPDATE SET value = excluded.value
                """, logger: logger)
        }
    }

    // MARK: - API keys

    public func createKey(name: String, admin: Bool) async throws -> (APIKey, secret: String) {
        let (key, secret) = APIKey.make(name: name, admin: admin)
        let hash = APIKey.hash(secret)
        try await write("create API key \(key.id)") { connection, logger in
            try await connection.query(
                """
                INSERT INTO api_key (id, name, sha256, admin, created_at)
                VALUES (\(key.id), \(key.name), \(hash), \(key.admin), \(key.createdAt))
                """, logger: logger)
        }
        return (key, secret)
    }

    public func keys() async throws -> [APIKey] {
        try await run("read the API keys") { client, logger in
            var keys: [APIKey] = []
            let rows = try await client.query(
                "SELECT id, name, admin, created_at FROM api_key ORDER BY created_at, id", logger: logger)
            for try await (id, name, admin, createdAt) in rows.decode((String, String, Bool, Date).self) {
                keys.append(APIKey(id: id, name: name, admin: admin, createdAt: createdAt))
            }
            return keys
        }
    }

    public func keyHashes() async throws -> [String: Bool] {
        try await run("read the API keys") { client, logger in
            var hashes: [String: Bool] = [:]
            let rows = try await client.query("SELECT sha256, admin FROM api_key", logger: logger)
            for try await (hash, admin) in rows.decode((String, Bool).self) { hashes[hash] = admin }
            return hashes
        }
    }

    public func revokeKey(_ id: String) async throws -> Bool {
        try await write("revoke API key \(id)") { connection, logger in
            let rows = try await connection.query("DELETE FROM api_key WHERE id = \(id) RETURNING id", logger: logger)
            var revoked = false
            for try await _ in rows.decode(String.self) { revoked = true }
            return revoked
        }
    }

    // MARK: - Fencing

    /// Who may write, when several controllers share the database.
    public enum Writer: Sendable, Equatable {
        /// A store of its own (`sllm serve --state-url`, the CLI): every write goes through.
        case anyone
        /// The leader holding the lease row as `holder` since `epoch`: each write checks, in its
        /// own transaction, that the row still says so (and holds the row meanwhile, so a takeover
        /// waits for the write to end). A controller paused past its lease, whose place another
        /// took, is refused instead of writing beside the new leader.
        case leader(holder: String, epoch: Int64)
        /// A follower, or a leader that stopped leading: writes are refused.
        case nobody
    }

    private let writer = Mutex<Writer>(.anyone)

    /// Sets who writes (``Leadership`` does, as its role changes).
    public func writeAs(_ writer: Writer) { self.writer.withLock { $0 = writer } }

    /// Runs a write as ``run(_:_:)`` does, fenced by the leader's lease when several controllers
    /// share the database (``Writer``). Without `fenced` (the worker leases' and the placement
    /// decisions' logs: a row per worker and second at scale, which a stale leader's next takeover
    /// rewrites anyway) a leader's write is one statement, unchecked; a follower's is still refused.
    @discardableResult
    func write<Result: Sendable>(
        _ what: String, fenced: Bool = true,
        _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> Result
    ) async throws(ServingError) -> Result {
        let writer = writer.withLock { $0 }
        switch writer {
        case .nobody:
            throw ServingError(.unavailable, "cannot \(what): this controller does not lead the cluster")
        case .anyone,
            .leader where !fenced:
            return try await run(what) { client, logger in
                try await client.withConnection { connection in try await body(connection, logger) }
            }
        case .leader(let holder, let epoch):
            return try await run(what) { client, logger in
                try await client.withTransaction(logger: logger) { connection in
                    let rows = try await connection.query(
                        """
                        SELECT epoch FROM leader
                        WHERE id = 1 AND holder = \(holder) AND epoch = \(epoch) AND expires_at > now()
                        FOR SHARE
                        """, logger: logger)
                    var holds = false
                    for try await _ in rows.decode(Int64.self) { holds = true }
                    guard holds else {
                        throw ServingError(
                            .unavailable,
                            "cannot \(what): this controller's lead (epoch \(epoch)) has ended or passed to another controller, so the write was refused"
                        )
                    }
                    return try await body(connection, logger)
                }
            }
        }
    }

    // MARK: - Calls

    /// Runs `body` within the connect timeout, turning database errors into `ServingError`s that
    /// say what was being done and what the server answered.
    @discardableResult
    func run<Result: Sendable>(
        _ what: String, _ body: @escaping @Sendable (PostgresClient, Logger) async throws -> Result
    ) async throws(ServingError) -> Result {
        let client = client
        let logger = logger
        let deadline = location.connectTimeout
        let database = location.redacted
        do {
            return try await withThrowingTaskGroup(of: Result?.self) { group in
                group.addTask { try await body(client, logger) }
                group.addTask {
                    try await Task.sleep(for: deadline)
                    return nil
                }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let result = first else {
                    throw ServingError(
                        .unavailable, "the state database \(database) did not answer within \(deadline) (\(what))")
                }
                return result
            }
        } catch let error as ServingError {
            throw error
        } catch {
            throw PostgresErrors.serving(error, doing: what, database: database)
        }
    }
}

/// Turns postgres-nio's errors (whose descriptions hide the server's message) into messages a
/// user can act on.
enum PostgresErrors {
    static func serving(_ error: any Error, doing what: String, database: String) -> ServingError {
        if let transaction = error as? PostgresTransactionError {
            let inner = transaction.closureError ?? transaction.commitError ?? transaction.beginError
            if let inner { return serving(inner, doing: what, database: database) }
        }
        if error is CancellationError {
            return ServingError(.unavailable, "cannot \(what): cancelled")
        }
        guard let psql = error as? PSQLError else {
            if let serving = error as? ServingError { return serving }
            return ServingError(.internalError, "cannot \(what) in the state database \(database): \(error)")
        }
        if let info = psql.serverInfo {
            let message = info[.message] ?? "no message"
            let state = info[.sqlState] ?? "?"
            // Class 08 (connection), 28 (authorization), 3D (no such database), 57P (shut down),
            // 53 (out of resources): the database cannot be used now, not a bad request.
            let unavailable = ["08", "28", "3D", "57", "53"].contains { state.hasPrefix($0) }
            return ServingError(
                unavailable ? .unavailable : .internalError,
                "cannot \(what): the state database \(database) answered: \(message) (SQLSTATE \(state))")
        }
        let cause = psql.underlying.map { "\($0)" } ?? "\(psql.code)"
        return ServingError(.unavailable, "cannot \(what): the state database \(database) is unreachable (\(cause))")
    }
}
