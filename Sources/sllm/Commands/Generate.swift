import ArgumentParser
import Engine
import Foundation
import Logging
import Store
import Tokenizers

/// Sampling and length flags shared by `generate` and `chat` (llama.cpp's names where it has them).
struct SamplingOptions: ParsableArguments {
    /// What `-n` defaults to: a generation that never reaches its end-of-generation token (a
    /// repetition loop) stops here instead of filling the whole context.
    static let defaultMaxTokens = 256

    @Option(
        name: [.customShort("n"), .customLong("max-tokens")],
        help: "Most tokens to generate (default: 256; -1: until the context is full).")
    var maxTokens: Int?

    @Option(help: "Temperature; 0 is greedy.")
    var temperature: Float = 0.8

    @Option(name: .customLong("top-k"), help: "Keep the k most likely tokens (0: off).")
    var topK: Int = 40

    @Option(name: .customLong("top-p"), help: "Keep the smallest set of tokens whose probability reaches p (1: off).")
    var topP: Float = 0.95

    @Option(name: .customLong("min-p"), help: "Drop tokens less likely than p times the most likely (0: off).")
    var minP: Float = 0.05

    @Option(name: .customLong("repeat-penalty"), help: "Penalise recently used tokens (1: off).")
    var repeatPenalty: Float = 1

    @Option(name: .customLong("frequency-penalty"), help: "Subtract per occurrence in the recent window.")
    var frequencyPenalty: Float = 0

    @Option(name: .customLong("presence-penalty"), help: "Subtract once if present in the recent window.")
    var presencePenalty: Float = 0

    @Option(name: .customLong("repeat-last-n"), help: "How many recent tokens the penalties consider.")
    var repeatLastN: Int = 64

    @Option(help: "Random seed (default: random).")
    var seed: UInt64?

    @Option(help: "Stop before this string (repeatable; \\n, \\t, \\r and \\\\ are escapes, as in llama.cpp).")
    var stop: [String] = []

    @Flag(help: "Do not stop at end-of-generation tokens.")
    var ignoreEOS = false

    func validate() throws {
        if let maxTokens, maxTokens < -1 {
            throw ValidationError("--max-tokens must be -1 (until the context is full), 0 or more")
        }
        if temperature < 0 { throw ValidationError("--temperature must be 0 or more") }
        if topK < 0 { throw ValidationError("--top-k must be 0 or more") }
        if !(0...1).contains(topP) { throw ValidationError("--top-p must be within 0...1") }
        if !(0...1).contains(minP) { throw ValidationError("--min-p must be within 0...1") }
        if repeatPenalty <= 0 { throw ValidationError("--repeat-penalty must be positive") }
        if repeatLastN < 0 { throw ValidationError("--repeat-last-n must be 0 or more") }
    }

    var parameters: GenerationParameters {
        var sampling = SamplingParameters()
        sampling.temperature = temperature
        sampling.topK = topK
        sampling.topP = topP
        sampling.minP = minP
        sampling.repetitionPenalty = repeatPenalty
        sampling.frequencyPenalty = frequencyPenalty
        sampling.presencePenalty = presencePenalty
        sampling.penaltyWindow = repeatLastN
        sampling.seed = seed ?? UInt64.random(in: 0...UInt64.max)
        var parameters = GenerationParameters()
        parameters.sampling = sampling
        // -1: until the context is full (filled in by the caller, which knows the context).
        parameters.maxTokens = maxTokens == -1 ? nil : (maxTokens ?? Self.defaultMaxTokens)
        parameters.stop = stop.map(unescape)
        parameters.stopAtEndOfGeneration = !ignoreEOS
        return parameters
    }
}

/// Unescapes `\n`, `\t`, `\r`, `\\`, `\"` and `\'` as llama.cpp's command line does, so
/// `--stop "\n"` stops at a newline (a shell passes the two characters).
func unescape(_ text: String) -> String {
    var result = ""
    var escaping = false
    for character in text {
        if escaping {
            switch character {
            case "n": result.append("\n")
            case "t": result.append("\t")
            case "r": result.append("\r")
            case "\\", "\"", "'": result.append(character)
            default: result += "\\" + String(character)
            }
            escaping = false
        } else if character == "\\" {
            escaping = true
        } else {
            result.append(character)
        }
    }
    if escaping { result.append("\\") }
    return result
}

/// Engine flags shared by `generate`, `chat` and the benchmarks.
struct EngineOptions: ParsableArguments {
    @Option(name: [.customShort("t"), .customLong("threads")], help: "Compute threads (default: all cores).")
    var threads: Int?

    @Option(
        name: [.customShort("c"), .customLong("context")],
        help: "Context length per sequence (default: the model's, at most 8192).")
    var context: Int?

    func validate() throws {
        if let threads, threads < 1 || threads > 256 { throw ValidationError("--threads must be 1...256") }
        if let context, context < 1 { throw ValidationError("--context must be positive") }
    }

    var options: Engine.Options {
        var options = Engine.Options()
        if let threads { options.threads = threads }
        options.contextLength = context ?? 8192
        return options
    }
}

/// A built-in alias that is not in the store yet (the default model) is pulled, with progress,
/// as `ollama run` does; other names are only validated.
func ensurePulled(_ name: String, global: GlobalOptions) async throws -> ModelName {
    let modelName = try ModelName(name)
    if !global.store.contains(modelName), ModelSource.aliases.contains(where: { $0.name == name }) {
        if !global.quiet { FileHandle.standardError.write(Data("pulling \(name) (first use)\n".utf8)) }
        let bar = global.progressBar()
        let puller = Puller(store: global.store, logger: Logger(label: "sllm.pull"))
        _ = try await puller.pull(name, as: modelName, force: false, progress: bar.handler)
        bar.finish()
    }
    return modelName
}

/// Loads `name` through the tiered loader (pulling a missing alias first) and starts an engine on it.
func startEngine(_ name: String, global: GlobalOptions, options: EngineOptions) async throws -> Engine {
    let modelName = try await ensurePulled(name, global: global)
    let loader = try LoaderOptions.parse([]).makeLoader(store: global.store)
    let model = try await loader.load(modelName)
    do {
        return try Engine(model: model, options: options.options)
    } catch let error as EngineError {
        throw CommandFailure("\(name): \(error.description)")
    }
}

struct Generate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Complete a raw prompt (no chat template), streaming the text to the terminal.",
        discussion: """
            Examples:
              sllm generate smollm2-135m "The capital of France is" --temperature 0 -n 32
              sllm generate smollm2-135m "Once upon a time" --seed 42 --top-p 0.9
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var sampling: SamplingOptions
    @OptionGroup var engineOptions: EngineOptions

    @Argument(help: "Model name in the store.")
    var model: String

    @Argument(help: "The prompt.")
    var prompt: String

    @Flag(help: "Print the generated token ids and timings as JSON instead of streaming text.")
    var json = false

    @Flag(help: "Print timings to stderr after the text.")
    var timings = false

    func run() async throws {
        _ = global.bootstrap()
        let engine = try await startEngine(model, global: global, options: engineOptions)
        let ids = engine.tokenizer.encode(prompt)
        guard !ids.isEmpty else { throw CommandFailure("the prompt is empty (and the model adds no BOS token)") }
        var parameters = sampling.parameters
        if parameters.maxTokens == nil { parameters.maxTokens = engine.contextLength - ids.count }
        let result: GenerationResult
        do {
            result = try engine.generate(prompt: ids, parameters: parameters) { token in
                if !json {
                    FileHandle.standardOutput.write(Data(token.text.utf8))
                }
                return true
            }
        } catch {
            throw CommandFailure(error.description)
        }
        if json {
            struct Timings: Encodable {
                var promptTokens: Int
                var promptMs: Double
                var generatedTokens: Int
                var generationMs: Double
                var msPerToken: Double
            }
            struct Output: Encodable {
                var promptIds: [Int]
                var outputIds: [Int]
                var text: String
                var finishReason: String
                var timings: Timings
            }
            let t = result.timings
            let timings = Timings(
                promptTokens: t.prefillTokens, promptMs: t.prefill * 1000, generatedTokens: t.decodeTokens,
                generationMs: t.decode * 1000, msPerToken: t.millisecondsPerToken)
            print(
                try ModelSummary.json(
                    Output(
                        promptIds: ids, outputIds: result.tokens, text: result.text,
                        finishReason: result.finishReason.rawValue, timings: timings)))
        } else {
            say()
        }
        if timings {
            let t = result.timings
            // The first token comes out of the prefill: with no decode step there is no rate.
            let rate =
                t.decodeTokens > 0
                ? String(
                    format: ", %.2f ms/token (%.1f tok/s)", t.millisecondsPerToken,
                    1000 / max(t.millisecondsPerToken, 1e-9)) : ""
            FileHandle.standardError.write(
                Data(
                    String(
                        format: "prompt: %d tokens in %.1f ms (%.1f tok/s); generated: %d tokens%@; finish: %@\n",
                        t.prefillTokens, t.prefill * 1000, Double(t.prefillTokens) / max(t.prefill, 1e-9),
                        result.tokens.count, rate, result.finishReason.rawValue
                    ).utf8))
        }
    }
}
