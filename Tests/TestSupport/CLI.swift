public import Foundation
import Lab

/// Runs the built `sllm` executable (found beside the test bundle) and captures its output.
public struct CLIResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs `sllm ARGUMENTS` to its exit, waiting on a thread of its own: Swift's concurrency pool has
/// as many threads as the machine has cores (two in CI), and a test blocking one of them while
/// another waits on in-process work can stall every test in the process.
public func runSLLM(
    _ arguments: [String], home: String, environment: [String: String] = [:], directory: String? = nil
) async throws -> CLIResult {
    try await onThread { try runSLLMBlocking(arguments, home: home, environment: environment, directory: directory) }
}

/// ``runSLLM(_:home:environment:directory:)`` for a thread that may block (never the pool's).
public func runSLLMBlocking(
    _ arguments: [String], home: String, environment: [String: String] = [:], directory: String? = nil
) throws -> CLIResult {
    let process = Process()
    process.executableURL = sllmExecutable()
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    var env = ProcessInfo.processInfo.environment
    env["SLLM_HOME"] = home
    for (key, value) in environment { env[key] = value }
    process.environment = env
    let directory = try TemporaryDirectory("cli-out")
    defer { directory.remove() }
    _ = FileManager.default.createFile(atPath: directory.file("out"), contents: nil)
    _ = FileManager.default.createFile(atPath: directory.file("err"), contents: nil)
    let out = try FileHandle(forWritingTo: URL(fileURLWithPath: directory.file("out")))
    let err = try FileHandle(forWritingTo: URL(fileURLWithPath: directory.file("err")))
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    try out.close()
    try err.close()
    return CLIResult(
        status: process.terminationStatus,
        stdout: (try? String(contentsOfFile: directory.file("out"), encoding: .utf8)) ?? "",
        stderr: (try? String(contentsOfFile: directory.file("err"), encoding: .utf8)) ?? "")
}

/// Starts `sllm` without waiting; output goes to /dev/null.
public func startSLLM(_ arguments: [String], home: String) throws -> Process {
    let process = Process()
    process.executableURL = sllmExecutable()
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    env["SLLM_HOME"] = home
    process.environment = env
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    process.standardInput = FileHandle.nullDevice
    try process.run()
    return process
}

/// `.build/<config>/sllm`, next to the test bundle.
public func sllmExecutable() -> URL {
    var directory = Bundle.main.bundleURL
    for _ in 0..<4 {
        let candidate = directory.appendingPathComponent("sllm")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        directory = directory.deletingLastPathComponent()
    }
    return Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("sllm")
}

/// `sllm serve` running as a process, its stderr collected.
public final class ServeProcess: @unchecked Sendable {
    // Sendable: `log` is written by the reading thread and read under `lock`.
    public let process: Process
    private let lock = NSLock()
    private var log = ""
    private let errors = Pipe()

    /// Starts `sllm COMMAND ARGUMENTS` (`serve`, `controller`, `worker`: each announces `serving on
    /// ADDRESS`) with `SLLM_HOME` = `home`, `SLLM_DRAM_FILL=false` (plus `environment`).
    ///
    /// With `namespace`, it runs inside that network namespace (a ``NetworkLab`` host), through
    /// `ip netns exec`, which execs it: the process is sllm's own.
    public init(
        _ arguments: [String], home: String, environment: [String: String] = [:], command: String = "serve",
        namespace: String? = nil
    ) throws {
        process = Process()
        if let namespace {
            process.executableURL = URL(fileURLWithPath: NetworkLab.ip)
            process.arguments = ["netns", "exec", namespace, sllmExecutable().path, command] + arguments
        } else {
            process.executableURL = sllmExecutable()
            process.arguments = [command] + arguments
        }
        var env = ProcessInfo.processInfo.environment
        env["SLLM_HOME"] = home
        // Test servers do not fill a DRAM pool up to the machine's budget; tests of the fill ask for it.
        env["SLLM_DRAM_FILL"] = "false"
        for (key, value) in environment { env[key] = value }
        process.environment = env
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let handle = errors.fileHandleForReading
        Thread {
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                self.lock.lock()
                self.log += String(decoding: chunk, as: UTF8.self)
                self.lock.unlock()
            }
        }.start()
    }

    /// What it wrote to stderr so far.
    public var output: String {
        lock.lock()
        defer { lock.unlock() }
        return log
    }

    /// Waits (on this thread) until stderr contains `text`; false after `timeout` seconds or
    /// when the process exited first.
    public func waitFor(_ text: String, timeout: Double = 60) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if output.contains(text) { return true }
            if !process.isRunning { return output.contains(text) }
            usleep(20_000)
        }
        return false
    }

    /// The `http://ADDRESS:PORT` it announced, once it listens.
    public func address(timeout: Double = 60) -> String? {
        guard waitFor("serving on", timeout: timeout),
            let range = output.range(of: #"https?://[0-9.]+:\d+"#, options: .regularExpression)
        else {
            return nil
        }
        return String(output[range])
    }

    /// SIGTERM, then waits for the exit; returns the exit status.
    @discardableResult
    public func stop() -> Int32 {
        if process.isRunning { kill(process.processIdentifier, SIGTERM) }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit { if process.isRunning { process.terminate() } }
}

/// Runs a program found on PATH; returns its exit status and output (standard error with it).
public func runProgram(_ arguments: [String], environment: [String: String]? = nil) throws -> (
    status: Int32, output: String
) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    if let environment { process.environment = environment }
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    try process.run()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, text)
}
