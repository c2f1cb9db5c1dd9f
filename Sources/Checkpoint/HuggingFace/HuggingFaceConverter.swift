import Foundation
public import Logging

/// Turns a Hugging Face model directory (`config.json`, `*.safetensors`, tokenizer files) into
/// checkpoint contents with GGUF tensor names. Llama/Mistral q/k weights are permuted into GGUF's
/// interleaved RoPE order, exactly as llama.cpp's converter does, so both sources compute alike.
public enum HuggingFaceConverter {
    static let architectures: [String: String] = [
        "LlamaForCausalLM": "llama",
        "MistralForCausalLM": "llama",
        "Qwen2ForCausalLM": "qwen2",
        "Qwen3ForCausalLM": "qwen3",
        "Phi3ForCausalLM": "phi3",
    ]
    /// Files copied from a model directory into the checkpoint (beside the weights).
    public static let copiedFiles = [
        "config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
        "special_tokens_map.json", "chat_template.jinja",
    ]

    /// Reads the model directory at `path`.
    ///
    /// - Throws: `CheckpointError` when `config.json`, `tokenizer.json` or the weights are missing
    ///   or malformed, or the architecture is not a supported Llama-family one.
    public static func contents(
        ofDirectoryAt path: String, source: String? = nil, logger: Logger = Logger(label: "sllm.checkpoint")
    ) throws -> CheckpointContents {
        let directory = FileSystem.absolute(path)
        let configObject = try readJSONObject(directory + "/config.json")
        let config = try modelConfig(configObject, directory: directory)
        guard FileSystem.exists(directory + "/tokenizer.json") else {
            throw CheckpointError(.invalidFormat, "\(directory) has no tokenizer.json")
        }

        var located: [String: (file: SharedFile, info: SafetensorsFile.TensorInfo)] = [:]
        for weightPath in try weightFiles(in: directory) {
            let header = try SafetensorsFile.read(path: weightPath)
            let shared = try SharedFile(path: weightPath)
            for tensor in header.tensors {
                guard let name = TensorNameMap.ggufName(for: tensor.name) else { continue }
                if name == tensor.name {
                    logger.warning(
                        "keeping a tensor that is not part of the Llama family layout", metadata: ["tensor": "\(name)"])
                }
                guard located[name] == nil else {
                    throw CheckpointError(
                        .invalidFormat, "tensor `\(tensor.name)` appears in more than one weight file")
                }
                located[name] = (shared, tensor)
            }
        }
        guard let embedding = located["token_embd.weight"] else {
            throw CheckpointError(.invalidFormat, "\(directory) has no model.embed_tokens.weight")
        }
        guard embedding.info.shape == [config.vocabularySize, config.embeddingLength] else {
            throw CheckpointError(
                .invalidFormat,
                "model.embed_tokens.weight has shape \(embedding.info.shape); config.json implies [\(config.vocabularySize), \(config.embeddingLength)]"
            )
        }

        let permute = config.architecture == "llama"
        let tensors = located.keys.sorted { TensorNameMap.order(of: $0) < TensorNameMap.order(of: $1) }.map { name in
            let (file, info) = located[name]!
            var heads = 0
            if permute && (name.hasSuffix("attn_q.weight") || name.hasSuffix("attn_q.bias")) {
                heads = config.headCount
            }
            if permute && (name.hasSuffix("attn_k.weight") || name.hasSuffix("attn_k.bias")) {
                heads = config.headCountKV
            }
            if heads > 0 {
                return permutedRows(of: file, info: info, name: name, heads: heads)
            }
            return TensorSource.slice(
                of: file, at: Int64(info.offset), name: name, dtype: info.dtype, shape: info.shape,
                byteCount: info.byteCount)
        }

        var files: [(name: String, bytes: [UInt8])] = []
        for name in copiedFiles where FileSystem.exists(directory + "/" + name) {
            let handle = try FileHandle.openForReading(directory + "/" + name)
            let size = try handle.size()
            guard size <= 64 << 20 else {
                throw CheckpointError(.invalidFormat, "\(name) is \(size) bytes, too large for a tokenizer file")
            }
            files.append((name, try handle.readBytes(count: Int(size), at: 0)))
        }
        return CheckpointContents(
            source: source ?? directory, sourceFormat: "safetensors", config: config, metadata: configObject,
            tokenizerFormat: "huggingface", chatTemplate: try chatTemplate(in: directory),
            files: files, tokenizerFiles: files.map(\.name).filter { $0 != "config.json" }, tensors: tensors)
    }

    /// `model.safetensors.index.json`'s files, else every `*.safetensors` in the directory.
    public static func weightFiles(in directory: String) throws -> [String] {
        let indexPath = directory + "/model.safetensors.index.json"
        if FileSystem.exists(indexPath) {
            let index = try readJSONObject(indexPath)
            guard let map = index["weight_map"]?.objectValue else {
                throw CheckpointError(.invalidFormat, "\(indexPath) has no weight_map")
            }
            var names = Set<String>()
            for (_, value) in map {
                guard let file = value.stringValue, !file.contains("/"), !file.hasPrefix("."),
                    file.hasSuffix(".safetensors")
                else {
                    throw CheckpointError(.invalidFormat, "\(indexPath) names an invalid weight file \(value.summary)")
                }
                names.insert(file)
            }
            return names.sorted().map { directory + "/" + $0 }
        }
        let files = try FileSystem.listDirectory(directory).filter {
            $0.hasSuffix(".safetensors") && !$0.hasPrefix(".")
        }
        guard !files.isEmpty else { throw CheckpointError(.invalidFormat, "\(directory) holds no .safetensors files") }
        return files.map { directory + "/" + $0 }
    }

    static func readJSONObject(_ path: String) throws -> [String: JSONValue] {
        guard FileSystem.exists(path) else {
            throw CheckpointError(
                .invalidFormat, "\(FileSystem.directoryName(path)) has no \(FileSystem.baseName(path))")
        }
        let handle = try FileHandle.openForReading(path)
        let size = try handle.size()
        guard size <= 64 << 20 else { throw CheckpointError(.invalidFormat, "\(path) is too large (\(size) bytes)") }
        let bytes = try handle.readBytes(count: Int(size), at: 0)
        guard case .object(let object)? = try? JSONDecoder().decode(JSONValue.self, from: Data(bytes)) else {
            throw CheckpointError(.invalidFormat, "\(path) is not a JSON object")
        }
        return object
    }

    static func modelConfig(_ json: [String: JSONValue], directory: String) throws -> ModelConfig {
        let declared =
            json["architectures"]?.arrayValue?.first?.stringValue ?? json["model_type"]?.stringValue ?? "(none)"
        guard let architecture = architectures[declared] else {
            throw CheckpointError(
                .unsupported,
                "\(directory)/config.json: architecture \(declared) is not supported (supported: \(architectures.keys.sorted().joined(separator: ", ")))"
            )
        }
        let hidden = try integer(json, directory, "hidden_size")
        let heads = try integer(json, directory, "num_attention_heads")
        guard heads > 0 else { throw CheckpointError(.invalidFormat, "config.json: num_attention_heads is 0") }
        let headDimension = try integer(json, directory, "head_dim", default: hidden / heads)
        var scaling: [String: JSONValue]?
        if let object = json["rope_scaling"]?.objectValue {
            scaling = object
            if let type = object["rope_type"] ?? object["type"] { scaling?["type"] = type }
        }
        let config = ModelConfig(
            architecture: architecture,
            vocabularySize: try integer(json, directory, "vocab_size"),
            contextLength: try integer(json, directory, "max_position_embeddings"),
            embeddingLength: hidden,
            feedForwardLength: try integer(json, directory, "intermediate_size"),
            blockCount: try integer(json, directory, "num_hidden_layers"),
            headCount: heads,
            headCountKV: try integer(json, directory, "num_key_value_heads", default: heads),
            headDimension: headDimension,
            rmsNormEpsilon: json["rms_norm_eps"]?.doubleValue ?? 1e-6,
            ropeFrequencyBase: json["rope_theta"]?.doubleValue ?? 10000,
            ropeDimensionCount: headDimension,
            ropeStyle: ModelConfig.ropeStyle(forArchitecture: architecture),
            ropeScaling: scaling,
            tiedEmbeddings: json["tie_word_embeddings"]?.boolValue ?? false)
        try config.validate()
        return config
    }

    private static func integer(
        _ json: [String: JSONValue], _ directory: String, _ key: String, default fallback: Int? = nil
    ) throws -> Int {
        if let value = json[key], value != .null {
            guard let number = value.intValue else {
                throw CheckpointError(.invalidFormat, "config.json: \(key) is \(value.summary), expected an integer")
            }
            return number
        }
        guard let fallback else { throw CheckpointError(.invalidFormat, "\(directory)/config.json lacks \(key)") }
        return fallback
    }

    /// The chat template from `tokenizer_config.json` (string or named list) or `chat_template.jinja`.
    static func chatTemplate(in directory: String) throws -> String? {
        let configPath = directory + "/tokenizer_config.json"
        if FileSystem.exists(configPath) {
            let object = try readJSONObject(configPath)
            if let template = object["chat_template"]?.stringValue { return template }
            if let list = object["chat_template"]?.arrayValue {
                let named = list.compactMap(\.objectValue)
                if let entry = named.first(where: { $0["name"]?.stringValue == "default" }) ?? named.first {
                    return entry["template"]?.stringValue
                }
            }
        }
        let jinjaPath = directory + "/chat_template.jinja"
        if FileSystem.exists(jinjaPath) {
            let handle = try FileHandle.openForReading(jinjaPath)
            return String(decoding: try handle.readBytes(count: Int(try handle.size()), at: 0), as: UTF8.self)
        }
        return nil
    }

    /// A q or k projection with its rows reordered from Hugging Face's half-split RoPE layout to
    /// GGUF's interleaved one: within each head, row `2i + j` of the result is row `j·d/2 + i`
    /// of the source (`d` = rows per head). llama.cpp: `reshape(n_head, 2, d/2, …).swapaxes(1, 2)`.
    static func permutedRows(of file: SharedFile, info: SafetensorsFile.TensorInfo, name: String, heads: Int)
        -> TensorSource
    {
        let rows = info.shape.first ?? 0
        let rowBytes = rows > 0 ? info.byteCount / rows : 0
        let perHead = heads > 0 ? rows / heads : 0
        return TensorSource(name: name, dtype: info.dtype, shape: info.shape, byteCount: info.byteCount) {
            start, buffer in
            guard let base = buffer.baseAddress else { return }
            guard perHead % 2 == 0, perHead * heads == rows else {
                throw CheckpointError(
                    .invalidFormat,
                    "tensor `\(name)` has \(rows) rows, not a whole number of \(heads) heads of even size")
            }
            // Read each head touched by the request in one pread, then place its rows.
            let headBytes = perHead * rowBytes
            var scratch = [UInt8](repeating: 0, count: headBytes)
            let end = start + buffer.count
            var head = start / headBytes
            while head * headBytes < end {
                try scratch.withUnsafeMutableBytes { source in
                    try file.handle.read(
                        into: source.baseAddress!, count: headBytes, at: Int64(info.offset + head * headBytes))
                    for local in 0..<perHead {
                        let rowStart = head * headBytes + local * rowBytes
                        let from = max(rowStart, start)
                        let to = min(rowStart + rowBytes, end)
                        guard from < to else { continue }
                        let sourceRow = (local % 2) * (perHead / 2) + local / 2
                        (base + (from - start)).copyMemory(
                            from: source.baseAddress! + sourceRow * rowBytes + (from - rowStart), byteCount: to - from)
                    }
                }
                head += 1
            }
        }
    }
}
