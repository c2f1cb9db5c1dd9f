import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The DRAM cache's memory as `sllm store` shows and recovers it.
@Suite struct StoreCLITests {
    /// Starts `sllm store load smol` from a remote that sends 4 MiB/s, and kills it (SIGKILL)
    /// once its cache entry exists and part of the model has arrived.
    func killALoadMidway(home: TemporaryDirectory, server: RangeHTTPServer, cache: [String]) throws {
        let entries = home.file("cache/entries")
        let before = server.bytesServed
        let load = Process()
        load.executableURL = sllmExecutable()
        load.arguments =
            ["store", "load", "smol", "--remote", "http://127.0.0.1:\(server.port)/models", "--quiet"] + cache
        var environment = ProcessInfo.processInfo.environment
        environment["SLLM_HOME"] = home.file("node")
        load.environment = environment
        load.standardOutput = FileHandle.nullDevice
        load.standardError = FileHandle.nullDevice
        try load.run()
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline && load.isRunning {
            let entry = ((try? FileManager.default.contentsOfDirectory(atPath: entries)) ?? []).contains {
                !$0.hasPrefix(".")
            }
            if entry && server.bytesServed - before > 6 << 20 { break }
            usleep(20_000)
        }
        #expect(load.isRunning, "the load ended before it could be killed")
        kill(load.processIdentifier, SIGKILL)
        load.waitUntilExit()
    }

    /// A load killed mid-way leaves slabs nobody owns. `store status` shows them as orphaned;
    /// the next `sllm serve` returns them to the pool; `store evict --all` reclaims them too.
    @Test func aLoadKilledMidwayLeavesOrphansThatAreReclaimed() async throws {
        let home = try TemporaryDirectory("killed-load")
        defer { home.remove() }
        let origin = home.file("origin")
        #expect(
            try await runSLLM(["pull", try RealModel.ggufPath(), "--name", "smol", "--quiet"], home: origin).status == 0
        )
        let server = RangeHTTPServer()
        let checkpoint = origin + "/models/smol"
        for file in try FileManager.default.contentsOfDirectory(atPath: checkpoint) {
            server.add(
                "models/smol/\(file)", Array(try Data(contentsOf: URL(fileURLWithPath: checkpoint + "/" + file))))
        }
        server.pace(bytesPerSecond: 4 << 20)
        try server.start()
        defer { server.stop() }
        let cache = ["--cache-dir", home.file("cache"), "--dram-cache", "1GiB"]
        let node = home.file("node")

        try killALoadMidway(home: home, server: server, cache: cache)
        let orphaned = try await runSLLM(["store", "status"] + cache, home: node)
        #expect(
            orphaned.status == 0 && orphaned.stdout.contains("died mid-load")
                && !orphaned.stdout.contains("orphaned 0 B"), "\(orphaned.stdout)")
        #expect(orphaned.stdout.contains("in models 0 B"), "\(orphaned.stdout)")

        // A server start returns them to the pool (its fill is off in tests, so the pool is what the load left).
        let serve = try ServeProcess(["--port", "0", "--default-model", ""] + cache, home: node)
        #expect(serve.waitFor("[Serving] ready"), "\(serve.output)")
        #expect(
            serve.output.contains("reclaimed shared memory left by a process that died mid-load"), "\(serve.output)")
        serve.stop()
        let pooled = try await runSLLM(["store", "status"] + cache, home: node)
        #expect(
            pooled.stdout.contains("orphaned 0 B") && !pooled.stdout.contains("pooled for reuse 0 B"),
            "\(pooled.stdout)")

        try killALoadMidway(home: home, server: server, cache: cache)
        #expect(!(try await runSLLM(["store", "status"] + cache, home: node).stdout.contains("orphaned 0 B")))
        let all = try await runSLLM(["store", "evict", "--all"] + cache, home: node)
        #expect(all.status == 0 && all.stdout.contains("reclaimed"), "\(all.stdout) \(all.stderr)")
        let empty = try await runSLLM(["store", "status"] + cache, home: node)
        #expect(empty.stdout.contains("in models 0 B, pooled for reuse 0 B, orphaned 0 B"), "\(empty.stdout)")
    }

    /// `sllm serve` fills the pool up to the budget in the background (`SLLM_DRAM_FILL`, on by
    /// default; test servers turn it off), and `--no-dram-fill` wins over the environment.
    @Test func serveFillsThePoolToTheBudget() async throws {
        let home = try TemporaryDirectory("serve-fill")
        defer { home.remove() }
        let cache = ["--cache-dir", home.file("cache"), "--dram-cache", "64MiB"]
        let serve = try ServeProcess(
            ["--port", "0", "--default-model", ""] + cache, home: home.path, environment: ["SLLM_DRAM_FILL": "true"])
        #expect(serve.waitFor("DRAM pool filled: 64.0 MiB added"), "\(serve.output)")
        let status = try await runSLLM(["store", "status"] + cache, home: home.path)
        #expect(status.stdout.contains("in models 0 B, pooled for reuse 64.0 MiB, orphaned 0 B"), "\(status.stdout)")
        serve.stop()
        _ = try await runSLLM(["store", "evict", "--all"] + cache, home: home.path)
        let off = try ServeProcess(
            ["--port", "0", "--default-model", "", "--no-dram-fill"] + cache, home: home.path,
            environment: ["SLLM_DRAM_FILL": "true"])
        #expect(off.waitFor("[Serving] ready"), "\(off.output)")
        off.stop()
        #expect(!off.output.contains("DRAM pool filled"))
        #expect(
            try await runSLLM(["store", "status"] + cache, home: home.path).stdout.contains("pooled for reuse 0 B"))
    }
}
