import Foundation
import TestSupport
import Testing

@testable import Checkpoint
@testable import Tokenizers

/// The SmolLM2 tokenizer, from the real GGUF through the checkpoint converter.
enum SmolLM2Tokenizer {
    static let shared: Result<Tokenizer, any Error> = Result {
        let contents = try GGUFConverter.contents(ofFileAt: try RealModel.ggufPath())
        guard let file = contents.files.first(where: { $0.name == "gguf-tokenizer.json" }) else {
            throw TokenizerError("no tokenizer file")
        }
        return try Tokenizer(ggufJSON: Data(file.bytes))
    }
}

struct TokenizeFixture: Decodable {
    struct Entry: Decodable {
        var text: String
        var ids_parse_special: [Int]
        var ids_no_parse_special: [Int]
    }
    var entries: [Entry]

    static func load() throws -> [Entry] {
        let url = try #require(Bundle.module.url(forResource: "tokenize", withExtension: "json", subdirectory: "Resources"))
        return try JSONDecoder().decode(TokenizeFixture.self, from: Data(contentsOf: url)).entries
    }
}

@Suite struct TokenizerTests {
    @Test func idsMatchLlamaCppOnTheFixtureStrings() throws {
        let tokenizer = try SmolLM2Tokenizer.shared.get()
        for entry in try TokenizeFixture.load() {
            #expect(tokenizer.encode(entry.text, parseSpecial: true) == entry.ids_parse_special, "\(entry.text.debugDescription)")
            #expect(tokenizer.encode(entry.text, parseSpecial: false) == entry.ids_no_parse_special, "\(entry.text.debugDescription)")
        }
    }

    @Test func decodingGivesTheTextBack() throws {
        let tokenizer = try SmolLM2Tokenizer.shared.get()
        for entry in try TokenizeFixture.load() {
            #expect(tokenizer.decode(tokenizer.encode(entry.text, parseSpecial: false)) == entry.text)
        }
        #expect(tokenizer.decode([1, 4093, 2], renderSpecial: true) == "<|im_start|>user<|im_end|>")
    }

    @Test func streamingNeverSplitsACharacter() throws {
        let tokenizer = try SmolLM2Tokenizer.shared.get()
        let text = "naïve café 😀 日本語"
        var decoder = StreamingDecoder(tokenizer: tokenizer)
        var pieces: [String] = []
        for id in tokenizer.encode(text) { pieces.append(decoder.append(id)) }
        pieces.append(decoder.finish())
        #expect(pieces.joined() == text)
        #expect(pieces.allSatisfy { !$0.contains("\u{FFFD}") })
    }

    @Test func theChatTemplateAndSpecialsTravel() throws {
        let tokenizer = try SmolLM2Tokenizer.shared.get()
        #expect(tokenizer.vocabularySize == 49152)
        #expect(tokenizer.chatTemplate?.contains("<|im_start|>") == true)
        #expect(!tokenizer.addBOS)
        #expect(tokenizer.encode("").isEmpty)
    }

    @Test func unsupportedTokenizersAreNamed() {
        #expect(throws: TokenizerError.self) { try Tokenizer(gguf: ["tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"]]) }
        #expect(throws: TokenizerError.self) { try Tokenizer(gguf: ["tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.pre": "martian"]) }
        #expect(throws: TokenizerError.self) { try Tokenizer(gguf: ["tokenizer.ggml.model": "gpt2"]) }
    }

    @Test(arguments: [
        ("Hello world", ["Hello", " world"]),
        ("it's 42!", ["it", "'s", " ", "4", "2", "!"]),
        ("a  b", ["a", " ", " b"]),
        ("x\n\n\ty", ["x", "\n\n", "\t", "y"]),
        ("end   ", ["end", "   "]),
    ])
    func smollmPreTokenizerSplitsLikeTheRegex(text: String, words: [String]) {
        #expect(PreTokenizer(kind: .smollm).split(text[...]).map(String.init) == words)
    }
}

@Suite struct PromptFixtureTests {
    struct Greedy: Decodable {
        var prompt: String
        var prompt_ids: [Int]
        var output_text: String
        var output_ids: [Int]
    }

    struct Chat: Decodable {
        struct Usage: Decodable { var prompt_tokens: Int }
        var templated_prompt: String
        var usage: Usage
    }

    static func fixture<T: Decodable>(_ name: String, as type: T.Type) throws -> T {
        let url = try #require(Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Resources"))
        return try JSONDecoder().decode(T.self, from: Data(contentsOf: url))
    }

    @Test(arguments: ["greedy-01", "greedy-02", "greedy-03"])
    func promptIdsAndOutputTextMatchLlamaCpp(name: String) throws {
        let tokenizer = try SmolLM2Tokenizer.shared.get()
        let fixture = try Self.fixture(name, as: Greedy.self)
        #expect(tokenizer.encode(fixture.prompt) == fixture.prompt_ids)
        #expect(tokenizer.decode(fixture.output_ids) == fixture.output_text)
    }

    @Test func theTemplatedChatPromptHasLlamaCppsTokenCount() throws {
        let tokenizer = try SmolLM2Tokenizer.shared.get()
        let fixture = try Self.fixture("chat-01", as: Chat.self)
        #expect(tokenizer.encode(fixture.templated_prompt).count == fixture.usage.prompt_tokens)
    }
}
