import Foundation
import TestSupport
import Testing

/// `sllm serve --state-url postgres://...`: the server's deployments, settings and keys in a real
/// PostgreSQL database instead of `<data-dir>/state.sqlite`, surviving a restart.
@Suite struct PostgresStateCLITests {
    @Test func serveKeepsItsStateInPostgreSQL() async throws {
        let postgres = try PostgresServer.start()
        let (database, url) = try postgres.createDatabase("serve")
        let home = try TemporaryDirectory("serve-pg")
        defer { home.remove() }
        try await RealModel.link(into: home.path, as: "smollm2-135m")
        let port = freeTCPPort()
        let arguments = ["--port", String(port), "--threads", "1", "--no-dram-fill"]
        let env = ["SLLM_SERVER": "127.0.0.1:\(port)"]

        // The URL from the environment, as a Kubernetes Secret would give it.
        let first = try ServeProcess(arguments, home: home.path, environment: ["SLLM_STATE_URL": url])
        try #require(first.address() != nil && first.waitFor("[Serving] ready"), "\(first.output)")
        let deploy = try await runSLLM(
            ["deploy", "smollm2-135m", "--name", "second", "--keep-alive", "7m"], home: home.path, environment: env)
        #expect(deploy.status == 0, "\(deploy.stderr)")
        let key = try await runSLLM(["keys", "create", "ci"], home: home.path, environment: env)
        #expect(key.status == 0, "\(key.stderr)")
        // The rows are in PostgreSQL, and no SQLite file was made.
        #expect(
            try postgres.psql(database, "SELECT string_agg(name, ',' ORDER BY name) FROM deployment")
                == "second,smollm2-135m")
        #expect(
            try postgres.psql(database, "SELECT spec->>'model' FROM deployment WHERE name = 'second'") == "smollm2-135m"
        )
        #expect(try postgres.psql(database, "SELECT count(*) FROM api_key") == "1")
        #expect(!FileManager.default.fileExists(atPath: home.file("state.sqlite")))
        #expect(first.stop() == 0)

        // A restart (the flag this time) finds everything; the default model is not deployed twice.
        let second = try ServeProcess(arguments + ["--state-url", url], home: home.path)
        // Listening comes before the deployments are restored; `ready` after.
        try #require(second.address() != nil && second.waitFor("[Serving] ready"), "\(second.output)")
        let status = try await runSLLM(["status"], home: home.path, environment: env)
        #expect(status.stdout.contains("second") && status.stdout.contains("7m"), "\(status.stdout)")
        let keys = try await runSLLM(["keys", "list"], home: home.path, environment: env)
        #expect(keys.stdout.contains("ci"), "\(keys.stdout)")
        #expect(try await runSLLM(["delete", "second"], home: home.path, environment: env).status == 0)
        #expect(try postgres.psql(database, "SELECT count(*) FROM deployment WHERE name = 'second'") == "0")
        #expect(second.stop() == 0)
        // `sllm rm` finds the deployment that serves the model in the same database.
        let remove = try await runSLLM(["rm", "smollm2-135m"], home: home.path, environment: ["SLLM_STATE_URL": url])
        #expect(remove.status == 1 && remove.stderr.contains("served by deployment `smollm2-135m`"), "\(remove.stderr)")
    }

    /// A state URL that cannot be used stops the start with the reason, not a half-started server.
    @Test func anUnusableStateURLStopsTheStart() async throws {
        let home = try TemporaryDirectory("serve-pg-bad")
        defer { home.remove() }
        let closed = freeTCPPort()
        let cases: [([String], String)] = [
            (["--state-url", "mysql://db/x"], "not a PostgreSQL URL"),
            (["--state-url", "postgres://db/x?sslmode=maybe"], "sslmode is not one of"),
            (
                ["--state-url", "postgres://sllm:hunter2@127.0.0.1:\(closed)/x?sslmode=disable&connect_timeout=5"],
                "unreachable"
            ),
        ]
        for (arguments, expected) in cases {
            let result = try await runSLLM(
                ["serve", "--port", "0", "--default-model", ""] + arguments, home: home.path)
            #expect(result.status != 0)
            #expect(result.stderr.contains(expected) && !result.stderr.contains("hunter2"), "\(result.stderr)")
        }
    }
}
