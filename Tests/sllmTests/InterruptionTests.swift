import Checkpoint
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// How many pieces a download's state file records as done (0 while there is none).
func piecesRecorded(in statePath: String) -> Int {
    guard let data = FileManager.default.contents(atPath: statePath),
        let done = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["done"] as? [Bool]
    else { return 0 }
    return done.filter { $0 }.count
}

/// A process killed at the worst moment leaves nothing that looks like a model, and the next
/// run recovers.
@Suite struct InterruptionTests {
    /// Polls on this thread (not the cooperative pool, which other tests may keep busy), so a
    /// short-lived state is not missed.
    func waitFor(timeout: Duration = .seconds(60), _ condition: () -> Bool) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition() { return true }
            usleep(200)
        }
        return false
    }

    @Test func aKilledConversionLeavesNoModel() async throws {
        let home = try TemporaryDirectory("kill-convert")
        defer { home.remove() }
        try SyntheticModel.writeHuggingFaceDirectory(home.file("hf"), shape: .sized(256 << 20))
        let process = try startSLLM(["pull", home.file("hf"), "--name", "big"], home: home.path)
        let models = home.path + "/models"
        let sawPartial = waitFor { directoryEntries(models).contains { $0.contains(".partial-") } }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try #require(sawPartial, "the conversion finished before it could be interrupted")
        #expect(!directoryEntries(models).contains("big"))
        let list = try await runSLLM(["list"], home: home.path)
        #expect(list.stdout.contains("no models"))
        // Listing cleared the dead writer's debris; a new pull succeeds.
        #expect(directoryEntries(models).isEmpty)
        let again = try await runSLLM(["pull", home.file("hf"), "--name", "big", "--quiet"], home: home.path)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(try await runSLLM(["verify", "big"], home: home.path).status == 0)
    }

    @Test func aKilledDownloadResumes() async throws {
        let home = try TemporaryDirectory("kill-pull")
        let server = RangeHTTPServer()
        defer {
            server.stop()
            home.remove()
        }
        let gguf = try readFile(try RealModel.ggufPath())
        server.add("smol.gguf", gguf)
        server.stall(afterTotalBytes: 40 << 20)
        try server.start()
        let process = try startSLLM(["pull", server.url("smol.gguf").absoluteString], home: home.path)
        let stalled = waitFor { server.bytesServed >= 40 << 20 }
        // The five 8 MiB pieces sent whole are recorded by the client; kill once four are (a
        // fixed sleep lost this race on a loaded machine).
        let state = home.path + "/downloads/smol/smol.gguf.partial.json"
        let recorded = waitFor(timeout: .seconds(30)) { piecesRecorded(in: state) >= 4 }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try #require(stalled && recorded)
        #expect(try await runSLLM(["list"], home: home.path).stdout.contains("no models"))
        #expect(directoryEntries(home.path + "/downloads/smol").contains("smol.gguf.partial.json"))

        server.stall(afterTotalBytes: nil)
        let before = server.bytesServed
        let again = try await runSLLM(
            ["pull", server.url("smol.gguf").absoluteString + "#sha256=" + RealModel.sha256, "--quiet"], home: home.path
        )
        #expect(again.status == 0, "\(again.stderr)")
        #expect(
            server.bytesServed - before < gguf.count - (24 << 20),
            "resumed download fetched \(server.bytesServed - before) bytes")
        #expect(try await runSLLM(["list"], home: home.path).stdout.contains("smol"))
    }
}

/// A deployment whose model was still being pulled when the server stopped (killed, or shut
/// down) resumes its pull from the stored source on the next start, where the download stopped.
@Suite struct DeploymentPullResumeTests {
    func waitFor(timeout: Double = 60, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return true }
            usleep(20_000)
        }
        return false
    }

    @Test(arguments: [SIGKILL, SIGTERM])
    func aPullCutByAStopResumesOnTheNextStart(signal: Int32) async throws {
        let home = try TemporaryDirectory("deploy-resume")
        let origin = RangeHTTPServer()
        defer {
            origin.stop()
            home.remove()
        }
        let gguf = try readFile(try RealModel.ggufPath())
        origin.add("smol.gguf", gguf)
        origin.stall(afterTotalBytes: 40 << 20)
        try origin.start()
        let port = freeTCPPort()
        let arguments = ["--port", String(port), "--default-model", "", "--threads", "1", "--shutdown-timeout", "2s"]
        let env = ["SLLM_SERVER": "127.0.0.1:\(port)"]
        let first = try ServeProcess(arguments, home: home.path)
        try #require(first.address() != nil, "\(first.output)")
        let source = origin.url("smol.gguf").absoluteString + "#sha256=" + RealModel.sha256
        let deploy = try await runSLLM(["deploy", source, "--no-wait"], home: home.path, environment: env)
        #expect(deploy.status == 0, "\(deploy.stderr)")
        try #require(waitFor { origin.bytesServed >= 40 << 20 }, "the download did not start")
        // The origin now stalls; the client records the five pieces it received whole.
        let recorded = waitFor(timeout: 30) {
            piecesRecorded(in: home.path + "/downloads/smol/smol.gguf.partial.json") >= 4
        }
        try #require(recorded, "the client did not record the pieces it received")
        kill(first.process.processIdentifier, signal)
        first.process.waitUntilExit()
        #expect(directoryEntries(home.path + "/downloads/smol").contains("smol.gguf.partial.json"))

        origin.stall(afterTotalBytes: nil)
        let before = origin.bytesServed
        let second = try ServeProcess(arguments, home: home.path)
        try #require(second.address() != nil, "\(second.output)")
        #expect(second.waitFor("deployed smol", timeout: 60), "\(second.output)")
        #expect(
            origin.bytesServed - before < gguf.count - (24 << 20),
            "the resumed pull fetched \(origin.bytesServed - before) bytes")
        let status = try await runSLLM(["status"], home: home.path, environment: env)
        #expect(status.stdout.contains("smol") && !status.stdout.contains("failed"), "\(status.stdout)")
        #expect(!FileManager.default.fileExists(atPath: home.file("downloads/smol")))
        #expect(second.stop() == 0)
    }

    /// A source that fails for good (gone, wrong checksum) leaves no download behind, and says so.
    @Test func aSourceThatFailsForGoodLeavesNoDownload() async throws {
        let home = try TemporaryDirectory("deploy-gone")
        let origin = RangeHTTPServer()
        defer {
            origin.stop()
            home.remove()
        }
        origin.add("smol.gguf", try readFile(try RealModel.ggufPath()))
        try origin.start()
        let port = freeTCPPort()
        let server = try ServeProcess(
            ["--port", String(port), "--default-model", "", "--threads", "1"], home: home.path)
        try #require(server.address() != nil, "\(server.output)")
        let env = ["SLLM_SERVER": "127.0.0.1:\(port)"]
        let wrong = String(repeating: "0", count: 64)
        let mismatch = try await runSLLM(
            ["deploy", origin.url("smol.gguf").absoluteString + "#sha256=" + wrong, "--name", "bad"], home: home.path,
            environment: env)
        #expect(
            mismatch.status == 1 && mismatch.stderr.contains("SHA-256")
                && mismatch.stderr.contains("partial download was removed"), "\(mismatch.stderr)")
        #expect(!FileManager.default.fileExists(atPath: home.file("downloads/bad")))
        let missing = try await runSLLM(
            ["deploy", origin.url("nothing.gguf").absoluteString, "--name", "gone"], home: home.path, environment: env)
        #expect(
            missing.status == 1 && missing.stderr.contains("404")
                && missing.stderr.contains("partial download was removed"), "\(missing.stderr)")
        #expect(!FileManager.default.fileExists(atPath: home.file("downloads/gone")))
        #expect(server.stop() == 0)
    }
}
