public import Foundation

/// Runs the built `sllm` executable (found beside the test bundle) and captures its output.
public struct CLIResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

public func runSLLM(_ arguments: [String], home: String, environment: [String: String] = [:]) throws -> CLIResult {
    let process = Process()
    process.executableURL = sllmExecutable()
    process.arguments = arguments
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
