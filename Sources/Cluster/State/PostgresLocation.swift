public import Foundation
public import Serving

/// Where a PostgreSQL database is and how to log in, from a libpq-style connection URL:
/// `postgres[ql]://[user[:password]@][host][:port][/database][?param=value&...]`.
///
/// Parameters: `sslmode` (`disable`, `prefer`, `require`; default `prefer`), `host` (a unix
/// socket directory, as libpq takes it: `postgres:///sllm?host=/run/postgresql`), `port`, `user`,
/// `password`, `dbname`, `connect_timeout` (seconds) and `application_name`. Anything else is an
/// error naming it, so a misspelled setting is not silently ignored. The user, password and
/// database fall back to `PGUSER`, `PGPASSWORD` and `PGDATABASE`, then to `postgres`, no password
/// and the user's name, as libpq does.
public struct PostgresLocation: Sendable, Equatable {
    public enum TLSMode: String, Sendable, Equatable {
        case disable, prefer, require
    }

    /// A host name or address, nil when `socketDirectory` is set.
    public var host: String?
    public var port: Int
    /// The directory holding the server's unix socket (`.s.PGSQL.<port>`).
    public var socketDirectory: String?
    public var user: String
    public var password: String?
    public var database: String
    public var tls: TLSMode
    public var connectTimeout: Duration
    public var applicationName: String

    /// The unix socket's path, when connecting through one.
    public var socketPath: String? { socketDirectory.map { $0 + "/.s.PGSQL.\(port)" } }

    /// The URL without its password, for logs and messages.
    public var redacted: String {
        let place = socketDirectory.map { "?host=\($0)" } ?? ""
        let address = host.map { $0.contains(":") ? "[\($0)]:\(port)" : "\($0):\(port)" } ?? ""
        return "postgres://\(user)@\(address)/\(database)\(place)"
    }

    /// Parses `url`; `environment` supplies libpq's fallbacks.
    ///
    /// - Throws: `ServingError(.invalidRequest)` naming what is wrong. Values are not echoed
    ///   (only names, and a port that is digits), so a password never reaches a log.
    public init(url: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws(ServingError) {
        func fail(_ why: String) -> ServingError {
            ServingError(.invalidRequest, "state URL: \(why)", param: "state_url")
        }
        guard url.utf8.count <= 4096 else { throw fail("longer than 4096 bytes") }
        guard let scheme = ["postgres://", "postgresql://"].first(where: { url.hasPrefix($0) }) else {
            throw fail("expected postgres://[user[:password]@]host[:port]/database")
        }
        guard !url.contains(where: { $0.isWhitespace || $0.asciiValue.map { $0 < 0x20 || $0 == 0x7F } == true })
        else { throw fail("contains whitespace or control characters") }
        var rest = Substring(url.dropFirst(scheme.count))
        var query = Substring("")
        if let mark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: mark)...]
            rest = rest[..<mark]
        }
        guard !rest.contains("#") && !query.contains("#") else { throw fail("a fragment (#) has no meaning here") }
        var path = Substring("")
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        // user:password@ — the last @ ends it (a password may hold a percent-encoded @ only).
        var user: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                user = try Self.decode(credentials[..<colon], what: "user", fail)
                password = try Self.decode(credentials[credentials.index(after: colon)...], what: "password", fail)
            } else {
                user = try Self.decode(credentials, what: "user", fail)
            }
        }
        var host: String?
        var port: Int?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw fail("an IPv6 address is not closed with ]") }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw fail("unexpected text after the IPv6 address") }
                port = try Self.port(after.dropFirst(), fail)
            }
        } else if let colon = rest.firstIndex(of: ":") {
            host = try Self.decode(rest[..<colon], what: "host", fail)
            port = try Self.port(rest[rest.index(after: colon)...], fail)
        } else if !rest.isEmpty {
            host = try Self.decode(rest, what: "host", fail)
        }
        guard !path.contains("/") else { throw fail("the database name holds a /") }
        var database = path.isEmpty ? nil : try Self.decode(path, what: "database", fail)
        var tls = TLSMode.prefer
        var socketDirectory: String?
        var connectTimeout = Duration.seconds(10)
        var applicationName = "sllm"
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            guard let equals = pair.firstIndex(of: "=") else {
                throw fail("a query parameter has no value (name=value)")
            }
            let name = String(pair[..<equals])
            let value = try Self.decode(pair[pair.index(after: equals)...], what: name, fail)
            switch name {
            case "sslmode":
                switch value {
                case "disable", "allow": tls = .disable
                case "prefer": tls = .prefer
                case "require", "verify-ca", "verify-full": tls = .require
                default: throw fail("sslmode is not one of disable, allow, prefer, require, verify-ca, verify-full")
                }
            case "host":
                if value.hasPrefix("/") { socketDirectory = value } else { host = value }
            case "port": port = try Self.port(Substring(value), fail)
            case "user": user = value
            case "password": password = value
            case "dbname": database = value
            case "connect_timeout":
                guard let seconds = Int(value), (1...3600).contains(seconds) else {
                    throw fail("connect_timeout is not a whole number of seconds from 1 to 3600")
                }
                connectTimeout = .seconds(seconds)
            case "application_name": applicationName = value
            default:
                throw fail(
                    "unknown parameter `\(name)` (known: sslmode, host, port, user, password, dbname, connect_timeout, application_name)"
                )
            }
        }
        if host?.isEmpty == true { host = nil }
        if let directory = host, directory.hasPrefix("/") {
            socketDirectory = directory
            host = nil
        }
        if socketDirectory == nil && host == nil {
            throw fail("no host: name one (postgres://host/db) or a socket directory (?host=/run/postgresql)")
        }
        let resolvedUser = user.flatMap { $0.isEmpty ? nil : $0 } ?? environment["PGUSER"] ?? "postgres"
        self.host = socketDirectory == nil ? host : nil
        self.port = port ?? 5432
        self.socketDirectory = socketDirectory
        self.user = resolvedUser
        self.password = password ?? environment["PGPASSWORD"]
        self.database = database.flatMap { $0.isEmpty ? nil : $0 } ?? environment["PGDATABASE"] ?? resolvedUser
        self.tls = tls
        self.connectTimeout = connectTimeout
        self.applicationName = applicationName
    }

    /// Whether `text` names a PostgreSQL database (the schemes this type parses).
    public static func isPostgresURL(_ text: String) -> Bool {
        text.hasPrefix("postgres://") || text.hasPrefix("postgresql://")
    }

    private static func decode(_ text: Substring, what: String, _ fail: (String) -> ServingError) throws(ServingError)
        -> String
    {
        guard let decoded = String(text).removingPercentEncoding else {
            throw fail("the \(what) has a bad percent-escape")
        }
        guard !decoded.utf8.contains(0) else { throw fail("the \(what) holds a NUL byte") }
        return decoded
    }

    private static func port(_ text: Substring, _ fail: (String) -> ServingError) throws(ServingError) -> Int {
        guard let port = Int(text), (1...65535).contains(port) else {
            // Echoed only when it is digits: a port field can hold a mistyped password.
            let shown =
                text.count <= 12 && text.allSatisfy(\.isASCII) && text.allSatisfy(\.isNumber) ? "`\(text)` " : ""
            throw fail("port \(shown)is not a number from 1 to 65535")
        }
        return port
    }
}
