import ArgumentParser
import Checkpoint
import Foundation
import Scheduling
import Simulation
import Store

/// The options every `sllm bench` subcommand takes.
struct BenchOptions: ParsableArguments {
    @Option(help: "Repetitions (each benchmark has its default; median and spread are reported).")
    var runs: Int?

    @Option(
        help:
            "Work directory: downloads, generated models, scratch files (default: DATA_DIR/bench; `bench populate`: /dev/shm)."
    )
    var dir: String?

    @Option(help: "Also write the results as JSON to this file.")
    var json: String?

    func validate() throws {
        if let runs, !(1...1000).contains(runs) { throw ValidationError("--runs must be 1...1000") }
    }

    /// `--dir` made absolute, else `fallback`.
    func directory(or fallback: String) -> String { dir.map(absolutePath) ?? fallback }
}

/// Median and spread of repeated measurements.
struct Sample: Encodable {
    var values: [Double]
    var median: Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return .nan }
        return sorted.count % 2 == 1
            ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }
    var minimum: Double { values.min() ?? .nan }

    /// The nearest-rank percentile (`fraction` 0...1).
    func percentile(_ fraction: Double) -> Double { Scheduling.percentile(values, fraction) }
    var maximum: Double { values.max() ?? .nan }

    /// `1.23 (1.10–1.31)`.
    func formatted(_ digits: Int = 2) -> String {
        let f = "%.\(digits)f"
        return String(format: "\(f) (\(f)–\(f))", median, minimum, maximum)
    }

    enum CodingKeys: String, CodingKey { case values, median, minimum, maximum }
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(values, forKey: .values)
        try container.encode(median, forKey: .median)
        try container.encode(minimum, forKey: .minimum)
        try container.encode(maximum, forKey: .maximum)
    }
}

/// Seconds taken by `work`.
func measure(_ work: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try work()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

/// Runs fio for sequential O_DIRECT reads and returns GB/s (1e9 bytes per second).
struct Fio {
    let executable: String

    /// fio on PATH, if installed (`scripts/install-bench-tools.sh` installs it).
    static func find() -> Fio? { findOnPath("fio").map(Fio.init(executable:)) }

    /// One run over `file`, `engine` psync or libaio. With `readOnly` fio may not write (the file
    /// is someone's data and must already hold `size` bytes); without, fio lays out its own file.
    func sequentialRead(file: String, size: Int, blockSize: String, engine: String, depth: Int, readOnly: Bool = true)
        throws -> Double
    {
        if readOnly {
            guard let actual = FileSystem.fileSize(file), actual >= Int64(size) else {
                throw CommandFailure("fio would have to extend \(file) to \(size) bytes; refusing to touch it")
            }
        }
        let (status, data) = try runCapturingOutput(
            executable,
            [
                "--name=seqread", "--filename=\(file)", "--rw=read", "--direct=1", "--bs=\(blockSize)",
                "--ioengine=\(engine)", "--iodepth=\(depth)", "--size=\(size)", "--numjobs=1", "--output-format=json",
            ] + (readOnly ? ["--readonly"] : []))
        guard status == 0,
            let json = try JSONSerialization.jsonObject(with: data) as? [String: Any],
            let jobs = json["jobs"] as? [[String: Any]], let read = jobs.first?["read"] as? [String: Any],
            let bandwidth = (read["bw_bytes"] as? NSNumber)?.doubleValue
        else {
            throw CommandFailure("fio failed (status \(status)) on \(file)")
        }
        return bandwidth / 1e9
    }
}

/// Runs a program and returns its exit status and standard output (standard error is dropped).
func runCapturingOutput(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: Data) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = FileHandle.nullDevice
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, data)
}

/// The synthetic Llama safetensors model of about `bytes` in `directory`, generated once.
func syntheticModel(bytes: Int, in directory: String, quiet: Bool) throws -> String {
    let path = directory + "/synthetic-\(bytes >> 20)MiB"
    if !FileSystem.exists(path + "/model.safetensors") {
        if !quiet { print("generating a \(formatBytes(Int64(bytes))) synthetic model in \(path)") }
        FileSystem.removeTree(path)
        FileSystem.removeTree(path + ".tmp")
        try SyntheticModel.writeHuggingFaceDirectory(path + ".tmp", shape: .sized(bytes))
        try FileSystem.rename(path + ".tmp", to: path)
    }
    return path
}

/// Writes `report` as JSON to `path` when one is given.
func writeReport(_ report: some Encodable, to path: String?) throws {
    guard let path else { return }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try encoder.encode(report).write(to: URL(fileURLWithPath: absolutePath(path)))
}
