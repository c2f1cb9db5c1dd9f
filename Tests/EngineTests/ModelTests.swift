import Checkpoint
import Foundation
import Store
import TestSupport
import Testing
import Tokenizers

@testable import Engine

/// The real SmolLM2 model in a temporary store (linked to the shared converted checkpoint),
/// loaded once for all engine tests.
enum SharedModel {
    /// Removed when the test process exits.
    static let directory: TemporaryDirectory = {
        let directory = try! TemporaryDirectory("engine-model")
        atexit { SharedModel.directory.remove() }
        return directory
    }()

    static let loaded = Task { () throws -> LoadedModel in
        let store = ModelStore(root: directory.file("home"))
        try await RealModel.link(into: store.root, as: "smol")
        let loader = ModelLoader(
            store: store,
            cache: try DRAMCache(directory: directory.file("cache"), budgetBytes: 1 << 30, slabBytes: 32 << 20),
            configuration: .init(threads: 2))
        return try await loader.load(try ModelName("smol"))
    }

    static let engine = Task { () throws -> Engine in
        var options = Engine.Options()
        options.threads = 2
        options.contextLength = 512
        return try Engine(model: try await loaded.value, options: options)
    }
}

struct GreedyFixture: Decodable {
    var prompt: String
    var prompt_ids: [Int]
    var output_ids: [Int]
    var output_text: String
}

struct ChatFixture: Decodable {
    struct Message: Decodable {
        var role: String
        var content: String
    }
    var messages: [Message]
    var output_text: String
    var templated_prompt: String
}

func fixture<T: Decodable>(_ name: String, as type: T.Type) throws -> T {
    let url = try #require(Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Resources"))
    return try JSONDecoder().decode(T.self, from: Data(contentsOf: url))
}

/// Greedy tokens from `prompt`, one step at a time.
func greedy(_ engine: Engine, _ prompt: [Int], count: Int) throws -> [Int] {
    let sequence = try engine.makeSequence(tokens: prompt)
    return try (0..<count).map { _ in try engine.step([sequence])[0].token }
}

@Suite(.serialized) struct ModelTests {
    @Test(arguments: ["greedy-01", "greedy-02", "greedy-03"])
    func greedyOutputMatchesLlamaCpp(name: String) async throws {
        let engine = try await SharedModel.engine.value
        let expected = try fixture(name, as: GreedyFixture.self)
        let prompt = engine.tokenizer.encode(expected.prompt)
        #expect(prompt == expected.prompt_ids)
        let tokens = try greedy(engine, prompt, count: expected.output_ids.count)
        #expect(tokens == expected.output_ids)
        #expect(engine.tokenizer.decode(tokens) == expected.output_text)
    }

    @Test func chatAnswerMatchesLlamaCpp() async throws {
        let engine = try await SharedModel.engine.value
        let expected = try fixture("chat-01", as: ChatFixture.self)
        var parameters = GenerationParameters()
        parameters.sampling = .greedy
        parameters.maxTokens = 32
        // The model's own template renders the conversation exactly as llama.cpp did.
        let rendered = try engine.tokenizer.renderChat(
            expected.messages.map { ChatMessage(role: $0.role, content: $0.content) })
        #expect(rendered == expected.templated_prompt)
        let result = try engine.generate(prompt: engine.tokenizer.encodeChat(rendered), parameters: parameters)
        #expect(result.text == expected.output_text)
        #expect(result.finishReason == .length)
        #expect(result.promptTokens == 37)
    }

    @Test func batchedDecodingGivesTheTokensOfSingleDecoding() async throws {
        let engine = try await SharedModel.engine.value
        let prompts = try ["greedy-01", "greedy-02", "greedy-03"].map {
            try fixture($0, as: GreedyFixture.self).prompt_ids
        }
        let single = try prompts.map { try greedy(engine, $0, count: 12) }
        // All three in one batch, the third joining four steps late and the first leaving early.
        let sequences = try prompts.map { try engine.makeSequence(tokens: $0) }
        var outputs: [[Int]] = [[], [], []]
        for step in 0..<16 {
            let active = (0..<3).filter { i in (i != 2 || step >= 4) && outputs[i].count < 12 }
            if active.isEmpty { break }
            let choices = try engine.step(active.map { sequences[$0] })
            for (i, choice) in zip(active, choices) { outputs[i].append(choice.token) }
        }
        #expect(outputs == single)
    }

    /// Stronger than equal tokens: a sequence's logits are the same bits whatever shares its
    /// passes (another sequence decoding, prompts prefilled in the same pass, sequences joining
    /// and leaving), on two threads, so a server's greedy answers do not depend on its load.
    @Test func logitsAreTheSameBitsWhateverTheBatch() async throws {
        let engine = try await SharedModel.engine.value
        let prompts = try ["greedy-01", "greedy-02", "greedy-03"].map {
            try fixture($0, as: GreedyFixture.self).prompt_ids
        }
        /// Ten steps of the first prompt beside the companions each step adds (those that reach
        /// 40 tokens leave); its logits after each step.
        func run(_ companions: (Int) -> [[Int]]) throws -> [[Float]] {
            let watched = try engine.makeSequence(tokens: prompts[0])
            var others: [EngineSequence] = []
            var logits: [[Float]] = []
            for step in 0..<10 {
                for tokens in companions(step) { others.append(try engine.makeSequence(tokens: tokens)) }
                _ = try engine.step(step % 2 == 0 ? [watched] + others : others + [watched])
                logits.append(watched.logits!)
                others.removeAll { $0.tokens.count > 40 }
            }
            return logits
        }
        let alone = try run { _ in [] }
        let variants = [
            ("one decoding beside it", try run { $0 == 0 ? [prompts[1]] : [] }),
            ("prompts prefilled in its passes", try run { $0 % 3 == 1 ? [prompts[2]] : [] }),
            ("two joining, one leaving", try run { $0 == 2 ? [prompts[1], Array(prompts[2].prefix(30))] : [] }),
        ]
        for (name, logits) in variants {
            for step in 0..<10 {
                let same = zip(alone[step], logits[step]).allSatisfy { $0.bitPattern == $1.bitPattern }
                #expect(same, "\(name), step \(step)")
            }
        }
    }

    @Test func aSnapshotContinuesIdenticallyOnAnotherEngine() async throws {
        let engine = try await SharedModel.engine.value
        var options = Engine.Options()
        options.threads = 1
        options.contextLength = 256
        let other = try Engine(model: try await SharedModel.loaded.value, options: options)
        var sampling = SamplingParameters()
        sampling.seed = 1234
        sampling.temperature = 0.9
        let prompt = try fixture("greedy-03", as: GreedyFixture.self).prompt_ids
        let whole = try engine.makeSequence(tokens: prompt, sampling: sampling)
        let uninterrupted = try (0..<20).map { _ in try engine.step([whole])[0].token }

        let first = try engine.makeSequence(tokens: prompt, sampling: sampling)
        let head = try (0..<8).map { _ in try engine.step([first])[0].token }
        let snapshot = first.snapshot()
        let encoded = try JSONEncoder().encode(snapshot)
        let resumed = try other.makeSequence(snapshot: try JSONDecoder().decode(SequenceSnapshot.self, from: encoded))
        let tail = try (0..<12).map { _ in try other.step([resumed])[0].token }
        #expect(head + tail == uninterrupted)

        // Live-migration style: prefill the bulk of the tokens, then the remainder, then continue.
        var bulk = snapshot
        bulk.tokens = Array(snapshot.tokens.prefix(6))
        let staged = try other.makeSequence(snapshot: bulk)
        try other.prefill(staged)
        try other.append(Array(snapshot.tokens.dropFirst(6)), to: staged)
        try other.prefill(staged)
        #expect(staged.pendingCount == 0)
        let continued = try (0..<12).map { _ in try other.step([staged])[0].token }
        #expect(head + continued == uninterrupted)

        // As a migration's target: warmed with an earlier snapshot (no logits: more tokens come),
        // then handed the last one. What the warm computed stays, its last token too.
        let warmed = try other.makeSequence(snapshot: bulk)
        try other.prefill(warmed, logits: false)
        #expect(throws: EngineError.self) { try other.step([warmed]) }
        #expect(try other.reuse(warmed, snapshot: snapshot) == bulk.tokens.count)
        #expect(warmed.pendingCount == snapshot.tokens.count - bulk.tokens.count)
        #expect(try (0..<12).map { _ in try other.step([warmed])[0].token } == continued)
    }

    @Test func theSameSeedGivesTheSameText() async throws {
        let engine = try await SharedModel.engine.value
        var parameters = GenerationParameters()
        parameters.sampling.seed = 42
        parameters.sampling.temperature = 1.0
        parameters.maxTokens = 24
        let prompt = engine.tokenizer.encode("Once upon a time")
        let a = try engine.generate(prompt: prompt, parameters: parameters)
        let b = try engine.generate(prompt: prompt, parameters: parameters)
        #expect(a.tokens == b.tokens)
        parameters.sampling.seed = 43
        let c = try engine.generate(prompt: prompt, parameters: parameters)
        #expect(c.tokens != a.tokens)
    }

    @Test func stopStringsEndGenerationAndAreNotReturned() async throws {
        let engine = try await SharedModel.engine.value
        var parameters = GenerationParameters()
        parameters.sampling = .greedy
        parameters.maxTokens = 32
        parameters.stop = ["population"]
        var streamed = ""
        let result = try engine.generate(
            prompt: engine.tokenizer.encode("The capital of France is"), parameters: parameters
        ) { token in
            streamed += token.text
            return true
        }
        #expect(result.text == " Paris.\n\nThe United States has a ")
        #expect(streamed == result.text)
        #expect(result.finishReason == .stop)
    }

    @Test func badInputIsRefusedWithAClearError() async throws {
        let engine = try await SharedModel.engine.value
        #expect(throws: EngineError(.invalidInput, "a sequence needs at least one token")) {
            try engine.makeSequence(tokens: [])
        }
        #expect { try engine.makeSequence(tokens: [1, 49152]) } throws: {
            ($0 as? EngineError)?.kind == .invalidInput && "\($0)".contains("49152")
        }
        #expect { try engine.makeSequence(tokens: [-1]) } throws: { ($0 as? EngineError)?.kind == .invalidInput }
        #expect { try engine.makeSequence(tokens: Array(repeating: 28, count: 513)) } throws: {
            ($0 as? EngineError)?.kind == .contextOverflow && "\($0)".contains("513")
        }
        // A sequence that fills its context stops with an error rather than writing past it.
        let full = try engine.makeSequence(tokens: Array(repeating: 28, count: 512))
        #expect { try engine.step([full]) } throws: { ($0 as? EngineError)?.kind == .contextOverflow }
        // generate() reports a prompt that leaves no room.
        #expect {
            try engine.generate(prompt: Array(repeating: 28, count: 512), parameters: GenerationParameters())
        } throws: {
            ($0 as? EngineError)?.kind == .contextOverflow
        }
        // The same sequence twice in one step is refused.
        let twice = try engine.makeSequence(tokens: [28])
        #expect { try engine.step([twice, twice]) } throws: { ($0 as? EngineError)?.kind == .invalidInput }
    }

    @Test func aTruncatedSequenceContinuesLikeAFreshOne() async throws {
        let engine = try await SharedModel.engine.value
        let prompt = try fixture("greedy-01", as: GreedyFixture.self).prompt_ids
        let fresh = try greedy(engine, prompt, count: 6)
        let sequence = try engine.makeSequence(tokens: prompt + [28, 260, 2240])
        _ = try engine.step([sequence])
        engine.truncate(sequence, to: prompt.count)
        #expect(sequence.tokens == prompt)
        let continued = try (0..<6).map { _ in try engine.step([sequence])[0].token }
        #expect(continued == fresh)
    }

    @Test func aReusedSequenceKeepsTheSharedPrefixAndContinuesLikeAFreshOne() async throws {
        let engine = try await SharedModel.engine.value
        let prompt = try fixture("greedy-01", as: GreedyFixture.self).prompt_ids
        let fresh = try greedy(engine, prompt, count: 6)
        // A finished request whose prompt shared the first three tokens, and generated a few more.
        let earlier = try engine.makeSequence(tokens: Array(prompt.prefix(3)) + [28, 260])
        for _ in 0..<3 { _ = try engine.step([earlier]) }
        let cached = try engine.reuse(earlier, prompt: prompt, sampling: .greedy)
        #expect(cached == 3)  // the shared tokens; the logits come from the prompt's tokens after them
        #expect(earlier.tokens == prompt && earlier.promptCount == prompt.count && earlier.timings.prefill == 0)
        let continued = try (0..<6).map { _ in try engine.step([earlier])[0].token }
        #expect(continued == fresh)
        // The very same prompt again: everything but its last token comes from the cache.
        #expect(try engine.reuse(earlier, prompt: prompt, sampling: .greedy) == prompt.count - 1)
        #expect(try (0..<6).map { _ in try engine.step([earlier])[0].token } == fresh)
        #expect(throws: EngineError.self) { try engine.reuse(earlier, prompt: [], sampling: .greedy) }
    }

    @Test func startupLeavesTheKVCacheEmpty() async throws {
        let model = try await SharedModel.loaded.value
        let engine = try Engine(model: model)
        #expect(engine.config.blockCount == 30)
        #expect(engine.kvCacheBytesInUse == 0)
    }
}

/// Start-up on checkpoints other than the real model: Hugging Face sources, unsupported ones.
@Suite struct StartupTests {
    func load(_ directory: TemporaryDirectory, source: String) async throws -> LoadedModel {
        let store = ModelStore(root: directory.file("home"))
        try Converter.convert(source, to: store.directory(for: try ModelName("m")))
        let loader = ModelLoader(
            store: store,
            cache: try DRAMCache(directory: directory.file("cache"), budgetBytes: 64 << 20, slabBytes: 1 << 20),
            configuration: .init(threads: 1))
        return try await loader.load(try ModelName("m"))
    }

    @Test func aHuggingFaceCheckpointRunsOnF16Weights() async throws {
        let directory = try TemporaryDirectory("engine-hf")
        defer { directory.remove() }
        try SyntheticModel.writeHuggingFaceDirectory(directory.file("src"), shape: .tiny)
        let model = try await load(directory, source: directory.file("src"))
        var options = Engine.Options()
        options.threads = 2
        let engine = try Engine(model: model, options: options)
        #expect(engine.tokenizer.model == .sentencePiece)
        #expect(engine.config.tiedEmbeddings == false)
        let prompts = [[1, 0, 1, 1], [0, 0]]
        let single = try prompts.map { try greedy(engine, $0, count: 5) }
        var sampling = SamplingParameters.greedy
        sampling.logprobs = true
        let sequences = try prompts.map { try engine.makeSequence(tokens: $0, sampling: sampling) }
        var batched: [[Int]] = [[], []]
        for _ in 0..<5 {
            let choices = try engine.step(sequences)
            for i in 0..<2 {
                batched[i].append(choices[i].token)
                #expect(choices[i].logprob.map { $0.isFinite && $0 <= 0 } == true)
            }
        }
        #expect(batched == single)
    }

    @Test func anUnknownArchitectureIsNamedAtStartup() async throws {
        let directory = try TemporaryDirectory("engine-arch")
        defer { directory.remove() }
        var builder = GGUFBuilder.tinyLlama()
        builder.metadata = builder.metadata.map { key, value in
            key == "general.architecture"
                ? (key, .string("gpt2")) : (key.replacingOccurrences(of: "llama.", with: "gpt2."), value)
        }
        try writeFile(directory.file("m.gguf"), builder.build())
        let model = try await load(directory, source: directory.file("m.gguf"))
        #expect { try Engine(model: model) } throws: { error in
            (error as? EngineError)?.kind == .unsupportedModel && "\(error)".contains("architecture gpt2")
        }
    }

    @Test func aDtypeWithoutKernelsIsNamedAtStartup() async throws {
        let directory = try TemporaryDirectory("engine-dtype")
        defer { directory.remove() }
        var builder = GGUFBuilder.tinyLlama()
        let index = builder.tensors.firstIndex { $0.name == "blk.0.attn_q.weight" }!
        builder.tensors[index].type = 9  // q8_1 (an activation type): 32 blocks of 36 bytes
        builder.tensors[index].data = [UInt8](repeating: 0, count: 32 * 36)
        try writeFile(directory.file("m.gguf"), builder.build())
        let model = try await load(directory, source: directory.file("m.gguf"))
        let named = { (error: any Error) in
            (error as? EngineError)?.kind == .unsupportedModel && "\(error)".contains("blk.0.attn_q.weight")
                && "\(error)".contains("q8_1")
        }
        #expect { try Engine(model: model) } throws: { named($0) }
        // `sllm pull` and `deploy` validate before accepting the model: refused there already.
        let reader = try ModelStore(root: directory.file("home")).reader(for: try ModelName("m"))
        #expect { try Engine.validate(reader) } throws: { named($0) }
    }
}
