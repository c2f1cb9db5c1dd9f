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
            throw TokenizerError(.missing, "no tokenizer file")
        }
        return try Tokenizer(ggufJSON: Data(file.bytes))
    }
}

/// The same tokenizer built from the converter's `vocabulary.bin`, as engines build it.
enum SmolLM2TableTokenizer {
    static let shared: Result<Tokenizer, any Error> = Result {
        let contents = try GGUFConverter.contents(ofFileAt: try RealModel.ggufPath())
        guard let file = contents.files.first(where: { $0.name == "vocabulary.bin" }) else {
            throw TokenizerError(.missing, "the converter wrote no vocabulary.bin")
        }
        return try Tokenizer(vocabulary: file.bytes, chatTemplate: contents.chatTemplate)
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
        let url = try #require(
            Bundle.module.url(forResource: "tokenize", withExtension: "json", subdirectory: "Resources"))
        return try JSONDecoder().decode(TokenizeFixture.self, from: Data(contentsOf: url)).entries
    }
}

@Suite struct TokenizerTests {
    @Test(arguments: ["json", "vocabulary.bin"])
    func idsMatchLlamaCppOnTheFixtureStrings(form: String) throws {
        let tokenizer = try (form == "json" ? SmolLM2Tokenizer.shared : SmolLM2TableTokenizer.shared).get()
        for entry in try TokenizeFixture.load() {
            #expect(
                tokenizer.encode(entry.text, parseSpecial: true) == entry.ids_parse_special,
                "\(entry.text.debugDescription)")
            #expect(
                tokenizer.encode(entry.text, parseSpecial: false) == entry.ids_no_parse_special,
                "\(entry.text.debugDescription)")
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
        #expect(throws: TokenizerError.self) {
            try Tokenizer(gguf: ["tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"]])
        }
        #expect(throws: TokenizerError.self) {
            try Tokenizer(gguf: [
                "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.pre": "martian",
            ])
        }
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

/// BPE merging is O(n log n) per word (a heap of candidate pairs), so a long run without a
/// pre-tokenizer split cannot pin a core; it must merge exactly as the quadratic loop did.
@Suite struct BPEMergeTests {
    /// The textbook loop: merge the highest-priority adjacent pair, leftmost on ties, until none.
    static func naiveMerge(_ text: String, priority: (String, String) -> Float?) -> [String] {
        var symbols = text.unicodeScalars.map { String($0) }
        while symbols.count > 1 {
            var best: (priority: Float, at: Int)?
            for i in 0..<(symbols.count - 1) {
                if let p = priority(symbols[i], symbols[i + 1]), best == nil || p > best!.priority { best = (p, i) }
            }
            guard let best else { break }
            symbols[best.at] += symbols[best.at + 1]
            symbols.remove(at: best.at + 1)
        }
        return symbols
    }

    @Test func theHeapMergesExactlyAsTheNaiveLoop() throws {
        let tokenizer = try SmolLM2Tokenizer.shared.get()
        var generator = SeededGenerator(seed: 7)
        for round in 0..<300 {
            // A small alphabet and coarse priorities make ties and cascades common.
            let alphabet = Array("abcd")
            let length = Int.random(in: 1...60, using: &generator)
            let text = String((0..<length).map { _ in alphabet.randomElement(using: &generator)! })
            var table: [String: Float] = [:]
            for _ in 0..<40 {
                let left = String(
                    (0..<Int.random(in: 1...3, using: &generator)).map { _ in alphabet.randomElement(using: &generator)!
                    })
                let right = String(
                    (0..<Int.random(in: 1...3, using: &generator)).map { _ in alphabet.randomElement(using: &generator)!
                    })
                table[left + "|" + right] = Float(Int.random(in: 0...5, using: &generator))
            }
            let priority: (String, String) -> Float? = { table[$0 + "|" + $1] }
            let fast = try tokenizer.merged(text, cancellable: false, priority: priority)
            #expect(fast == Self.naiveMerge(text, priority: priority), "round \(round): \(text)")
        }
    }

    @Test func aLongWordWithoutSplitsTokenizesAndDecodesBack() throws {
        let tokenizer = try SmolLM2Tokenizer.shared.get()
        for text in [
            String(repeating: "a", count: 40_000), String(repeating: "ab", count: 20_000),
            String(repeating: "é", count: 20_000),
        ] {
            let ids = tokenizer.encode(text, addSpecial: false)
            #expect(!ids.isEmpty && ids.count < text.utf8.count)
            #expect(tokenizer.decode(ids) == text)
        }
    }

    @Test func aCancelledTaskStopsTokenizing() async throws {
        let tokenizer = try SmolLM2Tokenizer.shared.get()
        let text = String(repeating: "hello world ", count: 10_000)
        let task = Task {
            while !Task.isCancelled { await Task.yield() }
            return try tokenizer.encodeCancellable(text)
        }
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        // Not cancelled: the same ids as the plain call.
        #expect(try tokenizer.encodeCancellable("hello world") == tokenizer.encode("hello world"))
    }

    @Test func specialTokenIdsOutsideTheVocabularyAreRefused() throws {
        // Unused ones are ignored, as llama.cpp does.
        let padding = try Tokenizer(gguf: [
            "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b", "ab"],
            "tokenizer.ggml.padding_token_id": 99,
        ])
        #expect(padding.vocabularySize == 3)
        for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.bos_token_id"] {
            for bad: NSNumber in [NSNumber(value: 0xffff_fff0 as UInt32), NSNumber(value: 3), NSNumber(value: -1)] {
                let gguf: [String: Any] = [
                    "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b", "ab"], key: bad,
                ]
                #expect { try Tokenizer(gguf: gguf) } throws: { error in
                    (error as? TokenizerError)?.description.contains(
                        "\(key) is \(bad), outside the vocabulary of 3 tokens") == true
                }
            }
            #expect(
                try Tokenizer(gguf: [
                    "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b", "ab"], key: 2,
                ]).vocabularySize == 3)
        }
    }

    /// As llama.cpp: without parse-special, user-defined tokens are still matched (only control
    /// and unknown ones are skipped); matching takes the longest special first, so a longer one
    /// wins over an overlapping shorter one that starts earlier.
    @Test func userDefinedTokensAreMatchedWithoutParseSpecialAndLongestFirst() throws {
        let tokens = [
            "<", ">", "|", "_", "a", "c", "l", "o", "t", "w", "x", "y", "z", "<tool_call>", "<|ctl|>", "xy", "yzw",
        ]
        var types = Array(repeating: Tokenizer.TokenType.normal.rawValue, count: tokens.count)
        types[13] = Tokenizer.TokenType.userDefined.rawValue
        types[14] = Tokenizer.TokenType.control.rawValue
        types[15] = Tokenizer.TokenType.userDefined.rawValue
        types[16] = Tokenizer.TokenType.userDefined.rawValue
        let tokenizer = try Tokenizer(gguf: [
            "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
        ])
        func ids(_ text: String, parseSpecial: Bool) -> [String] {
            tokenizer.encode(text, addSpecial: false, parseSpecial: parseSpecial).map { tokens[$0] }
        }
        #expect(ids("a<tool_call>a", parseSpecial: false) == ["a", "<tool_call>", "a"])
        #expect(ids("a<tool_call>a", parseSpecial: true) == ["a", "<tool_call>", "a"])
        #expect(ids("a<|ctl|>", parseSpecial: false) == ["a", "<", "|", "c", "t", "l", "|", ">"])
        #expect(ids("a<|ctl|>", parseSpecial: true) == ["a", "<|ctl|>"])
        #expect(ids("xyzw", parseSpecial: false) == ["x", "yzw"])
        #expect(ids("xyzw", parseSpecial: true) == ["x", "yzw"])
        #expect(ids("xyxyzw", parseSpecial: false) == ["xy", "x", "yzw"])
    }

    /// Both forms agree on everything a tokenizer exposes.
    @Test func theVocabularyTableGivesTheJSONFormsTokenizer() throws {
        let json = try SmolLM2Tokenizer.shared.get(), table = try SmolLM2TableTokenizer.shared.get()
        #expect(table.vocabularySize == json.vocabularySize)
        #expect(table.bosTokenID == json.bosTokenID && table.eosTokenID == json.eosTokenID)
        #expect(table.endOfGenerationTokens == json.endOfGenerationTokens)
        #expect(table.chatTemplate == json.chatTemplate)
        for id in stride(from: 0, to: json.vocabularySize, by: 7) {
            #expect(table.token(id) == json.token(id) && table.tokenType(id) == json.tokenType(id))
            #expect(table.bytes(of: id, renderSpecial: true) == json.bytes(of: id, renderSpecial: true))
        }
    }
}
