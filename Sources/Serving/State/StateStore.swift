import Crypto
public import Foundation
import GRDB

/// Where the control side keeps what must outlive it: deployments, settings and API keys (hashed).
/// Async, because a cluster's state is a database across the network; `sllm serve` keeps it in
/// SQLite (``SQLiteStateStore``), a cluster in PostgreSQL (the `Cluster` target's
/// `PostgresStateStore`), behind this same protocol. Errors are `ServingError`s naming what failed.
public protocol StateStore: Sendable {
    func deployments() async throws -> [DeploymentSpec]
    /// Creates or replaces a deployment (by name), in one transaction.
    func save(_ spec: DeploymentSpec) async throws
    func deleteDeployment(_ name: String) async throws
    func setting(_ key: String) async throws -> String?
    func setSetting(_ key: String, _ value: String) async throws
    /// A new key: its record, and the secret (shown once; only its hash is kept).
    func createKey(name: String, admin: Bool) async throws -> (APIKey, secret: String)
    func keys() async throws -> [APIKey]
    /// Every stored key's hash, and whether it is an admin key.
    func keyHashes() async throws -> [String: Bool]
    /// Whether a key with that id existed (and is now gone).
    func revokeKey(_ id: String) async throws -> Bool
}

/// The server's durable state in SQLite (`<data-dir>/state.sqlite`): deployments, API keys and
/// settings. Writes are transactions, so a crash never leaves half a deployment. Its calls are
/// synchronous (a local file); they satisfy the async protocol as they are.
public final class SQLiteStateStore: StateStore {
    let path: String
    private let database: DatabaseQueue

    public init(path: String) throws {
        self.path = path
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        do {
            database = try DatabaseQueue(path: path, configuration: configuration)
            try Self.migrator.migrate(database)
        } catch {
            throw ServingError(.internalError, "cannot open the state database \(path): \(error)")
        }
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.create(table: "deployment") { table in
                table.primaryKey("name", .text)
                table.column("spec", .text).notNull()
            }
            try db.create(table: "apiKey") { table in
                table.primaryKey("id", .text)
                table.column("name", .text).notNull()
                table.column("sha256", .text).notNull().unique()
                table.column("admin", .boolean).notNull()
                table.column("createdAt", .datetime).notNull()
            }
            try db.create(table: "setting") { table in
                table.primaryKey("key", .text)
                table.column("value", .text).notNull()
            }
        }
        return migrator
    }

    // MARK: - Deployments

    public func deployments() throws -> [DeploymentSpec] {
        let texts = try database.read { db in try String.fetchAll(db, sql: "SELECT spec FROM deployment ORDER BY name")
        }
        return try texts.map(StateCoding.decodeDeployment)
    }

    public func save(_ spec: DeploymentSpec) throws {
        let text = try StateCoding.encode(spec)
        try database.write { db in
            try db.execute(
                sql:
                    "INSERT INTO deployment (name, spec) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET spec = excluded.spec",
                arguments: [spec.name, text])
        }
    }

    public func deleteDeployment(_ name: String) throws {
        try database.write { db in try db.execute(sql: "DELETE FROM deployment WHERE name = ?", arguments: [name]) }
    }

    // MARK: - Settings

    public func setting(_ key: String) throws -> String? {
        try database.read { db in
            try String.fetchOne(db, sql: "SELECT value FROM setting WHERE key = ?", arguments: [key])
        }
    }

    public func setSetting(_ key: String, _ value: String) throws {
        try database.write { db in
            try db.execute(
                sql:
                    "INSERT INTO setting (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                arguments: [key, value])
        }
    }

    // MARK: - API keys

    /// Creates a key; returns its record and the secret, which is stored only as a hash.
    public func createKey(name: String, admin: Bool) throws -> (APIKey, secret: String) {
        let (key, secret) = APIKey.make(name: name, admin: admin)
        try database.write { db in
            try db.execute(
                sql: "INSERT INTO apiKey (id, name, sha256, admin, createdAt) VALUES (?, ?, ?, ?, ?)",
                arguments: [key.id, key.name, APIKey.hash(secret), key.admin, key.createdAt])
        }
        return (key, secret)
    }

    public func keys() throws -> [APIKey] {
        try database.read { db in
            try Row.fetchAll(db, sql: "SELECT id, name, admin, createdAt FROM apiKey ORDER BY createdAt").map {
                APIKey(id: $0["id"], name: $0["name"], admin: $0["admin"], createdAt: $0["createdAt"])
            }
        }
    }

    /// Every stored key's hash and whether it is an admin key.
    public func keyHashes() throws -> [String: Bool] {
        try database.read { db in
            var hashes: [String: Bool] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT sha256, admin FROM apiKey") {
                hashes[row["sha256"]] = row["admin"]
            }
            return hashes
        }
    }

    /// Revokes a key by id; false when there is none.
    public func revokeKey(_ id: String) throws -> Bool {
        try database.write { db in
            try db.execute(sql: "DELETE FROM apiKey WHERE id = ?", arguments: [id])
            return db.changesCount > 0
        }
    }
}

/// A stored API key (its secret is never stored).
public struct APIKey: Sendable, Codable, Equatable {
    public var id: String
    public var name: String
    public var admin: Bool
    public var createdAt: Date

    public init(id: String, name: String, admin: Bool, createdAt: Date) {
        self.id = id
        self.name = name
        self.admin = admin
        self.createdAt = createdAt
    }

    /// A new key and its secret (`sk-sllm-` and 48 random hex digits; the id is its first 8).
    public static func make(name: String, admin: Bool) -> (APIKey, secret: String) {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<24).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let secret = "sk-sllm-" + bytes.map { String(format: "%02x", $0) }.joined()
        return (APIKey(id: String(secret.dropFirst(8).prefix(8)), name: name, admin: admin, createdAt: Date()), secret)
    }

    /// What a store keeps of a secret: its SHA-256, in hex.
    public static func hash(_ secret: String) -> String {
        SHA256.hash(data: Data(secret.utf8)).map { String(format: "%02x", $0) }.joined()
    }
}

/// How stores write the values they keep as JSON (a deployment's spec), so that every store
/// reads what another wrote: ISO 8601 dates, snake-case keys.
public enum StateCoding {
    public static func encode(_ spec: DeploymentSpec) throws -> String {
        String(decoding: try JSONEncoder.iso.encode(spec), as: UTF8.self)
    }

    public static func decodeDeployment(_ text: String) throws -> DeploymentSpec {
        try JSONDecoder.iso.decode(DeploymentSpec.self, from: Data(text.utf8))
    }
}

extension JSONEncoder {
    static var iso: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}

extension JSONDecoder {
    static var iso: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }
}

/// The stored deployments of a data directory, read without a server (for `sllm rm`).
public enum StoredDeployments {
    /// Names of the deployments that serve `model`; empty when the directory has no state.
    public static func using(model: String, dataDirectory: String) throws -> [String] {
        let path = dataDirectory + "/state.sqlite"
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        return try SQLiteStateStore(path: path).deployments().filter { $0.model == model }.map(\.name)
    }
}
