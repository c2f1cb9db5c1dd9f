public import Checkpoint
public import Foundation

/// An error from loading a tokenizer or from input it cannot handle.
/// Why a tokenizer cannot be built: what kind of failure, a message naming the file or field, and
/// the error underneath when there is one (a JSON parse error), kept as a value.
public struct TokenizerError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// The checkpoint carries no tokenizer files.
        case missing
        /// The files are not what they claim (not JSON, missing fields, counts that disagree).
        case malformed
        /// A well-formed tokenizer of a kind sllm does not implement (a model type, a pre-tokenizer).
        case unsupported
        /// A chat template failed: a syntax error when parsed, a runtime error (its own
        /// `raise_exception` included) or a limit when rendered.
        case template
    }

    public var kind: Kind
    public var message: String
    public var cause: (any Error & Sendable)?
    public var description: String { cause.map { "\(message): \($0)" } ?? message }

    public init(_ kind: Kind, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.kind = kind
        self.message = message
        self.cause = cause
    }

    /// A chat template's error (kind `.template`), as the template interpreter raises them.
    public init(_ message: String) {
        self.init(.template, message)
    }

    /// Equal kind and message (a cause is detail, not identity).
    public static func == (a: TokenizerError, b: TokenizerError) -> Bool { a.kind == b.kind && a.message == b.message }
}

/// A tokenizer built from GGUF `tokenizer.*` metadata (or a Hugging Face `tokenizer.json`):
/// byte-level BPE (GPT-2 style, `gpt2`) or SentencePiece BPE with byte fallback (`llama`:
/// Llama 2, Mistral).
///
/// Encodes as llama.cpp does: special tokens (control and user-defined) are matched first when
/// `parseSpecial` is set. Byte-level: the rest is split by the vocabulary's pre-tokenizer, each
/// word spelled in GPT-2's byte alphabet and merged by rank. SentencePiece: spaces become `▁`
/// (with a leading one after BOS or a special token), characters merge by the score of the
/// merged token, and characters outside the vocabulary become `<0xXX>` byte tokens.
public final class Tokenizer: Sendable {
    /// Tokens, their ids and merge ranks, looked up in place (`VocabularyTable`).
    private let table: VocabularyTable
    /// Tokens matched in the text before it is split into words, longest first: control,
    /// user-defined and unknown ones, and the user-defined ones alone.
    private let specials: [(text: String, id: Int)]
    private let userDefined: [(text: String, id: Int)]
    public let preTokenizer: PreTokenizer
    public let bosTokenID: Int?
    public let eosTokenID: Int?
    public let addBOS: Bool
    public let chatTemplate: String?
    /// Tokens that end a generation: EOS and the control tokens chat models end a turn with
    /// (as llama.cpp's `is_eog`).
    public let endOfGenerationTokens: Set<Int>
    /// Which algorithm the vocabulary uses.
    public let model: Model
    /// Whether SentencePiece text gets a leading `▁`.
    let addSpacePrefix: Bool
    /// `<0xXX>` byte tokens of a SentencePiece vocabulary.
    let byteTokens: [Int?]

    public enum Model: String, Sendable {
        /// GPT-2 style byte-level BPE.
        case byteLevelBPE = "gpt2"
        /// SentencePiece BPE with byte fallback.
        case sentencePiece = "llama"
    }

    /// Token types, as GGUF `tokenizer.ggml.token_type` numbers them.
    public enum TokenType: Int {
        case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    /// Builds a tokenizer from the JSON object of GGUF `tokenizer.*` keys (a checkpoint's
    /// `gguf-tokenizer.json`).
    ///
    /// - Throws: `TokenizerError` naming a missing key or an unsupported model or pre-tokenizer.
    public convenience init(ggufJSON data: Data, chatTemplate: String? = nil) throws {
        guard var object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw TokenizerError(.malformed, "tokenizer data is not a JSON object")
        }
        if let chatTemplate { object["tokenizer.chat_template"] = chatTemplate }
        try self.init(gguf: object)
    }

    /// Builds a tokenizer from GGUF `tokenizer.*` keys.
    public convenience init(gguf: [String: Any]) throws {
        guard let tokens = gguf["tokenizer.ggml.tokens"] as? [String], !tokens.isEmpty else {
            throw TokenizerError(.malformed, "tokenizer has no tokenizer.ggml.tokens")
        }
        let merges = gguf["tokenizer.ggml.merges"] as? [String] ?? []
        let scores = (gguf["tokenizer.ggml.scores"] as? [NSNumber])?.map(\.floatValue) ?? []
        let types =
            (gguf["tokenizer.ggml.token_type"] as? [NSNumber])?.map(\.intValue)
            ?? Array(repeating: 1, count: tokens.count)
        guard types.count == tokens.count else {
            throw TokenizerError(.malformed, "token_type has \(types.count) entries for \(tokens.count) tokens")
        }
        guard scores.isEmpty || scores.count == tokens.count else {
            throw TokenizerError(.malformed, "\(scores.count) scores for \(tokens.count) tokens")
        }
        let table = try VocabularyTable(
            VocabularyTable.encode(tokens: tokens, types: types, scores: scores, merges: merges, metadata: Data()))
        try self.init(table: table, metadata: gguf)
    }

    /// Builds a tokenizer from a checkpoint's `vocabulary.bin` (written at conversion): nothing
    /// is built per token, so this takes milliseconds where the JSON form of a large vocabulary
    /// takes hundreds.
    public convenience init(vocabulary bytes: [UInt8], chatTemplate: String? = nil) throws {
        try self.init(vocabulary: try Tokenizer.table { try VocabularyTable(bytes) }, chatTemplate: chatTemplate)
    }

    /// A vocabulary table from `read`, a malformed one reported as a malformed tokenizer (other
    /// failures, a file that cannot be read or fails its checksum, as they are).
    static func table(_ read: () throws -> VocabularyTable) throws -> VocabularyTable {
        do {
            return try read()
        } catch let error as CheckpointError where error.code == .invalidFormat {
            throw TokenizerError(.malformed, error.message)
        }
    }

    /// A tokenizer over a vocabulary table already read (`VocabularyTable(mapped:)` maps a
    /// checkpoint's file in place).
    public convenience init(vocabulary table: VocabularyTable, chatTemplate: String? = nil) throws {
        guard var metadata = try? JSONSerialization.jsonObject(with: table.metadata) as? [String: Any] else {
            throw TokenizerError(.malformed, "vocabulary.bin: its metadata is not a JSON object")
        }
        if let chatTemplate { metadata["tokenizer.chat_template"] = chatTemplate }
        try self.init(table: table, metadata: metadata)
    }

    /// `metadata`: the `tokenizer.*` keys besides the vocabulary itself (model, pre-tokenizer,
    /// special token ids, flags, chat template).
    init(table: VocabularyTable, metadata gguf: [String: Any]) throws {
        let modelName = gguf["tokenizer.ggml.model"] as? String ?? "(none)"
        guard let model = Model(rawValue: modelName) else {
            throw TokenizerError(
                .unsupported,
                "tokenizer model `\(modelName)` is not supported (supported: gpt2 byte-level BPE, llama SentencePiece BPE)"
            )
        }
        let pre = gguf["tokenizer.ggml.pre"] as? String ?? "default"
        guard let preTokenizer = model == .sentencePiece ? PreTokenizer(kind: .gpt2) : PreTokenizer(ggufName: pre)
        else {
            throw TokenizerError(
                .unsupported,
                "pre-tokenizer `\(pre)` is not supported (supported: gpt2, smollm, llama3, qwen2 and their kin)")
        }
        self.model = model
        if model == .sentencePiece && !table.hasScores {
            throw TokenizerError(.malformed, "a SentencePiece vocabulary needs one score per token (it has none)")
        }
        self.table = table
        self.addSpacePrefix = (gguf["tokenizer.ggml.add_space_prefix"] as? Bool) ?? true
        let count = table.tokenCount
        // As llama.cpp: control, user-defined and unknown tokens are matched in the text before
        // anything else, longest first; without parse-special only the user-defined ones are
        // (Gemma's whitespace runs, Qwen's `<tool_call>`), as Hugging Face's tokenizers do.
        let matched: Set<Int> = [
            TokenType.control.rawValue, TokenType.userDefined.rawValue, TokenType.unknown.rawValue,
        ]
        self.specials = table.ids(ofTypes: matched)
            .filter { !table.tokenUTF8($0).isEmpty }
            .map { (table.token($0), $0) }
            .sorted { ($0.text.utf8.count, $1.id) > ($1.text.utf8.count, $0.id) }
        self.userDefined = specials.filter { table.type($0.id) == TokenType.userDefined.rawValue }
        self.preTokenizer = preTokenizer
        // Every special token id is checked against the vocabulary. BOS and EOS are used (an EOS
        // outside the vocabulary never ends a generation; either would index out of bounds): a
        // bad one refuses the file. The others (padding, separator, …) are not used here and,
        // as llama.cpp does, a bad one is ignored.
        func isToken(_ value: Any?) -> Bool {
            guard let number = value as? NSNumber else { return false }
            let double = number.doubleValue
            return double >= 0 && double < Double(count) && double == double.rounded()
        }
        for key in ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"]
        where gguf[key] != nil && !isToken(gguf[key]) {
            throw TokenizerError(
                .malformed, "\(key) is \(gguf[key]!), outside the vocabulary of \(count) tokens")
        }
        func id(_ key: String) -> Int? { isToken(gguf[key]) ? (gguf[key] as? NSNumber)?.intValue : nil }
        self.bosTokenID = id("tokenizer.ggml.bos_token_id")
        self.eosTokenID = id("tokenizer.ggml.eos_token_id")
        self.addBOS = (gguf["tokenizer.ggml.add_bos_token"] as? Bool) ?? (model == .sentencePiece)
        self.chatTemplate = gguf["tokenizer.chat_template"] as? String
        var byteTokens = [Int?](repeating: nil, count: 256)
        if model == .sentencePiece {
            for id in table.ids(ofTypes: [TokenType.byte.rawValue]) {
                let token = table.token(id)
                if token.hasPrefix("<0x"), token.hasSuffix(">"),
                    let byte = UInt8(token.dropFirst(3).dropLast(), radix: 16)
                {
                    byteTokens[Int(byte)] = id
                }
            }
        }
        self.byteTokens = byteTokens
        let endNames: Set<String> = [
            "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "</s>", "<|end|>",
            "<|end_of_text|>",
        ]
        var ends = Set(
            specials.filter { table.type($0.id) == TokenType.control.rawValue && endNames.contains($0.text) }.map(\.id))
        if let eos = eosTokenID { ends.insert(eos) }
        endOfGenerationTokens = ends
    }

    public var vocabularySize: Int { table.tokenCount }

    /// The text of token `id` as the vocabulary spells it (GPT-2 byte symbols, `▁` for spaces).
    public func token(_ id: Int) -> String { table.token(id) }

    /// The type of token `id` (`TokenType` raw values), 0 for an id outside the vocabulary.
    public func tokenType(_ id: Int) -> Int { isValid(id) ? table.type(id) : 0 }

    /// Token ids for `text`.
    ///
    /// - Parameters:
    ///   - addSpecial: prepend BOS when the vocabulary asks for it.
    ///   - parseSpecial: match special tokens (`<|im_start|>`) written in the text.
    public func encode(_ text: String, addSpecial: Bool = true, parseSpecial: Bool = true) -> [Int] {
        // Never cancelled: without cancellation checks there is nothing to throw.
        (try? encode(text, addSpecial: addSpecial, parseSpecial: parseSpecial, cancellable: false)) ?? []
    }

    /// Token ids for `text`, giving up with `CancellationError` once the current task is
    /// cancelled (checked between words and every few thousand merges).
    public func encodeCancellable(_ text: String, addSpecial: Bool = true, parseSpecial: Bool = true)
        throws(CancellationError) -> [Int]
    {
        try encode(text, addSpecial: addSpecial, parseSpecial: parseSpecial, cancellable: true)
    }

    private func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool, cancellable: Bool)
        throws(CancellationError) -> [Int]
    {
        var out: [Int] = []
        if addSpecial && addBOS, let bos = bosTokenID { out.append(bos) }
        var afterSpecial = true
        for fragment in fragments(of: text[...], parseSpecial: parseSpecial) {
            switch fragment {
            case .special(let id):
                out.append(id)
                afterSpecial = true
            case .text(let piece):
                if model == .sentencePiece {
                    try encodeSentencePiece(
                        (addSpacePrefix && afterSpecial ? " " : "") + piece, into: &out, cancellable: cancellable)
                } else {
                    for word in preTokenizer.split(piece) {
                        if cancellable && Task.isCancelled { throw CancellationError() }
                        try encodeWord(word, into: &out, cancellable: cancellable)
                    }
                }
                afterSpecial = false
            }
        }
        return out
    }

    private enum Fragment {
        case special(Int)
        case text(Substring)
    }

    /// Splits `text` at the special tokens it contains, as llama.cpp's `tokenizer_st_partition`:
    /// each special in turn, longest first, takes every occurrence of itself (left to right) out
    /// of the text not yet taken, so a longer special wins over a shorter one that overlaps it
    /// even when the shorter one starts earlier. Matching is by Unicode scalars (bytes of UTF-8).
    private func fragments(of text: Substring, parseSpecial: Bool) -> [Fragment] {
        guard !text.isEmpty else { return [] }
        var result: [Fragment] = [.text(text)]
        let present = Set(text.unicodeScalars)
        for special in parseSpecial ? specials : userDefined {
            guard let first = special.text.unicodeScalars.first, present.contains(first) else { continue }
            let needle = Array(special.text.unicodeScalars)
            var next: [Fragment] = []
            next.reserveCapacity(result.count)
            for fragment in result {
                guard case .text(var rest) = fragment else {
                    next.append(fragment)
                    continue
                }
                while let range = rest.unicodeScalars.firstRange(of: needle) {
                    if range.lowerBound > rest.startIndex { next.append(.text(rest[..<range.lowerBound])) }
                    next.append(.special(special.id))
                    rest = rest[range.upperBound...]
                }
                if !rest.isEmpty { next.append(.text(rest)) }
            }
            result = next
        }
        return result
    }

    private func encodeWord(_ word: Substring, into out: inout [Int], cancellable: Bool) throws(CancellationError) {
        let spelled = ByteLevel.encode(word.unicodeScalars)
        if let id = table.id(of: spelled) {
            out.append(id)
            return
        }
        // Lowest merge rank first.
        let symbols = try merged(spelled, cancellable: cancellable) { left, right in
            table.rank(of: left + " " + right).map { -Float($0) }
        }
        // Not in the vocabulary: fall back to one token per byte symbol where those exist.
        emit(symbols, into: &out) { symbol in symbol.unicodeScalars.compactMap { table.id(of: String($0)) } }
    }

    /// Merges adjacent symbols (single scalars at first) while some pair has a priority, highest
    /// first and leftmost on ties: BPE's loop, for ranks and for SentencePiece scores alike.
    ///
    /// O(n log n) in the word's length, as llama.cpp's tokenizers: the symbols form a linked list
    /// and candidate pairs wait in a heap ordered by (priority, position). A pair popped after one
    /// of its symbols changed is stale and skipped; each merge pushes the two pairs it creates.
    func merged(_ text: String, cancellable: Bool, priority: (String, String) -> Float?) throws(CancellationError)
        -> [String]
    {
        var symbols = text.unicodeScalars.map { String($0) }
        guard symbols.count > 1 else { return symbols }
        var next = Array(1...symbols.count)  // symbols.count: none
        var previous = Array(-1..<(symbols.count - 1))
        var alive = [Bool](repeating: true, count: symbols.count)
        var heap = PairHeap()
        func push(_ left: Int) {
            let right = next[left]
            guard left >= 0, right < symbols.count, let p = priority(symbols[left], symbols[right]) else { return }
            heap.push(.init(priority: p, left: left, length: symbols[left].utf8.count + symbols[right].utf8.count))
        }
        for i in 0..<(symbols.count - 1) { push(i) }
        var merges = 0
        while let pair = heap.pop() {
            let left = pair.left
            let right = next[left]
            guard alive[left], right < symbols.count,
                symbols[left].utf8.count + symbols[right].utf8.count == pair.length
            else { continue }
            merges += 1
            if cancellable, merges & 4095 == 0, Task.isCancelled { throw CancellationError() }
            symbols[left] += symbols[right]
            symbols[right] = ""
            alive[right] = false
            next[left] = next[right]
            if next[right] < symbols.count { previous[next[right]] = left }
            if previous[left] >= 0 { push(previous[left]) }
            push(left)
        }
        var result: [String] = []
        var index = 0
        while index < symbols.count {
            result.append(symbols[index])
            index = next[index]
        }
        return result
    }

    /// The ids of merged symbols; a symbol outside the vocabulary goes through `fallback`.
    private func emit(_ symbols: [String], into out: inout [Int], fallback: (String) -> [Int]) {
        for symbol in symbols {
            if let id = table.id(of: symbol) { out.append(id) } else { out += fallback(symbol) }
        }
    }

    /// SentencePiece BPE: characters (spaces as `▁`) merged pairwise, best-scoring merged token
    /// first (leftmost on ties), as llama.cpp's `llm_tokenizer_spm` does; leftovers outside the
    /// vocabulary become byte tokens.
    private func encodeSentencePiece(_ text: String, into out: inout [Int], cancellable: Bool) throws(CancellationError)
    {
        let symbols = try merged(text.replacingOccurrences(of: " ", with: "\u{2581}"), cancellable: cancellable) {
            left, right in
            table.id(of: left + right).map { table.score($0) }
        }
        emit(symbols, into: &out) { symbol in symbol.utf8.compactMap { byteTokens[Int($0)] } }
    }

    /// The bytes of token `id` (control tokens give their text only with `renderSpecial`).
    public func bytes(of id: Int, renderSpecial: Bool = false) -> [UInt8] {
        guard id >= 0, id < table.tokenCount else { return [] }
        let type = table.type(id)
        if type == TokenType.control.rawValue { return renderSpecial ? Array(table.tokenUTF8(id)) : [] }
        if type == TokenType.userDefined.rawValue { return Array(table.tokenUTF8(id)) }
        let token = table.token(id)
        if model == .sentencePiece {
            if type == TokenType.byte.rawValue, let byte = UInt8(token.dropFirst(3).dropLast(), radix: 16) {
                return [byte]
            }
            return Array(token.replacingOccurrences(of: "\u{2581}", with: " ").utf8)
        }
        return ByteLevel.decode(token)
    }

    /// The text of `ids` (invalid UTF-8 repaired with U+FFFD).
    public func decode(_ ids: [Int], renderSpecial: Bool = false) -> String {
        String(decoding: ids.flatMap { bytes(of: $0, renderSpecial: renderSpecial) }, as: UTF8.self)
    }

    /// Whether `id` is a valid token id.
    public func isValid(_ id: Int) -> Bool { id >= 0 && id < table.tokenCount }
}

/// Turns a stream of token ids into text without ever emitting half a UTF-8 character.
public struct StreamingDecoder: Sendable {
    private let tokenizer: Tokenizer
    private var pending: [UInt8] = []

    public init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    /// The text that `id` completes; bytes of an unfinished character are held back.
    public mutating func append(_ id: Int) -> String {
        pending += tokenizer.bytes(of: id)
        var end = pending.count
        // Hold back a trailing incomplete UTF-8 sequence (at most 3 bytes).
        var back = 0
        while back < min(3, pending.count) {
            let byte = pending[pending.count - 1 - back]
            if byte & 0xC0 == 0x80 {
                back += 1
                continue
            }
            if byte & 0x80 != 0 {
                let needed = byte & 0xE0 == 0xC0 ? 2 : byte & 0xF0 == 0xE0 ? 3 : 4
                if back + 1 < needed { end = pending.count - 1 - back }
            }
            break
        }
        let text = String(decoding: pending[0..<end], as: UTF8.self)
        pending.removeFirst(end)
        return text
    }

    /// Whatever is still held back, repaired.
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }
}
