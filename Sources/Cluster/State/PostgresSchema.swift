import Logging
import PostgresNIO
import Serving

/// The state database's schema, as numbered migrations applied in order at open.
///
/// `sllm_schema` records each applied migration. Migrating runs in one transaction under a
/// transaction-scoped advisory lock, so controllers starting together against one database apply
/// each migration once, and a failed migration leaves the schema as it was. A database migrated
/// by a newer sllm (a version this one does not know) is refused rather than used.
enum PostgresSchema {
    struct Migration {
        var version: Int
        var name: String
        var statements: [PostgresQuery]
    }

    /// The advisory lock's key: "sllm" in ASCII, so it does not collide with an application's own.
    static let lockKey: Int64 = 0x736C_6C6D

    static let migrations: [Migration] = [
        Migration(
            version: 1, name: "deployments, settings and API keys",
            statements: [
                """
                CREATE TABLE deployment (
                    name text PRIMARY KEY,
                    spec jsonb NOT NULL,
                    updated_at timestamptz NOT NULL DEFAULT now())
                """,
                """
                CREATE TABLE setting (
                    key text PRIMARY KEY,
                    value text NOT NULL)
                """,
                """
                CREATE TABLE api_key (
                    id text PRIMARY KEY,
                    name text NOT NULL,
                    sha256 text NOT NULL UNIQUE,
                    admin boolean NOT NULL,
                    created_at timestamptz NOT NULL)
                """,
            ]),
        Migration(
            version: 2, name: "workers and their leases",
            statements: [
                // One row per node: its current (or last) lease. Times are the database's clock.
                """
                CREATE TABLE worker (
                    node text PRIMARY KEY,
                    url text NOT NULL,
                    boot text NOT NULL,
                    state text NOT NULL CHECK (state IN ('alive', 'lost', 'left')),
                    joined_at timestamptz NOT NULL,
                    renewed_at timestamptz NOT NULL,
                    expires_at timestamptz NOT NULL,
                    reason text,
                    inventory jsonb NOT NULL)
                """
            ]),
        Migration(
            version: 3, name: "the leading controller's lease",
            statements: [
                // One row: the controller that leads, until when (the database's clock), and the
                // epoch, bumped at each change of leader.
                """
                CREATE TABLE leader (
                    id integer PRIMARY KEY CHECK (id = 1),
                    holder text NOT NULL,
                    url text NOT NULL,
                    epoch bigint NOT NULL,
                    renewed_at timestamptz NOT NULL,
                    expires_at timestamptz NOT NULL)
                """
            ]),
        Migration(
            version: 4, name: "the scheduler's decision log",
            statements: [
                """
                CREATE TABLE placement_decision (
                    id bigserial PRIMARY KEY,
                    decided_at timestamptz NOT NULL,
                    deployment text NOT NULL,
                    instance text NOT NULL,
                    policy text NOT NULL,
                    node text NOT NULL,
                    tier text NOT NULL,
                    estimated_seconds double precision,
                    actual_seconds double precision,
                    outcome text,
                    record jsonb NOT NULL)
                """,
                "CREATE INDEX placement_decision_at ON placement_decision (decided_at)",
            ]),
    ]

    /// The newest version this program knows.
    static var currentVersion: Int { migrations.last?.version ?? 0 }

    /// Applies the migrations the database lacks; returns the versions applied.
    @discardableResult
    static func migrate(_ connection: PostgresConnection, logger: Logger) async throws -> [Int] {
        try await connection.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(lockKey))", logger: logger)
            try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS sllm_schema (
                    version integer PRIMARY KEY,
                    name text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now())
                """, logger: logger)
            var applied = 0
            for try await version in try await connection.query(
                "SELECT coalesce(max(version), 0) FROM sllm_schema", logger: logger
            ).decode(Int.self) {
                applied = version
            }
            guard applied <= currentVersion else {
                throw ServingError(
                    .internalError,
                    "the state database's schema is at version \(applied), newer than this sllm knows (\(currentVersion)): upgrade sllm, or point it at another database"
                )
            }
            var done: [Int] = []
            for migration in migrations where migration.version > applied {
                for statement in migration.statements { try await connection.query(statement, logger: logger) }
                try await connection.query(
                    "INSERT INTO sllm_schema (version, name) VALUES (\(migration.version), \(migration.name))",
                    logger: logger)
                logger.info(
                    "state database migrated",
                    metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
                done.append(migration.version)
            }
            return done
        }
    }
}
