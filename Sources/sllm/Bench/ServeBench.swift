import ArgumentParser
import AsyncHTTPClient
import Checkpoint
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Store
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

struct ServeBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract:
            "Server figures against llama-server: cold starts (DRAM, SSD), warm overhead, many concurrent streams.",
        discussion: """
            Starts `sllm serve` (this executable) on a scratch data directory that links the model,
            and, when llama-server is on PATH or given (scripts/build-llama-cpp.sh builds it), the
            same measurements on llama-server in the same run:
              cold start  a scaled-to-zero deployment, 5-token prompt, 1 token; sllm from the DRAM
                          cache and from the SSD (DRAM and page cache evicted), llama-server in
                          router mode (--models-dir) after POST /models/unload. Breakdown from the
                          response's `timings` (queue, load, engine init, prefill).
              chat cold   a cold start of a chat completion: one short user message through the
                          model's chat template (about 37 tokens), 1 token; sllm from the DRAM
                          cache, llama-server in router mode after an unload, and llama-server
                          launched cold (process start to the reply, page cache warm).
              warm        the same request to a loaded model: round trip, and sllm's server
                          overhead (client time to first token minus the engine's prefill).
              while loading  cold starts from the SSD with a long prompt (--prompt-tokens, default
                          calibrated so that prefill ≈ load), on a server that starts the engine
                          while the weights arrive and on one with --no-serve-while-loading;
                          runs interleaved; ratio to the sequential server's load + prefill.
              streams     --clients streaming clients for --duration seconds (64 tokens each,
                          again and again, each on a fresh connection); every stream checked;
                          aggregate tokens/s against `llama-server -np 16` on the same threads.
            sllm runs with its defaults (queue limit 512, which holds the clients; the DRAM pool
            filled in the background up to the budget, which the bench waits for).
            Medians with (min–max).
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var bench: BenchOptions
    var runs: Int { bench.runs ?? 10 }
    var json: String? { bench.json }

    @Argument(help: "Model in the store.")
    var model: String = "smollm2-135m"

    @Option(help: "Compute threads for both servers (default: all cores).")
    var threads: Int = max(1, ProcessInfo.processInfo.activeProcessorCount)

    @Option(help: "Concurrent streaming clients.")
    var clients: Int = 100

    @Option(help: "Seconds of the concurrent-streams phase (0 skips it).")
    var duration: Int = 60

    @Option(help: "Sequences batched per instance (sllm) and parallel slots (llama-server -np).")
    var parallel: Int = 16

    @Option(
        help:
            "Prompt length of the serve-while-loading runs (default: calibrated so that prefill takes about as long as the load)."
    )
    var promptTokens: Int = 0

    @Flag(help: "Run only the serve-while-loading comparison.")
    var whileLoadingOnly = false

    @Option(help: "Path of llama-server (default: llama-server on PATH).")
    var llamaServer: String?

    @Option(help: "The GGUF file llama-server reads (default: the checkpoint's source when it is a local GGUF).")
    var gguf: String?

    static let prompt = "The capital of France is"
    /// The chat cold start's message: with SmolLM2's template (and its default system prompt)
    /// about 37 prompt tokens.
    static let chatMessage = "What is the capital of France?"

    struct Report: Encodable {
        var coldDRAM: ColdReport?
        var coldSSD: ColdReport?
        var coldLlamaRouter: Sample?
        /// The same with the page cache dropped before each request (root only), as sllm's SSD runs.
        var coldLlamaRouterDropped: Sample?
        /// sllm's background DRAM pool fill, as its log reports it (measured after it).
        var poolFill: String?
        var coldChatDRAM: ColdReport?
        var chatPromptTokens: Int?
        var coldChatLlamaRouter: Sample?
        /// llama-server started for the request: process start to the chat reply.
        var coldChatLlamaLaunch: Sample?
        var warm: Sample?
        var warmOverhead: Sample?
        var warmLlama: Sample?
        var streams: StreamReport?
        var streamsLlama: StreamReport?
        var whileLoading: WhileLoadingReport?
    }

    struct ColdReport: Encodable {
        var total: Sample
        var queue: Sample
        var load: Sample
        var engineInit: Sample
        var prefill: Sample
        var tiers: [String]
    }

    struct StreamReport: Encodable {
        var streams: Int
        var failed: Int
        var tokens: Int
        var tokensPerSecond: Double
        /// Distinct reasons of failed streams (a few).
        var failures: [String]
    }

    func validate() throws {
        if clients < 1 { throw ValidationError("--clients must be at least 1") }
        if threads < 1 || threads > 256 { throw ValidationError("--threads must be 1...256") }
        if !(0...32768).contains(promptTokens) { throw ValidationError("--prompt-tokens must be 0...32768") }
        try requireExecutable(llamaServer, option: "--llama-server")
    }

    func run() async throws {
        _ = global.bootstrap()
        let name = try await ensurePulled(model, global: global)
        let reader = try global.store.reader(for: name)
        // The main phase's server's data directory, and one for each serve-while-loading server
        // (each keeps its state apart: the main phase leaves its `bench` deployment behind).
        let scratch = try benchScratch(
            "serve", linking: name,
            into: [".", Self.whileLoadingHome(streaming: true), Self.whileLoadingHome(streaming: false)],
            global: global)
        let cache = "/dev/shm/sllm-bench-serve-\(getpid())"
        defer {
            try? FileManager.default.removeItem(atPath: scratch)
            try? FileManager.default.removeItem(atPath: cache)
        }
        let http = BenchHTTP()
        var report = Report()
        if whileLoadingOnly {
            report.whileLoading = try await measureWhileLoading(
                name: name, reader: reader, scratch: scratch, cache: cache, http: http)
            try http.shutdown()
            printWhileLoading(report.whileLoading!)
            try writeReport(report, to: json)
            return
        }

        let ours = try ServerProcess.start(
            executable: sllmExecutablePath(),
            arguments: [
                "serve", "--data-dir", scratch, "--port", "0", "--cache-dir", cache, "--default-model", "", "--threads",
                String(threads),
                "--memory-budget", "16GiB",  // the default queue (512) holds the streaming clients
            ], log: scratch + "/serve.log", banner: "serving on")
        defer { ours.stop() }
        let base = ours.url
        print("sllm serve at \(base), \(threads) thread(s); model \(name)")
        // A server in its steady state: the background pool fill (on by default) is done.
        report.poolFill = try waitForPoolFill(ours)
        print("its DRAM pool fill: \(report.poolFill ?? "")")
        _ = try await http.json(
            .POST, base + "/admin/deployments",
            [
                "model": name.rawValue, "name": "bench", "target_concurrency": parallel, "keep_alive": "0",
            ])
        let request: [String: Any] = ["model": "bench", "prompt": Self.prompt, "max_tokens": 1, "temperature": 0]
        let chat: [String: Any] = [
            "model": "bench", "messages": [["role": "user", "content": Self.chatMessage]], "max_tokens": 1,
            "temperature": 0,
        ]

        // Cold starts: each request finds the deployment scaled to zero (keep_alive 0 unloads it after).
        func coldRun(evict: Bool, chat: Bool = false) async throws -> (Double, [String: Any]) {
            try await coldRequest(
                http, base: base, path: chat ? "/v1/chat/completions" : "/v1/completions",
                body: chat ? chatRequest : request, evicting: evict ? (name, cache, reader) : nil)
        }
        let chatRequest = chat
        _ = try await coldRun(evict: false)  // fills the DRAM cache
        report.coldDRAM = try await coldSeries { try await coldRun(evict: false) }
        report.coldSSD = try await coldSeries { try await coldRun(evict: true) }
        var chatTokens: Int?
        report.coldChatDRAM = try await coldSeries {
            let run = try await coldRun(evict: false, chat: true)
            chatTokens = run.1["prompt_tokens"] as? Int
            return run
        }
        report.chatPromptTokens = chatTokens

        // Warm: the instance stays.
        _ = try await http.json(.PATCH, base + "/admin/deployments/bench", ["keep_alive": -1])
        _ = try await http.json(.POST, base + "/v1/completions", request)
        var warm: [Double] = []
        var overhead: [Double] = []
        for _ in 0..<max(runs, 20) {
            let start = ContinuousClock.now
            let reply = try await http.json(.POST, base + "/v1/completions", request)
            let elapsed = seconds(since: start)
            warm.append(elapsed * 1000)
            overhead.append(elapsed * 1000 - (((reply["timings"] as? [String: Any])?["prefill_ms"] as? Double) ?? 0))
        }
        report.warm = Sample(values: warm)
        report.warmOverhead = Sample(values: overhead)

        if duration > 0 {
            report.streams = try await streams(http, base: base, model: "bench")
        }
        ours.stop()
        report.whileLoading = try await measureWhileLoading(
            name: name, reader: reader, scratch: scratch, cache: cache, http: http)

        // llama.cpp, same machine, same threads.
        let peer = llamaServer ?? findOnPath("llama-server")
        var ggufPath =
            gguf
            ?? (reader.index.source.hasSuffix(".gguf") && FileSystem.exists(reader.index.source)
                ? reader.index.source : nil)
        if ggufPath == nil && model == ModelSource.defaultModel.name {
            ggufPath = try await SmolLM2File.path(
                in: bench.directory(or: global.root + "/bench"), logger: Logger(label: "sllm.bench"))
        }
        if let peer, let ggufPath {
            try await measureLlama(peer: peer, gguf: ggufPath, scratch: scratch, http: http, into: &report)
        } else {
            print(
                "llama-server not found or no GGUF (scripts/build-llama-cpp.sh builds it; --gguf names the file); measured sllm only"
            )
        }
        try http.shutdown()
        printReport(report)
        if let whileLoading = report.whileLoading { printWhileLoading(whileLoading) }
        try writeReport(report, to: json)
    }

    private func coldSeries(_ once: () async throws -> (Double, [String: Any])) async throws -> ColdReport {
        var total: [Double] = [], queue: [Double] = [], load: [Double] = [], engineInit: [Double] = [],
            prefill: [Double] = []
        var tiers: [String] = []
        for _ in 0..<runs {
            let (seconds, timings) = try await once()
            guard timings["cold_start"] as? Bool == true else {
                throw CommandFailure("a cold-start run found a running instance")
            }
            total.append(seconds * 1000)
            queue.append(timings["queue_ms"] as? Double ?? 0)
            load.append(timings["load_ms"] as? Double ?? 0)
            engineInit.append(timings["init_ms"] as? Double ?? 0)
            prefill.append(timings["prefill_ms"] as? Double ?? 0)
            tiers.append(timings["tier"] as? String ?? "?")
        }
        return ColdReport(
            total: Sample(values: total), queue: Sample(values: queue), load: Sample(values: load),
            engineInit: Sample(values: engineInit), prefill: Sample(values: prefill), tiers: Array(Set(tiers)).sorted())
    }

    /// Waits until `server` logs that its DRAM pool is filled; returns that line's figures.
    func waitForPoolFill(_ server: ServerProcess) throws -> String {
        let deadline = ContinuousClock.now + .seconds(600)
        while ContinuousClock.now < deadline {
            let text = (try? String(contentsOfFile: server.log, encoding: .utf8)) ?? ""
            if let line = text.split(separator: "\n").first(where: { $0.contains("DRAM pool filled: ") }),
                let range = line.range(of: "DRAM pool filled: ")
            {
                return String(line[range.upperBound...])
            }
            guard server.process.isRunning else { throw CommandFailure("sllm serve exited\(logTail(server.log))") }
            usleep(100_000)
        }
        throw CommandFailure("sllm serve did not fill its DRAM pool within 10 minutes\(logTail(server.log))")
    }

    func waitForNoInstance(_ http: BenchHTTP, _ base: String) async throws {
        for _ in 0..<1000 {
            if try await http.array(.GET, base + "/admin/ps").isEmpty { return }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw CommandFailure("the bench deployment did not scale to zero")
    }

    /// One cold start: waits until the server at `base` has no instance, drops the model from
    /// its DRAM cache and the page cache when asked, and sends `body` to `path`. Returns the
    /// client's seconds and the reply's `timings`, with its `prompt_tokens` and first choice's
    /// `text` added.
    func coldRequest(
        _ http: BenchHTTP, base: String, path: String, body: [String: Any],
        evicting: (name: ModelName, cache: String, reader: CheckpointReader)?
    ) async throws -> (Double, [String: Any]) {
        try await waitForNoInstance(http, base)
        if let evicting {
            try evictFromDRAM(name: evicting.name.rawValue, cache: evicting.cache, reader: evicting.reader)
        }
        let start = ContinuousClock.now
        let reply = try await http.json(.POST, base + path, body)
        let elapsed = seconds(since: start)
        var timings = reply["timings"] as? [String: Any] ?? [:]
        timings["prompt_tokens"] = (reply["usage"] as? [String: Any])?["prompt_tokens"]
        let choice = (reply["choices"] as? [[String: Any]])?.first
        timings["text"] = (choice?["text"] ?? (choice?["message"] as? [String: Any])?["content"]) as? String ?? ""
        return (elapsed, timings)
    }

    /// Drops the checkpoint from the DRAM cache and its files from the page cache, so the next
    /// load reads the SSD.
    func evictFromDRAM(name: String, cache: String, reader: CheckpointReader) throws {
        let dram = try DRAMCache(directory: cache, budgetBytes: 1 << 30)
        _ = try dram.evict(name: name)
        for partition in reader.index.partitions {
            let descriptor = open(reader.directory + "/" + partition.file, O_RDONLY)
            if descriptor >= 0 {
                posix_fadvise(descriptor, 0, 0, Int32(POSIX_FADV_DONTNEED))
                close(descriptor)
            }
        }
    }

    // MARK: - Concurrent streams

    private func streams(_ http: BenchHTTP, base: String, model: String) async throws -> StreamReport {
        print("\(clients) streaming clients for \(duration) s against \(base) ...")
        let deadline = ContinuousClock.now + .seconds(duration)
        let start = ContinuousClock.now
        let results = try await withThrowingTaskGroup(of: (Int, Int, Int, Set<String>).self) { group in
            for _ in 0..<clients {
                group.addTask {
                    var streams = 0, failed = 0, tokens = 0
                    var reasons = Set<String>()
                    while ContinuousClock.now < deadline {
                        let outcome = await http.stream(
                            base + "/v1/completions",
                            [
                                "model": model, "prompt": "Once upon a time", "max_tokens": 64, "ignore_eos": true,
                                "temperature": 0.8, "stream": true, "stream_options": ["include_usage": true],
                            ])
                        streams += 1
                        switch outcome {
                        case .success(let count): tokens += count
                        case .failure(let failure):
                            failed += 1
                            reasons.insert(failure.reason)
                        }
                    }
                    return (streams, failed, tokens, reasons)
                }
            }
            return try await group.reduce(into: (0, 0, 0, Set<String>())) {
                $0 = ($0.0 + $1.0, $0.1 + $1.1, $0.2 + $1.2, $0.3.union($1.3))
            }
        }
        let elapsed = seconds(since: start)
        return StreamReport(
            streams: results.0, failed: results.1, tokens: results.2, tokensPerSecond: Double(results.2) / elapsed,
            failures: Array(results.3.sorted().prefix(5)))
    }

    // MARK: - llama.cpp

    private func measureLlama(peer: String, gguf: String, scratch: String, http: BenchHTTP, into report: inout Report)
        async throws
    {
        let modelsDirectory = scratch + "/llama-models"
        try FileManager.default.createDirectory(atPath: modelsDirectory, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(
            atPath: modelsDirectory + "/" + URL(fileURLWithPath: gguf).lastPathComponent, withDestinationPath: gguf)

        // Router mode: llama.cpp's own scale-to-zero.
        let router = try ServerProcess.start(
            executable: peer,
            arguments: [
                "--models-dir", modelsDirectory, "--host", "127.0.0.1", "--port", String(freePort()), "-t",
                String(threads), "-c", "2048",
            ], log: scratch + "/llama-router.log", banner: nil)
        defer { router.stop() }
        try await waitForHealth(http, router)
        let listed = try await http.json(.GET, router.url + "/models")["data"] as? [[String: Any]] ?? []
        guard let id = listed.first?["id"] as? String else {
            throw CommandFailure("llama-server router lists no model")
        }
        let request: [String: Any] = ["model": id, "prompt": Self.prompt, "max_tokens": 1, "temperature": 0]
        _ = try await http.json(.POST, router.url + "/v1/completions", request)
        func chatBody(_ model: String?) -> [String: Any] {
            var body: [String: Any] = [
                "messages": [["role": "user", "content": Self.chatMessage]], "max_tokens": 1, "temperature": 0,
            ]
            body["model"] = model
            return body
        }
        func coldSeries(dropCaches: Bool, path: String = "/v1/completions", body: [String: Any]? = nil) async throws
            -> Sample
        {
            var cold: [Double] = []
            for _ in 0..<runs {
                _ = try await http.json(.POST, router.url + "/models/unload", ["model": id])
                for _ in 0..<2000 {
                    let models = try await http.json(.GET, router.url + "/models")["data"] as? [[String: Any]] ?? []
                    let status =
                        (models.first { $0["id"] as? String == id }?["status"] as? [String: Any])?["value"] as? String
                    if status == "unloaded" { break }
                    try await Task.sleep(for: .milliseconds(5))
                }
                if dropCaches { try dropPageCache() }
                let start = ContinuousClock.now
                _ = try await http.json(.POST, router.url + path, body ?? request)
                cold.append(seconds(since: start) * 1000)
            }
            return Sample(values: cold)
        }
        report.coldLlamaRouter = try await coldSeries(dropCaches: false)
        if FileManager.default.isWritableFile(atPath: "/proc/sys/vm/drop_caches") {
            report.coldLlamaRouterDropped = try await coldSeries(dropCaches: true)
        }
        report.coldChatLlamaRouter = try await coldSeries(
            dropCaches: false, path: "/v1/chat/completions", body: chatBody(id))
        router.stop()

        // llama-server launched for the request: process start to the chat reply.
        var launches: [Double] = []
        for run in 0..<runs {
            let port = freePort()
            let start = ContinuousClock.now
            let launched = try ServerProcess.start(
                executable: peer,
                arguments: [
                    "-m", gguf, "--host", "127.0.0.1", "--port", String(port), "-t", String(threads), "-c", "2048",
                ], log: scratch + "/llama-launch-\(run).log", banner: nil)
            defer { launched.stop() }
            try await waitForHealth(http, launched, interval: .milliseconds(2))
            _ = try await http.json(.POST, launched.url + "/v1/chat/completions", chatBody(nil))
            launches.append(seconds(since: start) * 1000)
            launched.stop()
        }
        report.coldChatLlamaLaunch = Sample(values: launches)

        // A loaded llama-server: warm requests and concurrent streams, -np slots.
        let single = try ServerProcess.start(
            executable: peer,
            arguments: [
                "-m", gguf, "--host", "127.0.0.1", "--port", String(freePort()), "-t", String(threads),
                "-np", String(parallel), "-c", String(parallel * 1024),
            ], log: scratch + "/llama-server.log", banner: nil)
        defer { single.stop() }
        try await waitForHealth(http, single)
        let plain: [String: Any] = ["prompt": Self.prompt, "max_tokens": 1, "temperature": 0]
        _ = try await http.json(.POST, single.url + "/v1/completions", plain)
        var warm: [Double] = []
        for _ in 0..<max(runs, 20) {
            let start = ContinuousClock.now
            _ = try await http.json(.POST, single.url + "/v1/completions", plain)
            warm.append(seconds(since: start) * 1000)
        }
        report.warmLlama = Sample(values: warm)
        if duration > 0 {
            report.streamsLlama = try await streams(http, base: single.url, model: id)
        }
    }

    /// Writes back and drops the kernel's page cache (needs root).
    private func dropPageCache() throws {
        sync()
        try Data("3\n".utf8).write(to: URL(fileURLWithPath: "/proc/sys/vm/drop_caches"))
    }

    /// Waits until `server` answers `/health`; fails at once when it exits first.
    private func waitForHealth(_ http: BenchHTTP, _ server: ServerProcess, interval: Duration = .milliseconds(50))
        async throws
    {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            guard server.process.isRunning else {
                throw CommandFailure(
                    "\(server.process.executableURL?.path ?? "llama-server") exited with status \(server.process.terminationStatus) before answering /health\(logTail(server.log))"
                )
            }
            if (try? await http.json(.GET, server.url + "/health")) != nil { return }
            try await Task.sleep(for: interval)
        }
        throw CommandFailure("llama-server at \(server.url) did not answer /health within 30 s\(logTail(server.log))")
    }

    // MARK: - Output

    private func printReport(_ report: Report) {
        func ms(_ sample: Sample?) -> String { sample.map { $0.formatted(1) + " ms" } ?? "-" }
        print("\nCold start, request to a 1-token completion of a 5-token prompt (ms, median (min–max) of \(runs)):")
        for (label, cold) in [("sllm, DRAM tier", report.coldDRAM), ("sllm, SSD tier", report.coldSSD)] {
            guard let cold else { continue }
            print(
                "  \(label): \(ms(cold.total))  [queue \(cold.queue.formatted(2)), load \(cold.load.formatted(2)), init \(cold.engineInit.formatted(2)), prefill \(cold.prefill.formatted(2))] tiers \(cold.tiers.joined(separator: ","))"
            )
        }
        if let router = report.coldLlamaRouter {
            print("  llama-server router (unload, then request): \(ms(router))")
            if let dram = report.coldDRAM {
                print(
                    String(
                        format: "  ratio DRAM: %.3f of llama.cpp (%.1fx faster; goal <= 0.1)",
                        dram.total.median / router.median, router.median / dram.total.median))
            }
            if let ssd = report.coldSSD {
                print(
                    String(
                        format: "  ratio SSD:  %.3f of llama.cpp (%.1fx faster; goal <= 0.333)",
                        ssd.total.median / router.median, router.median / ssd.total.median))
            }
            if let dropped = report.coldLlamaRouterDropped, let ssd = report.coldSSD {
                print("  llama-server router, page cache dropped before each request: \(ms(dropped))")
                print(
                    String(
                        format: "  ratio SSD vs that (both read the disk): %.3f (%.1fx faster)",
                        ssd.total.median / dropped.median, dropped.median / ssd.total.median))
            }
        }
        if let chat = report.coldChatDRAM {
            print(
                "\nCold start of a chat completion (\(report.chatPromptTokens.map(String.init) ?? "?") prompt tokens through the chat template, 1 token; ms):"
            )
            print(
                "  sllm, DRAM tier: \(ms(chat.total))  [queue \(chat.queue.formatted(2)), load \(chat.load.formatted(2)), init \(chat.engineInit.formatted(2)), prefill \(chat.prefill.formatted(2))]"
            )
            if let router = report.coldChatLlamaRouter {
                print(
                    "  llama-server router (unload, then request): \(ms(router))"
                        + String(
                            format: "; ratio %.3f (%.1fx faster)", chat.total.median / router.median,
                            router.median / chat.total.median))
            }
            if let launch = report.coldChatLlamaLaunch {
                print(
                    "  llama-server launched for the request (start to reply): \(ms(launch))"
                        + String(
                            format: "; ratio %.3f (%.1fx faster)", chat.total.median / launch.median,
                            launch.median / chat.total.median))
            }
        }
        print("\nWarm, same request to a loaded model:")
        print(
            "  sllm round trip: \(ms(report.warm)); server overhead (round trip - engine prefill): \(ms(report.warmOverhead)) (goal p50 < 1 ms)"
        )
        if let llama = report.warmLlama {
            print("  llama-server round trip: \(ms(llama))")
            if let warm = report.warm {
                print(String(format: "  ratio: sllm %.2fx llama-server's time (goal <= 1)", warm.median / llama.median))
            }
        }
        for (label, streams) in [("sllm", report.streams), ("llama-server -np \(parallel)", report.streamsLlama)] {
            guard let streams else { continue }
            print(
                String(
                    format: "\n%@: %d streams by %d clients in %d s, %d failed or malformed, %.1f tokens/s aggregate",
                    label, streams.streams, clients, duration, streams.failed, streams.tokensPerSecond))
            for reason in streams.failures { print("  failed: \(reason)") }
        }
        if let ours = report.streams, let theirs = report.streamsLlama, theirs.tokensPerSecond > 0 {
            print(
                String(
                    format: "ratio: sllm %.2fx llama-server's aggregate tokens/s",
                    ours.tokensPerSecond / theirs.tokensPerSecond))
        }
    }
}
