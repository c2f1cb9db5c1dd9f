import Foundation
import TestSupport
import Testing

/// The official `openai` Python client against the server, unmodified (`.ci/run` installs it;
/// elsewhere it is installed on first use into the test cache, as the model is).
@Suite struct OpenAIClientTests {
    @Test func theOfficialPythonClientWorksUnmodified() async throws {
        let server = try await TestServer.start()
        let pythonPath = try await Self.openAIPackagePath()
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "../../../scripts/openai-client-check.py"
        ).standardized.path
        var environment = ProcessInfo.processInfo.environment
        if let pythonPath {
            environment["PYTHONPATH"] = pythonPath + (environment["PYTHONPATH"].map { ":" + $0 } ?? "")
        }
        // The client talks to this process's server: it is waited for on a thread of its own, never
        // on one of the concurrency pool's (two in CI), which the server needs to answer it.
        let port = server.port
        let (status, text) = try await onThread { [environment] in
            try runProgram(
                ["python3", script, "http://127.0.0.1:\(port)/v1", "smollm2-135m"], environment: environment)
        }
        try await server.stop()
        #expect(status == 0, "\(text)")
        #expect(text.hasSuffix("ok\n"), "\(text)")
    }

    /// nil when `import openai` works as is; else a directory it was pip-installed into.
    static func openAIPackagePath() async throws -> String? {
        try await onThread { try openAIPackagePathBlocking() }
    }

    private static func openAIPackagePathBlocking() throws -> String? {
        if run(["python3", "-c", "import openai"]) == 0 { return nil }
        let home = ProcessInfo.processInfo.environment["HOME"] ?? "/tmp"
        let target = home + "/.cache/sllm-test/python"
        if run(["python3", "-c", "import sys; sys.path.insert(0, '\(target)'); import openai"]) == 0 { return target }
        guard
            run([
                "python3", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", target,
                "openai",
            ]) == 0
        else {
            throw TestSupportError("the `openai` Python package is missing and `pip install openai` failed")
        }
        return target
    }

    private static func run(_ arguments: [String]) -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return -1 }
        process.waitUntilExit()
        return process.terminationStatus
    }
}
