import Foundation
import Checkpoint
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

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

    @Test func aKilledConversionLeavesNoModel() throws {
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
        let list = try runSLLM(["list"], home: home.path)
        #expect(list.stdout.contains("no models"))
        // Listing cleared the dead writer's debris; a new pull succeeds.
        #expect(directoryEntries(models).isEmpty)
        let again = try runSLLM(["pull", home.file("hf"), "--name", "big", "--quiet"], home: home.path)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(try runSLLM(["verify", "big"], home: home.path).status == 0)
    }

    @Test func aKilledDownloadResumes() throws {
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
        usleep(200_000)
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try #require(stalled)
        #expect(try runSLLM(["list"], home: home.path).stdout.contains("no models"))
        #expect(directoryEntries(home.path + "/downloads/smol").contains("smol.gguf.partial.json"))

        server.stall(afterTotalBytes: nil)
        let before = server.bytesServed
        let again = try runSLLM(["pull", server.url("smol.gguf").absoluteString + "#sha256=" + RealModel.sha256, "--quiet"], home: home.path)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(server.bytesServed - before < gguf.count - (24 << 20), "resumed download fetched \(server.bytesServed - before) bytes")
        #expect(try runSLLM(["list"], home: home.path).stdout.contains("smol"))
    }
}
