import Foundation

/// Turns a GGUF file into checkpoint contents. Quantized blocks are copied byte for byte.
public enum GGUFConverter {
    /// Reads `path` and describes its tensors and metadata for ``CheckpointWriter``.
    ///
    /// - Parameter source: recorded in the index as where the model came from (defaults to `path`).
    /// - Throws: `CheckpointError` for a malformed file, an unsupported architecture or type, or
    ///   metadata that is missing or out of range.
    public static func contents(ofFileAt path: String, source: String? = nil) throws -> CheckpointContents {
        let mapped = try MappedFile(path: path)
        let name = FileSystem.baseName(path)
        let gguf = try GGUFFile.parse(mapped.bytes, fileSize: mapped.bytes.count, name: name)
        let file = try SharedFile(path: path)

        var tokenizer: [String: JSONValue] = [:]
        var metadata: [String: JSONValue] = [:]
        for (key, value) in gguf.metadata {
            if key.hasPrefix("tokenizer.") { tokenizer[key] = value } else { metadata[key] = value }
        }
        guard tokenizer["tokenizer.ggml.model"] != nil, tokenizer["tokenizer.ggml.tokens"]?.arrayValue != nil else {
            throw CheckpointError(
                .invalidFormat, "\(name) has no tokenizer (tokenizer.ggml.model / tokenizer.ggml.tokens missing)")
        }
        let config = try modelConfig(gguf, name: name)
        // A file without a chat template gets its family's turn format when the family has one
        // that every release uses (as Ollama's Modelfiles supply one): Gemma's.
        if tokenizer["tokenizer.chat_template"]?.stringValue == nil,
            let template = builtInChatTemplates[config.architecture]
        {
            tokenizer["tokenizer.chat_template"] = .string(template)
        }
        // Laid out in the order a forward pass uses them (GGUF files put `output.weight` or the
        // norms anywhere), so a streaming load hands out layer by layer.
        let ordered = gguf.tensors.sorted { TensorNameMap.order(of: $0.name) < TensorNameMap.order(of: $1.name) }
        let tensors = ordered.map { tensor in
            TensorSource.slice(
                of: file, at: Int64(gguf.dataOffset + tensor.offset), name: tensor.name, dtype: tensor.dtype,
                shape: tensor.shape, byteCount: tensor.byteCount)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let tokenizerBytes = [UInt8](try encoder.encode(tokenizer))
        var files = [("gguf-tokenizer.json", tokenizerBytes)]
        if let vocabulary = try vocabularyTable(tokenizer, encoder: encoder) {
            files.append(("vocabulary.bin", vocabulary))
        }
        return CheckpointContents(
            source: source ?? FileSystem.absolute(path), sourceFormat: "gguf", config: config, metadata: metadata,
            tokenizerFormat: "gguf", chatTemplate: tokenizer["tokenizer.chat_template"]?.stringValue,
            files: files, tokenizerFiles: files.map(\.0), tensors: tensors)
    }

    /// The vocabulary as `VocabularyTable` lays it out for lookups in place, with the other
    /// tokenizer keys as its metadata; nil when the arrays are not what a tokenizer takes (the
    /// JSON form then reports what is wrong when a tokenizer is built).
    static func vocabularyTable(_ tokenizer: [String: JSONValue], encoder: JSONEncoder) throws -> [UInt8]? {
        let arrays: Set<String> = [
            "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores", "tokenizer.ggml.merges",
        ]
        guard let tokenValues = tokenizer["tokenizer.ggml.tokens"]?.arrayValue, !tokenValues.isEmpty else { return nil }
        let tokens = tokenValues.compactMap(\.stringValue)
        let types = tokenizer["tokenizer.ggml.token_type"]?.arrayValue?.compactMap(\.intValue) ?? []
        let scores = tokenizer["tokenizer.ggml.scores"]?.arrayValue?.compactMap { $0.doubleValue.map(Float.init) } ?? []
        let mergeValues = tokenizer["tokenizer.ggml.merges"]?.arrayValue ?? []
        let merges = mergeValues.compactMap(\.stringValue)
        guard tokens.count == tokenValues.count, types.isEmpty || types.count == tokens.count,
            scores.isEmpty || scores.count == tokens.count, merges.count == mergeValues.count,
            tokens.count < 1 << 24, merges.count < 1 << 24
        else { return nil }
        let metadata = try encoder.encode(tokenizer.filter { !arrays.contains($0.key) })
        return VocabularyTable.encode(tokens: tokens, types: types, scores: scores, merges: merges, metadata: metadata)
    }

    /// Chat templates for families whose GGUF files may lack one, by architecture. Gemma: turns
    /// of `<start_of_turn>ROLE\n…<end_of_turn>\n` with the assistant's role named `model` and a
    /// system message put at the head of the first user turn; the tokenizer adds BOS.
    static let builtInChatTemplates: [String: String] = {
        let gemma = """
            {%- if messages[0]['role'] == 'system' -%}
            {%- set prefix = messages[0]['content'] | trim + '\n\n' -%}{%- set turns = messages[1:] -%}
            {%- else -%}{%- set prefix = '' -%}{%- set turns = messages -%}{%- endif -%}
            {%- for message in turns -%}
            {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
            {{- '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\n' -}}
            {%- endfor -%}
            {%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}
            """
        return ["gemma": gemma, "gemma2": gemma, "gemma3": gemma]
    }()

    static func modelConfig(_ gguf: GGUFFile, name: String) throws -> ModelConfig {
        guard let architecture = gguf.value("general.architecture")?.stringValue else {
            throw CheckpointError.format("\(name) has no general.architecture")
        }
        func integer(_ key: String, default fallback: Int? = nil) throws -> Int {
            let full = architecture + "." + key
            if let value = gguf.value(full) {
                guard let number = value.intValue else {
                    throw CheckpointError(.unsupported, "\(name): \(full) is \(value.summary), expected one integer")
                }
                return number
            }
            guard let fallback else { throw CheckpointError.format("\(name) lacks the metadata key \(full)") }
            return fallback
        }
        func real(_ key: String, default fallback: Double?) throws -> Double {
            let full = architecture + "." + key
            if let value = gguf.value(full)?.doubleValue { return value }
            guard let fallback else { throw CheckpointError.format("\(name) lacks the metadata key \(full)") }
            return fallback
        }
        let embedding = try integer("embedding_length")
        let heads = try integer("attention.head_count")
        guard heads > 0 else { throw CheckpointError.format("\(name): \(architecture).attention.head_count is 0") }
        let headDimension = try integer("attention.key_length", default: embedding / heads)
        let tokens = gguf.value("tokenizer.ggml.tokens")?.arrayValue?.count ?? 0
        var scaling: [String: JSONValue] = [:]
        for (key, value) in gguf.metadata where key.hasPrefix(architecture + ".rope.scaling.") {
            scaling[String(key.dropFirst((architecture + ".rope.scaling.").count))] = value
        }
        // Sliding-window attention as llama.cpp reads it: Gemma 3 uses the window on five layers
        // of every six (or on the layers an explicit per-layer pattern names), with their own
        // RoPE base; other families' windows are not read yet.
        var slidingWindow: Int?
        var slidingWindowLayers: [Bool]?
        var ropeBaseSWA: Double?
        let blocks = try integer("block_count")
        if architecture == "gemma3", let window = gguf.value(architecture + ".attention.sliding_window")?.intValue,
            window > 0
        {
            slidingWindow = window
            let patternKey = architecture + ".attention.sliding_window_pattern"
            if let flags = gguf.value(patternKey)?.arrayValue {
                slidingWindowLayers = try flags.map { flag in
                    guard let value = flag.boolValue ?? flag.intValue.map({ $0 != 0 }) else {
                        throw CheckpointError.format("\(name): \(patternKey) holds \(flag.summary), expected flags")
                    }
                    return value
                }
            } else {
                let period = try integer("attention.sliding_window_pattern", default: 6)
                slidingWindowLayers = (0..<max(0, blocks)).map { period == 0 || $0 % period < period - 1 }
            }
            ropeBaseSWA = try real("rope.freq_base_swa", default: 10000)
        }
        let config = ModelConfig(
            architecture: architecture,
            vocabularySize: try integer("vocab_size", default: tokens),
            contextLength: try integer("context_length"),
            embeddingLength: embedding,
            feedForwardLength: try integer("feed_forward_length"),
            blockCount: blocks,
            headCount: heads,
            headCountKV: try integer("attention.head_count_kv", default: heads),
            headDimension: headDimension,
            rmsNormEpsilon: try real("attention.layer_norm_rms_epsilon", default: 1e-5),
            ropeFrequencyBase: try real("rope.freq_base", default: 10000),
            ropeDimensionCount: try integer("rope.dimension_count", default: headDimension),
            ropeStyle: ModelConfig.ropeStyle(forArchitecture: architecture),
            ropeScaling: scaling.isEmpty ? nil : scaling,
            tiedEmbeddings: !gguf.tensors.contains { $0.name == "output.weight" },
            slidingWindow: slidingWindow, slidingWindowLayers: slidingWindowLayers, ropeFrequencyBaseSWA: ropeBaseSWA)
        try config.validate()
        return config
    }
}
