import ArgumentParser
import Checkpoint
import Foundation
import Logging
import Store

#if canImport(Glibc)
    import Glibc
#endif

struct DeployBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deploy",
        abstract: "`sllm deploy` of a local GGUF against `sllm pull` of the same file, as a user runs them.",
        discussion: """
            Starts `sllm serve` (this executable) on a scratch data directory, then times, run after
            run and in alternating order, the two commands a user types for the same file:
              pull    sllm pull FILE --name NAME --quiet   (convert into the store, in the CLI)
              deploy  sllm deploy FILE --name NAME --quiet (the server converts, the CLI waits)
            Each is a new process timed from start to exit; each run uses a new name, and is
            removed afterwards. The file stays in the page cache for both. Medians with (min–max)
            and the ratio deploy / pull (goal: 1).
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var bench: BenchOptions
    var runs: Int { bench.runs ?? 7 }
    var json: String? { bench.json }

    @Option(help: "The GGUF to pull and deploy (default: SmolLM2-135M-Instruct Q4_1, fetched once).")
    var gguf: String?

    struct Report: Encodable {
        var file: String
        var bytes: Int64
        var pullMs: Sample
        var deployMs: Sample
        var ratio: Double
    }

    func run() async throws {
        _ = global.bootstrap()
        var file = gguf.map(absolutePath) ?? ""
        if gguf == nil {
            file = try await SmolLM2File.path(
                in: bench.directory(or: global.root + "/bench"), logger: Logger(label: "sllm.bench"))
        }
        guard let bytes = FileSystem.fileSize(file) else { throw CommandFailure("no such file: \(file)") }
        let scratch = FileManager.default.temporaryDirectory.path + "/sllm-bench-deploy-\(getpid())"
        let cache = "/dev/shm/sllm-bench-deploy-\(getpid())"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer {
            try? FileManager.default.removeItem(atPath: scratch)
            try? FileManager.default.removeItem(atPath: cache)
        }
        let server = try ServerProcess.start(
            executable: sllmExecutablePath(),
            arguments: [
                "serve", "--data-dir", scratch, "--port", "0", "--cache-dir", cache, "--default-model", "", "--threads",
                "1",
                "--no-dram-fill",  // timings of pull and deploy alone, not beside a pool filling its budget
            ], log: scratch + "/serve.log", banner: "serving on")
        defer { server.stop() }
        let common = ["--data-dir", scratch, "--quiet"]
        let client = ["--server", server.url, "--quiet"]

        func timed(_ arguments: [String]) throws -> Double {
            var status: Int32 = 0
            let seconds = try measure { status = try runQuietly(sllmExecutablePath(), arguments) }
            guard status == 0 else {
                throw CommandFailure(
                    "`sllm \(arguments.joined(separator: " "))` failed with status \(status)\(logTail(server.log))")
            }
            return seconds * 1000
        }

        // One of each first, unmeasured: the executable and the file in the page cache for both.
        _ = try timed(["pull", file, "--name", "warmup-pull"] + common)
        _ = try timed(["deploy", file, "--name", "warmup-deploy"] + client)
        _ = try timed(["delete", "warmup-deploy", "--server", server.url])
        _ = try timed(["rm", "warmup-pull", "warmup-deploy"] + common)
        var pull: [Double] = [], deploy: [Double] = []
        for run in 0..<runs {
            let order = run % 2 == 0 ? ["pull", "deploy"] : ["deploy", "pull"]
            for command in order {
                if command == "pull" {
                    pull.append(try timed(["pull", file, "--name", "p\(run)"] + common))
                } else {
                    deploy.append(try timed(["deploy", file, "--name", "d\(run)"] + client))
                }
            }
            _ = try timed(["delete", "d\(run)", "--server", server.url])
            _ = try timed(["rm", "p\(run)", "d\(run)"] + common)
            if !global.quiet {
                print(String(format: "run %d/%d: pull %.0f ms, deploy %.0f ms", run + 1, runs, pull[run], deploy[run]))
            }
        }
        let report = Report(
            file: file, bytes: bytes, pullMs: Sample(values: pull), deployMs: Sample(values: deploy),
            ratio: Sample(values: deploy).median / Sample(values: pull).median)
        print(
            "\n\(URL(fileURLWithPath: file).lastPathComponent) (\(formatBytes(bytes))), process start to exit, ms, median (min–max) of \(runs):"
        )
        print("  sllm pull:   \(report.pullMs.formatted(0))")
        print("  sllm deploy: \(report.deployMs.formatted(0))")
        print(String(format: "  ratio deploy / pull: %.2f (goal: 1)", report.ratio))
        try writeReport(report, to: json)
    }
}

/// Runs a program with its output dropped and returns its exit status.
func runQuietly(_ executable: String, _ arguments: [String]) throws -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    process.standardInput = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    return process.terminationStatus
}
