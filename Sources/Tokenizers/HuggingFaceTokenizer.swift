public import Foundation

extension Tokenizer {
    /// The tokenizer a checkpoint carries, from its files: `gguf-tokenizer.json` (converted from
    /// GGUF) or Hugging Face's `tokenizer.json` with `tokenizer_config.json`.
    ///
    /// - Parameters:
    ///   - files: names of the files the checkpoint holds.
    ///   - chatTemplate: the template the converter settled on (the checkpoint index's), which
    ///     wins over what the files say.
    ///   - read: the bytes of one of the files.
    public convenience init(checkpointFiles files: Set<String>, chatTemplate: String?, read: (String) throws -> Data)
        throws
    {
        if files.contains("vocabulary.bin") {
            try self.init(vocabulary: [UInt8](try read("vocabulary.bin")), chatTemplate: chatTemplate)
        } else if files.contains("gguf-tokenizer.json") {
            try self.init(ggufJSON: try read("gguf-tokenizer.json"), chatTemplate: chatTemplate)
        } else if files.contains("tokenizer.json") {
            try self.init(
                huggingFaceJSON: try read("tokenizer.json"),
                config: files.contains("tokenizer_config.json") ? try read("tokenizer_config.json") : nil,
                chatTemplate: chatTemplate)
        } else {
            throw TokenizerError(
                .missing, "the checkpoint carries no tokenizer (gguf-tokenizer.json or tokenizer.json)")
        }
    }

    /// The files `init(checkpointFiles:chatTemplate:read:)` reads, for callers that key a cache on them.
    public static let checkpointFileNames = [
        "vocabulary.bin", "gguf-tokenizer.json", "tokenizer.json", "tokenizer_config.json",
    ]

    /// Builds a tokenizer from a Hugging Face `tokenizer.json` (BPE models: byte-level such as
    /// Llama 3, Qwen2, SmolLM, GPT-2; or SentencePiece-style with byte fallback such as Llama 2 and
    /// Mistral) and, when given, its `tokenizer_config.json` (chat template, BOS/EOS, add_bos_token).
    ///
    /// - Throws: `TokenizerError` naming what is missing or unsupported.
    public convenience init(huggingFaceJSON data: Data, config configData: Data? = nil, chatTemplate: String? = nil)
        throws
    {
        guard let json = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw TokenizerError(.malformed, "tokenizer.json is not a JSON object")
        }
        guard let model = json["model"] as? [String: Any], (model["type"] as? String ?? "BPE") == "BPE" else {
            throw TokenizerError(
                .unsupported,
                "tokenizer.json: only BPE models are supported (found \((json["model"] as? [String: Any])?["type"] ?? "none"))"
            )
        }
        guard let vocab = model["vocab"] as? [String: NSNumber], !vocab.isEmpty else {
            throw TokenizerError(.malformed, "tokenizer.json has no model.vocab")
        }
        let merges: [String] = (model["merges"] as? [Any] ?? []).compactMap { merge in
            if let text = merge as? String { return text }
            if let pair = merge as? [String], pair.count == 2 { return pair[0] + " " + pair[1] }
            return nil
        }
        let added = json["added_tokens"] as? [[String: Any]] ?? []
        // Compared before adding: an id may be as large as Int.max.
        let largest = max(
            vocab.values.map(\.intValue).max() ?? 0, added.compactMap { ($0["id"] as? NSNumber)?.intValue }.max() ?? 0)
        guard largest < 1 << 22 else {
            throw TokenizerError(.malformed, "tokenizer.json: token ids up to \(largest) are implausible")
        }
        let size = largest + 1
        var tokens = (0..<size).map { "[PAD\($0)]" }
        var types = [Int](repeating: TokenType.unused.rawValue, count: size)
        for (token, id) in vocab where id.intValue >= 0 {
            tokens[id.intValue] = token
            types[id.intValue] = TokenType.normal.rawValue
        }
        for token in added {
            guard let id = (token["id"] as? NSNumber)?.intValue, id >= 0, let content = token["content"] as? String
            else { continue }
            tokens[id] = content
            types[id] =
                (token["special"] as? Bool ?? false) ? TokenType.control.rawValue : TokenType.userDefined.rawValue
        }

        // Which algorithm: a ByteLevel pre-tokenizer or decoder means GPT-2 style byte-level BPE.
        func components(_ value: Any?) -> [[String: Any]] {
            guard let object = value as? [String: Any] else { return [] }
            if let list = object["pretokenizers"] as? [[String: Any]] ?? object["decoders"] as? [[String: Any]]
                ?? object["normalizers"] as? [[String: Any]] ?? object["processors"] as? [[String: Any]]
            {
                return list.flatMap { components($0) }
            }
            return [object]
        }
        let preTokenizers = components(json["pre_tokenizer"])
        let decoders = components(json["decoder"])
        let byteLevel = (preTokenizers + decoders).contains { $0["type"] as? String == "ByteLevel" }
        var gguf: [String: Any] = ["tokenizer.ggml.tokens": tokens]
        if byteLevel {
            let patterns = preTokenizers.compactMap { (($0["pattern"] as? [String: Any])?["Regex"] as? String) }.joined(
                separator: "\n")
            let digits = preTokenizers.contains {
                $0["type"] as? String == "Digits" && ($0["individual_digits"] as? Bool ?? false)
            }
            let pre: String
            if patterns.contains("\\p{N}{1,3}") {
                pre = "llama3"
            } else if patterns.contains("\\p{L}+|\\p{N}|") {
                pre = "qwen2"
            } else if digits {
                pre = "smollm"
            } else if patterns.isEmpty {
                pre = "gpt2"
            } else {
                throw TokenizerError(
                    .unsupported,
                    "tokenizer.json: pre-tokenizer pattern `\(patterns)` is not supported (supported: gpt2, smollm, llama3, qwen2)"
                )
            }
            gguf["tokenizer.ggml.model"] = "gpt2"
            gguf["tokenizer.ggml.pre"] = pre
            gguf["tokenizer.ggml.merges"] = merges
        } else {
            // SentencePiece-style BPE: a merged token's priority is its merge rank (earlier = better).
            var scores = [Float](repeating: -Float(merges.count + 1), count: size)
            for (rank, merge) in merges.enumerated() {
                let merged = merge.replacingOccurrences(of: " ", with: "")
                // A vocabulary id may be negative (such entries are left out above).
                if let id = vocab[merged]?.intValue, scores.indices.contains(id),
                    scores[id] < -Float(rank) || scores[id] == -Float(merges.count + 1)
                {
                    scores[id] = -Float(rank)
                }
            }
            for (id, token) in tokens.enumerated()
            where token.count == 6 && token.hasPrefix("<0x") && token.hasSuffix(">")
                && types[id] == TokenType.normal.rawValue
            {
                types[id] = TokenType.byte.rawValue
            }
            let normalizers = components(json["normalizer"])
            let prepends =
                normalizers.contains { $0["type"] as? String == "Prepend" }
                || preTokenizers.contains {
                    ($0["prepend_scheme"] as? String ?? "never") != "never"
                        || ($0["add_prefix_space"] as? Bool ?? false)
                }
            gguf["tokenizer.ggml.model"] = "llama"
            gguf["tokenizer.ggml.scores"] = scores.map { NSNumber(value: $0) }
            gguf["tokenizer.ggml.add_space_prefix"] = prepends
        }
        gguf["tokenizer.ggml.token_type"] = types.map { NSNumber(value: $0) }

        // tokenizer_config.json: special tokens, BOS policy, chat template.
        let config = try configData.flatMap { try JSONSerialization.jsonObject(with: $0) as? [String: Any] } ?? [:]
        func tokenText(_ value: Any?) -> String? {
            value as? String ?? (value as? [String: Any])?["content"] as? String
        }
        let index = Dictionary(
            tokens.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { first, _ in first })
        if let bos = tokenText(config["bos_token"]), let id = index[bos] {
            gguf["tokenizer.ggml.bos_token_id"] = NSNumber(value: id)
        }
        if let eos = tokenText(config["eos_token"]), let id = index[eos] {
            gguf["tokenizer.ggml.eos_token_id"] = NSNumber(value: id)
        }
        if let addBOS = config["add_bos_token"] as? Bool {
            gguf["tokenizer.ggml.add_bos_token"] = addBOS
        } else if !byteLevel {
            gguf["tokenizer.ggml.add_bos_token"] = true
        } else {
            // Byte-level BPE models that prepend BOS say so in their post-processor template: its
            // single-sequence form starts with the BOS special token (Llama 3).
            let bos = tokenText(config["bos_token"])
            gguf["tokenizer.ggml.add_bos_token"] = components(json["post_processor"]).contains { processor in
                guard processor["type"] as? String == "TemplateProcessing",
                    let first = (processor["single"] as? [[String: Any]])?.first,
                    let special = first["SpecialToken"] as? [String: Any]
                else { return false }
                return bos != nil && special["id"] as? String == bos
            }
        }
        if let chatTemplate {
            gguf["tokenizer.chat_template"] = chatTemplate
        } else if let template = config["chat_template"] as? String {
            gguf["tokenizer.chat_template"] = template
        } else if let templates = config["chat_template"] as? [[String: Any]] {
            gguf["tokenizer.chat_template"] =
                templates.first { $0["name"] as? String == "default" }?["template"] ?? templates.first?["template"]
        }
        try self.init(gguf: gguf)
    }
}
