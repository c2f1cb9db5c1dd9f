import ArgumentParser
import Foundation
import NIOHTTP1

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "API keys of the running server (needs an admin key when keys are on).",
        subcommands: [Create.self, ListKeys.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a key; its secret is printed once.")
        @OptionGroup var server: ServerOptions
        @Flag(help: "An admin key (admin API too).") var admin = false
        @Argument(help: "A name for the key.") var name: String

        func run() async throws {
            let created =
                try await server.call(.POST, "/admin/keys", body: ["name": name, "admin": admin]) as? [String: Any]
                ?? [:]
            print(created["key"] as? String ?? "")
            FileHandle.standardError.write(
                Data("key \(created["id"] ?? "?") (\(name)\(admin ? ", admin" : "")): shown only now\n".utf8))
        }
    }

    struct ListKeys: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list", abstract: "List keys (ids and names, never secrets).")
        @OptionGroup var server: ServerOptions

        func run() async throws {
            let keys = try await server.call(.GET, "/admin/keys") as? [[String: Any]] ?? []
            var rows = [["ID", "NAME", "ADMIN", "CREATED"]]
            for key in keys {
                rows.append([
                    key["id"] as? String ?? "?", key["name"] as? String ?? "?",
                    (key["admin"] as? Bool ?? false) ? "yes" : "no", key["created_at"] as? String ?? "?",
                ])
            }
            print(ModelSummary.table(rows))
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key by id.")
        @OptionGroup var server: ServerOptions
        @Argument(help: "The key's id (from `sllm keys list`).") var id: String

        func run() async throws {
            _ = try await server.call(.DELETE, "/admin/keys/\(id)")
            print("revoked \(id)")
        }
    }
}
