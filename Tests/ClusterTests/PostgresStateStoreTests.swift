import Foundation
import Logging
import PostgresNIO
import Serving
import TestSupport
import Testing

@testable import Cluster

/// The state in a real PostgreSQL server (a throwaway cluster, ``PostgresServer``), checked with
/// the same contract as the SQLite file `sllm serve` keeps by default.
@Suite struct PostgresStateStoreTests {
    static var logger: Logger {
        var logger = Logger(label: "test.state")
        logger.logLevel = .warning
        return logger
    }

    func open(_ url: String) async throws -> PostgresStateStore {
        try await PostgresStateStore.open(PostgresLocation(url: url), logger: Self.logger)
    }

    static func spec(_ name: String, model: String = "smollm2-135m") -> DeploymentSpec {
        // Whole seconds: stores keep a spec's dates as ISO 8601 text.
        DeploymentSpec(name: name, model: model, createdAt: Date(timeIntervalSince1970: 1_700_000_000))
    }

    /// What every store must do, run on both.
    func checkContract(_ store: any StateStore) async throws {
        #expect(try await store.deployments().isEmpty)
        var first = Self.spec("b-chat")
        first.contextLength = 2048
        try await store.save(first)
        try await store.save(Self.spec("a-code", model: "other"))
        #expect(try await store.deployments().map(\.name) == ["a-code", "b-chat"])
        #expect(try await store.deployments().last == first)
        // Saving again replaces (by name).
        first.contextLength = 4096
        try await store.save(first)
        #expect(try await store.deployments().count == 2)
        #expect(try await store.deployments().last?.contextLength == 4096)
        try await store.deleteDeployment("a-code")
        try await store.deleteDeployment("never-was")
        #expect(try await store.deployments().map(\.name) == ["b-chat"])

        #expect(try await store.setting("default_deployed") == nil)
        try await store.setSetting("default_deployed", "1")
        try await store.setSetting("default_deployed", "2")
        #expect(try await store.setting("default_deployed") == "2")

        let (user, userSecret) = try await store.createKey(name: "ci", admin: false)
        let (admin, adminSecret) = try await store.createKey(name: "ops", admin: true)
        #expect(userSecret.hasPrefix("sk-sllm-") && userSecret != adminSecret)
        #expect(Set(try await store.keys().map(\.id)) == [user.id, admin.id])
        // Only hashes are kept.
        let hashes = try await store.keyHashes()
        #expect(hashes == [APIKey.hash(userSecret): false, APIKey.hash(adminSecret): true])
        #expect(try await store.revokeKey(user.id))
        #expect(try await !store.revokeKey(user.id))
        #expect(try await store.keys().map(\.id) == [admin.id])
        let stored = try #require(try await store.keys().first)
        #expect(abs(stored.createdAt.timeIntervalSince(admin.createdAt)) < 0.002)
    }

    @Test func postgresKeepsDeploymentsSettingsAndKeysAsSQLiteDoes() async throws {
        let server = try PostgresServer.start()
        let store = try await open(try server.createDatabase("contract").url)
        defer { store.close() }
        try await checkContract(store)

        let directory = try TemporaryDirectory("sqlite-contract")
        defer { directory.remove() }
        try await checkContract(try SQLiteStateStore(path: directory.file("state.sqlite")))
    }

    /// Values are bound, never spliced into SQL: quotes, NULs refused, and long Unicode survive.
    @Test func hostileValuesRoundTrip() async throws {
        let server = try PostgresServer.start()
        let store = try await open(try server.createDatabase("hostile").url)
        defer { store.close() }
        let nasty = [
            "x'); DROP TABLE deployment; --", "\"quoted\"", "ünïcødé ✓ 🚀", String(repeating: "é", count: 5000),
        ]
        for (index, value) in nasty.enumerated() {
            try await store.setSetting("key-\(index)-\(value)", value)
            #expect(try await store.setting("key-\(index)-\(value)") == value)
            var spec = Self.spec("d\(index)")
            spec.model = value
            try await store.save(spec)
        }
        #expect(try await store.deployments().map(\.model) == nasty)
        let (key, _) = try await store.createKey(name: nasty[0], admin: false)
        #expect(try await store.keys().first?.name == nasty[0])
        #expect(try await store.revokeKey(key.id))
    }

    /// Two servers (or controllers) on one database see each other's writes, and the state
    /// outlives them.
    @Test func storesSharingADatabaseSeeEachOthersWrites() async throws {
        let server = try PostgresServer.start()
        let url = try server.createDatabase("shared").url
        let one = try await open(url)
        let two = try await open(url)
        try await one.save(Self.spec("shared"))
        #expect(try await two.deployments().map(\.name) == ["shared"])
        let (_, secret) = try await two.createKey(name: "k", admin: true)
        #expect(try await one.keyHashes()[APIKey.hash(secret)] == true)
        one.close()
        two.close()
        let again = try await open(url)
        defer { again.close() }
        #expect(try await again.deployments().map(\.name) == ["shared"])
        #expect(try await again.keys().count == 1)
    }

    /// A controller's writes are fenced by the leader's lease row: a follower writes nothing, and
    /// a leader whose lease another controller took (a new epoch) or that ran out is refused and
    /// leaves nothing behind. A store of its own (`sllm serve`) writes freely.
    @Test func writesAreFencedByTheLeadersLease() async throws {
        let server = try PostgresServer.start()
        let store = try await open(try server.createDatabase("fencing").url)
        defer { store.close() }
        let leadership = Leadership(
            store: store, url: { "http://127.0.0.1:1" }, lease: .seconds(30), logger: Self.logger,
            onLead: {}, onDeposed: { _ in })
        func refused(_ write: @escaping () async throws -> Void, naming: String) async {
            await #expect {
                try await write()
            } throws: { error in
                let failure = ServingError(error)
                return failure.kind == .unavailable && failure.message.contains(naming)
            }
        }
        // Not leading yet: a follower writes nothing.
        await refused({ try await store.save(Self.spec("early")) }, naming: "does not lead")
        let campaign = Task { await leadership.run() }
        while !leadership.isLeader { try await Task.sleep(for: .milliseconds(10)) }
        guard case .leader(let epoch) = leadership.role else { return }
        try await store.save(Self.spec("kept"))
        try await store.setSetting("default_deployed", "1")

        // This controller pauses (its campaign stops: it does not renew, nor notice anything)
        // and another takes over meanwhile.
        campaign.cancel()
        await campaign.value
        try await store.run("take over") { client, logger in
            try await client.query("UPDATE leader SET holder = 'other', epoch = epoch + 1 WHERE id = 1", logger: logger)
        }
        #expect(leadership.isLeader)
        await refused({ try await store.save(Self.spec("lost")) }, naming: "epoch \(epoch)")
        await refused({ try await store.deleteDeployment("kept") }, naming: "passed to another")
        await refused({ try await store.setSetting("default_deployed", "2") }, naming: "passed to another")
        await refused({ _ = try await store.createKey(name: "k", admin: true) }, naming: "passed to another")
        #expect(try await store.deployments().map(\.name) == ["kept"])
        #expect(try await store.setting("default_deployed") == "1")
        #expect(try await store.keys().isEmpty)

        // Its own epoch again, but the lease ran out (nobody took it yet): refused too.
        try await store.run("let the lease run out") { client, logger in
            try await client.query(
                "UPDATE leader SET holder = \(leadership.id), epoch = \(epoch), expires_at = now() - interval '1 second' WHERE id = 1",
                logger: logger)
        }
        store.writeAs(.leader(holder: leadership.id, epoch: epoch))
        await refused({ try await store.save(Self.spec("late")) }, naming: "has ended")
        // A store that is not a cluster controller's writes freely.
        store.writeAs(.anyone)
        try await store.save(Self.spec("free"))
        #expect(try await store.deployments().map(\.name) == ["free", "kept"])
    }

    /// Many processes opening a fresh database at once apply each migration exactly once.
    @Test func concurrentOpensMigrateOnce() async throws {
        let server = try PostgresServer.start()
        let (database, url) = try server.createDatabase("migrate")
        let stores = try await withThrowingTaskGroup(of: PostgresStateStore.self) { group in
            for _ in 0..<8 { group.addTask { try await self.open(url) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        defer { stores.forEach { $0.close() } }
        let versions = try server.psql(
            database, "SELECT string_agg(version::text, ',' ORDER BY version) FROM sllm_schema")
        #expect(versions == PostgresSchema.migrations.map { String($0.version) }.joined(separator: ","))
        // Opening again applies nothing.
        let later = try await open(url)
        later.close()
        #expect(try server.psql(database, "SELECT count(*) FROM sllm_schema") == String(PostgresSchema.currentVersion))
    }

    /// A database migrated by a newer sllm is refused, not used half-understood.
    @Test func aNewerSchemaIsRefused() async throws {
        let server = try PostgresServer.start()
        let (database, url) = try server.createDatabase("newer")
        try await open(url).close()
        _ = try server.psql(database, "INSERT INTO sllm_schema (version, name) VALUES (999, 'from the future')")
        await #expect {
            try await open(url)
        } throws: { error in
            let message = (error as? ServingError)?.message ?? ""
            return message.contains("version 999") && message.contains("upgrade sllm")
        }
    }

    /// The errors a user meets first name the database (never its password) and what it said.
    @Test func unusableDatabasesFailClearly() async throws {
        let server = try PostgresServer.start()
        // Nothing listens.
        let closed = freeTCPPort()
        await #expect {
            try await open("postgres://sllm:hunter2@127.0.0.1:\(closed)/x?sslmode=disable&connect_timeout=5")
        } throws: { error in
            guard let error = error as? ServingError else { return false }
            return error.kind == .unavailable && error.message.contains("127.0.0.1:\(closed)")
                && !error.message.contains("hunter2")
        }
        // No such database: the server's own words.
        await #expect {
            try await open(server.url(database: "no_such_database"))
        } throws: { error in
            guard let error = error as? ServingError else { return false }
            return error.kind == .unavailable && error.message.contains("does not exist")
                && error.message.contains("3D000")
        }
    }

    /// A server that accepts connections and then says nothing fails the open within the
    /// connect timeout instead of hanging the start.
    @Test func aSilentServerFailsWithinTheTimeout() async throws {
        let silent = try SilentListener()
        defer { silent.close() }
        await #expect {
            try await open("postgres://sllm@127.0.0.1:\(silent.port)/x?sslmode=disable&connect_timeout=1")
        } throws: { error in
            guard let error = error as? ServingError else { return false }
            // Whichever bound fires first: this store's call deadline or postgres-nio's connect timeout.
            return error.kind == .unavailable
                && (error.message.contains("did not answer within 1") || error.message.contains("timeout (1 s)"))
        }
    }
}

/// A TCP listener on 127.0.0.1 that accepts and never answers.
final class SilentListener: Sendable {
    let port: Int
    private let socket: Int32

    init() throws {
        let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(fd, 16) == 0 else { throw PostgresServerError("cannot listen") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        socket = fd
    }

    func close() { Glibc.close(socket) }
}
