import Foundation
import NIOHTTP1
import TestSupport
import Testing

@testable import Serving

/// Authorization is decided on the route the router matched, default-deny: these tables are
/// generated from the server's own route list, so a new route cannot be left out.
@Suite(.serialized) struct AuthorizationTests {
    static func keyedServer() async throws -> TestServer {
        try await TestServer.start {
            $0.auth = .on
            $0.adminKey = "admin-secret"
            $0.apiKeys = ["user-key"]
        }
    }

    /// A concrete path for a route pattern (`{id}` → `x`).
    static func concrete(_ path: String) -> String {
        "/" + path.split(separator: "/").map { $0.hasPrefix("{") ? "x" : String($0) }.joined(separator: "/")
    }

    @Test func everyRouteChecksItsKeyNoKeyWrongKeyUserKeyRevokedKey() async throws {
        let server = try await Self.keyedServer()
        let created = try await server.request(
            .POST, "/admin/keys", json: ["name": "soon-revoked"], key: "admin-secret")
        let revoked = created.json["key"] as? String ?? ""
        let id = created.json["id"] as? String ?? ""
        #expect(try await server.request(.DELETE, "/admin/keys/\(id)", key: "admin-secret").status == 200)

        let routes = server.server.routeEntries
        // The table covers what the README lists, at least.
        for expected in [
            "v1/chat/completions", "v1/completions", "v1/models", "admin/keys", "admin/deployments", "health",
        ] {
            #expect(routes.contains { $0.path == expected }, "route \(expected) is missing from the table")
        }
        for route in routes {
            let method = HTTPMethod(rawValue: route.methodName)
            let path = Self.concrete(route.path)
            let body: [String: Any]? = route.takesBody ? [:] : nil
            func status(_ key: String?) async throws -> Int {
                guard route.streams else { return try await server.request(method, path, json: body, key: key).status }
                // A stream that does not end: its status line is the answer.
                let port = server.port
                return try await onThread {
                    let connection = try RawConnection(port: port, timeout: 10)
                    connection.send(
                        "\(route.methodName) \(path) HTTP/1.1\r\nHost: x\r\n"
                            + (key.map { "Authorization: Bearer \($0)\r\n" } ?? "") + "\r\n")
                    let head = String(
                        decoding: connection.receive { String(decoding: $0, as: UTF8.self).contains("\r\n\r\n") },
                        as: UTF8.self)
                    return Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0
                }
            }
            let label = "\(route.methodName) \(path) (\(route.access))"
            switch route.access {
            case .open:
                #expect(try await status(nil) != 401, "\(label) needs no key")
            case .user, .admin:
                #expect(try await status(nil) == 401, "\(label) without a key")
                #expect(try await status("wrong") == 401, "\(label) with a wrong key")
                #expect(try await status(revoked) == 401, "\(label) with a revoked key")
                let user = try await status("user-key")
                #expect(
                    route.access == .admin ? user == 403 : ![401, 403].contains(user),
                    "\(label) with a user key: \(user)")
                #expect(![401, 403].contains(try await status("admin-secret")), "\(label) with the admin key")
            }
        }
        try await server.stop()
    }

    /// The router drops empty path components and takes absolute-form targets: every spelling of
    /// a protected path needs its key (401 without one, never a 2xx with a user key on admin).
    @Test func pathSpellingsNeverBypassAuthorization() async throws {
        let server = try await Self.keyedServer()
        let port = server.port
        let adminSpellings = [
            "//admin/keys", "///admin/keys", "/admin//keys", "/admin/keys/", "//admin//keys//", "/./admin/keys",
            "/admin/./keys",
            "/v1/../admin/keys", "/%61dmin/keys", "/admin%2Fkeys", "/ADMIN/keys", "/Admin/Keys",
            "http://127.0.0.1:\(port)//admin/keys",
            "http://127.0.0.1:\(port)/admin/keys", "HTTP://127.0.0.1:\(port)///admin/ps", "//admin/ps",
            "///admin/deployments",
            "/admin/keys?x=/health", "/health/../admin/keys", "/health/%2e%2e/admin/keys",
        ]
        let userSpellings = [
            "//v1/chat/completions", "///v1//chat//completions", "/v1/./chat/completions",
            "http://h//v1/chat/completions", "/V1/chat/completions",
        ]
        let body =
            #"{"name":"x","admin":true,"model":"smollm2-135m","messages":[{"role":"user","content":"Hi"}],"max_tokens":1}"#
        func send(_ method: String, _ target: String, key: String?) async throws -> RawResponse {
            var request =
                "\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n"
            if let key { request += "Authorization: Bearer \(key)\r\n" }
            return try await rawRequest(port: port, request + "\r\n" + body)
        }
        for target in adminSpellings {
            for method in ["GET", "POST", "DELETE"] {
                let anonymous = try await send(method, target, key: nil)
                #expect(
                    anonymous.status == 401,
                    "\(method) \(target) without a key answered \(anonymous.status): \(anonymous.body.prefix(200))")
                let user = try await send(method, target, key: "user-key")
                #expect(
                    !(200..<300).contains(user.status),
                    "\(method) \(target) with a user key answered \(user.status): \(user.body.prefix(200))")
            }
        }
        for target in userSpellings {
            #expect(try await send("POST", target, key: nil).status == 401, "POST \(target) without a key")
        }
        // No admin key was minted through any of them.
        let keys = try await server.request(.GET, "/admin/keys", key: "admin-secret").array
        #expect(keys.isEmpty, "keys were created: \(keys)")
        // The probes stay open, and so does the root.
        for target in ["/health", "//health", "/ready", "/metrics", "/"] {
            #expect(try await send("GET", target, key: nil).status == 200, "GET \(target)")
        }
        try await server.stop()
    }

    @Test func theRootSaysTheServerIsRunning() async throws {
        let server = try await TestServer.start()
        let root = try await server.request(.GET, "/")
        #expect(root.status == 200)
        #expect(root.json["status"] as? String == "sllm is running")
        #expect(root.json["version"] as? String == Server.version)
        try await server.stop()
    }
}
