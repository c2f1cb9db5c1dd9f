import Foundation
import Serving
import TestSupport
import Testing

@testable import Cluster

@Suite struct PostgresLocationTests {
    let environment: [String: String] = [:]

    @Test func urlsAreReadAsLibpqReadsThem() throws {
        let full = try PostgresLocation(
            url: "postgres://ops:p%40ss:w@db.internal:6543/sllm?sslmode=require&connect_timeout=3&application_name=c1",
            environment: environment)
        #expect(full.user == "ops" && full.password == "p@ss:w")
        #expect(full.host == "db.internal" && full.port == 6543 && full.database == "sllm")
        #expect(full.tls == .require && full.connectTimeout == .seconds(3) && full.applicationName == "c1")
        #expect(!full.redacted.contains("p@ss") && full.redacted.contains("ops@db.internal:6543/sllm"))

        let socket = try PostgresLocation(url: "postgresql:///state?host=/run/postgresql", environment: environment)
        #expect(socket.host == nil && socket.socketDirectory == "/run/postgresql")
        #expect(socket.socketPath == "/run/postgresql/.s.PGSQL.5432" && socket.database == "state")

        let v6 = try PostgresLocation(url: "postgres://[::1]:5433/x?sslmode=disable", environment: environment)
        #expect(v6.host == "::1" && v6.port == 5433 && v6.tls == .disable)
        #expect(v6.redacted.contains("[::1]:5433"))

        // libpq's fallbacks: the environment's user, password and database, else postgres.
        let bare = try PostgresLocation(url: "postgres://db", environment: environment)
        #expect(bare.user == "postgres" && bare.database == "postgres" && bare.password == nil && bare.port == 5432)
        let fromEnvironment = try PostgresLocation(
            url: "postgres://db", environment: ["PGUSER": "u", "PGPASSWORD": "pw", "PGDATABASE": "d"])
        #expect(fromEnvironment.user == "u" && fromEnvironment.password == "pw" && fromEnvironment.database == "d")
        let database = try PostgresLocation(url: "postgres://db/x?dbname=y&user=z", environment: environment)
        #expect(database.database == "y" && database.user == "z")
    }

    @Test func badURLsNameWhatIsWrongAndNeverThePassword() {
        let cases: [(String, String)] = [
            ("mysql://db/x", "expected postgres://"),
            ("postgres://u:hunter2@db:99999/x", "port `99999`"),
            ("postgres://u:hunter2@db:/x", "port `` is not"),
            ("postgres://db/x?sslmode=bogus", "sslmode is not one of"),
            ("postgres://db/x?pasword=hunter2", "unknown parameter `pasword`"),
            ("postgres://db/x?passwordhunter2", "has no value"),
            ("postgres://db/x?sslmode", "has no value"),
            ("postgres:///x", "no host"),
            ("postgres://u:hunter2@/x", "no host"),
            ("postgres://[::1/x", "not closed"),
            ("postgres://db/x/y", "holds a /"),
            ("postgres://db/x#frag", "fragment"),
            ("postgres://db/x%zz", "percent-escape"),
            ("postgres://db/x%00", "NUL"),
            ("postgres://db /x", "whitespace"),
            ("postgres://db/x?connect_timeout=0", "connect_timeout"),
            ("postgres://db/" + String(repeating: "x", count: 5000), "longer than 4096"),
        ]
        for (url, expected) in cases {
            #expect {
                try PostgresLocation(url: url, environment: environment)
            } throws: { error in
                guard let error = error as? ServingError else { return false }
                return error.kind == .invalidRequest && error.message.contains(expected)
                    && !error.message.contains("hunter2")
            }
        }
    }

    /// Mutated URLs never trap, and a password the URL still spells out is never echoed.
    @Test func mutatedURLsNeverTrapOrLeakThePassword() {
        var random = SeededGenerator(seed: 0x5EED_0F_5A1)
        let seeds = [
            "postgres://ops:hunter2@db.internal:6543/sllm?sslmode=require&connect_timeout=3",
            "postgresql://ops:hunter2@[::1]:5432/state?host=/run/postgresql&application_name=x",
            "postgres://ops:hunter2@db/x?password=hunter2&user=u&dbname=d&port=1",
        ]
        let alphabet = Array(":/@?&=[]%#\\ \u{0}\u{7F}é🚀0123456789abcpostgres.")
        var parsed = 0
        for round in 0..<20_000 {
            var characters = Array(seeds[round % seeds.count])
            for _ in 0..<Int.random(in: 1...6, using: &random) {
                let position = Int.random(in: 0...characters.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: characters.insert(alphabet.randomElement(using: &random)!, at: position)
                case 1 where position < characters.count: characters.remove(at: position)
                default:
                    if position < characters.count { characters[position] = alphabet.randomElement(using: &random)! }
                }
            }
            let url = String(characters)
            do {
                let location = try PostgresLocation(url: url, environment: environment)
                parsed += 1
                #expect(
                    !location.redacted.contains("hunter2") || location.user.contains("hunter2")
                        || (location.host ?? "").contains("hunter2") || location.database.contains("hunter2")
                        || (location.socketDirectory ?? "").contains("hunter2"))
            } catch {
                // Only when the password is still where a password goes.
                if url.hasPrefix("postgres://ops:hunter2@") || url.hasPrefix("postgresql://ops:hunter2@") {
                    let authority = url.split(separator: "/", maxSplits: 3, omittingEmptySubsequences: false)
                    if authority.count > 2, authority[2].contains("@"), !authority[2].contains("?") {
                        #expect(!error.message.contains("hunter2"), "\(url) -> \(error.message)")
                    }
                }
            }
        }
        #expect(parsed > 1000)
    }
}
