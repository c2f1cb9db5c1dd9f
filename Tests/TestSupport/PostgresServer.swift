import Foundation
import Lab
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A throwaway PostgreSQL server for the tests: the distribution's binaries (installed by
/// `.ci/run`), a fresh cluster made by `initdb` in a temporary directory, listening on
/// 127.0.0.1 at a free port and on a unix socket in that directory, with trust authentication
/// for the user `sllm`. One per test process; each test makes a database of its own.
///
/// It stops by itself: a watchdog shell stops the server and removes its directory once the test
/// process is gone, however that process ended.
public final class PostgresServer: Sendable {
    public let directory: String
    /// The address it listens on (127.0.0.1, or a ``NetworkLab`` host's).
    public let host: String
    public let port: Int
    public let binaries: String
    public let user = "sllm"

    private static let shared = Mutex<Result<PostgresServer, any Error>?>(nil)

    /// The process's server, started on first use (a failure to start is kept and rethrown).
    public static func start() throws -> PostgresServer {
        try shared.withLock { slot in
            if let slot { return try slot.get() }
            let result = Result { try PostgresServer(host: "127.0.0.1", namespace: nil) }
            slot = result
            return try result.get()
        }
    }

    /// A server of its own on a ``NetworkLab`` host (`namespace`), listening on its `address`;
    /// it stops with the test process, as the shared one does.
    public static func start(namespace: String, address: String) throws -> PostgresServer {
        try PostgresServer(host: address, namespace: namespace)
    }

    private init(host: String, namespace: String?) throws(PostgresServerError) {
        self.host = host
        guard let binaries = Self.findBinaries() else {
            throw PostgresServerError(
                "PostgreSQL's server binaries (initdb, postgres) were not found: run .ci/run, which installs the distribution's postgresql package, or set SLLM_POSTGRES_BIN"
            )
        }
        self.binaries = binaries
        let root = getuid() == 0
        // initdb refuses to run as root: the cluster belongs to the distribution's postgres user.
        let owner = root ? "postgres" : nil
        let base = NSTemporaryDirectory() + "sllm-pg-\(UUID().uuidString.prefix(8))"
        directory = base
        port = freeTCPPort()
        do {
            try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
            if let owner {
                guard let account = getpwnam(owner) else {
                    throw PostgresServerError(
                        "running as root needs the `\(owner)` user (the postgresql package makes it)")
                }
                chown(base, account.pointee.pw_uid, account.pointee.pw_gid)
            }
            let initdb = try Self.run(
                [
                    binaries + "/initdb", "-D", base + "/data", "-A", "trust", "-U", user, "--no-sync", "-E", "UTF8",
                    "--locale=C",
                ], as: owner)
            guard initdb.status == 0 else { throw PostgresServerError("initdb failed: \(initdb.output)") }
            if namespace != nil {
                // The lab's hosts reach it over their own network (trust, as on the loopback).
                let rules = try FileHandle(forWritingTo: URL(fileURLWithPath: base + "/data/pg_hba.conf"))
                rules.seekToEndOfFile()
                rules.write(Data("host all all samenet trust\n".utf8))
                try rules.close()
            }
            // The watchdog: postgres runs as its child; when the test process (or postgres) is
            // gone it stops postgres at once and removes the directory.
            let script = """
                "$0" -D "$1/data" -k "$1" -p "$2" -c listen_addresses="$4" -c fsync=off \
                  -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 \
                  -c log_min_messages=warning >"$1/postgres.log" 2>&1 &
                child=$!
                trap 'kill -QUIT $child 2>/dev/null; wait $child; rm -rf "$1"; exit 0' TERM INT
                while [ -d "/proc/$3" ] && kill -0 $child 2>/dev/null; do sleep 1; done
                kill -QUIT $child 2>/dev/null
                wait $child
                rm -rf "$1"
                """
            let process = Process()
            process.executableURL = URL(fileURLWithPath: root ? "/usr/sbin/runuser" : "/bin/sh")
            process.arguments =
                (root ? ["-u", "postgres", "--", "/bin/sh"] : [])
                + ["-c", script, binaries + "/postgres", base, String(port), String(getpid()), host]
            if let namespace {
                process.arguments = ["netns", "exec", namespace, process.executableURL!.path] + process.arguments!
                process.executableURL = URL(fileURLWithPath: NetworkLab.ip)
            }
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
        } catch let error as PostgresServerError {
            throw error
        } catch {
            throw PostgresServerError("cannot start PostgreSQL in \(base): \(error)")
        }
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if (try? Self.run([binaries + "/pg_isready", "-q", "-h", base, "-p", String(port)], as: nil))?.status == 0 {
                return
            }
            usleep(50_000)
        }
        let log = (try? String(contentsOfFile: base + "/postgres.log", encoding: .utf8)) ?? ""
        throw PostgresServerError("PostgreSQL did not start within 60 s: \(log.suffix(2000))")
    }

    /// A new, empty database: its name, and its URL (TCP on `host`, no TLS; see `url(database:)`).
    public func createDatabase(_ label: String = "test") throws(PostgresServerError) -> (name: String, url: String) {
        let name = "\(label)_\(UUID().uuidString.prefix(8).lowercased())"
        let result: (status: Int32, output: String)
        do {
            result = try Self.run(
                [binaries + "/createdb", "-h", directory, "-p", String(port), "-U", user, name], as: nil)
        } catch {
            throw PostgresServerError("createdb failed: \(error)")
        }
        guard result.status == 0 else { throw PostgresServerError("createdb \(name) failed: \(result.output)") }
        return (name, url(database: name))
    }

    /// The database's URL. Its connect timeout is long: the tests share two cores, and a test that
    /// blocks its thread can hold the Swift concurrency pool for seconds.
    public func url(database: String) -> String {
        "postgres://\(user)@\(host):\(port)/\(database)?sslmode=disable&connect_timeout=60"
    }

    /// Runs SQL through `psql` (for a test to look at or damage the state behind a store's back).
    public func psql(_ database: String, _ sql: String) throws(PostgresServerError) -> String {
        let result: (status: Int32, output: String)
        do {
            result = try Self.run(
                [
                    binaries + "/psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", directory, "-p",
                    String(port), "-U", user, "-d", database, "-c", sql,
                ], as: nil)
        } catch {
            throw PostgresServerError("psql failed: \(error)")
        }
        guard result.status == 0 else { throw PostgresServerError("psql `\(sql)` failed: \(result.output)") }
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private static func findBinaries() -> String? {
        if let explicit = ProcessInfo.processInfo.environment["SLLM_POSTGRES_BIN"] { return explicit }
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
            .compactMap(Int.init).sorted(by: >)
        return versions.map { "\(root)/\($0)/bin" }.first {
            FileManager.default.isExecutableFile(atPath: $0 + "/initdb")
        }
    }

    private static func run(_ arguments: [String], as user: String?) throws -> (status: Int32, output: String) {
        let process = Process()
        if let user {
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/runuser")
            process.arguments = ["-u", user, "--"] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: arguments[0])
            process.arguments = Array(arguments.dropFirst())
        }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.currentDirectoryURL = URL(fileURLWithPath: "/")
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

public struct PostgresServerError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
