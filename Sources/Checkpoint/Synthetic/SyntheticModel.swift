import Foundation

/// Writes Llama-shaped Hugging Face model directories with pseudo-random weights, for
/// benchmarks at sizes no shipped model covers and for converter tests.
public enum SyntheticModel {
    /// The shape of a synthetic model.
    public struct Shape: Sendable {
        public var vocabularySize = 32000
        public var hiddenSize = 2048
        public var intermediateSize = 5632
        public var layers = 22
        public var heads = 32
        public var kvHeads = 4
        public var tiedEmbeddings = false

        public init() {}

        /// Bytes of one layer in F16.
        var layerByteCount: Int {
            let headDimension = hiddenSize / heads
            let attention = 2 * hiddenSize * hiddenSize + 2 * hiddenSize * kvHeads * headDimension
            return 2 * (attention + 3 * hiddenSize * intermediateSize + 2 * hiddenSize)
        }

        /// A TinyLlama-like shape with as many layers as fit in `byteCount` of F16 weights.
        public static func sized(_ byteCount: Int) -> Shape {
            var shape = Shape()
            let embeddings = 2 * 2 * shape.vocabularySize * shape.hiddenSize
            shape.layers = max(1, (byteCount - embeddings) / shape.layerByteCount)
            return shape
        }

        /// A tiny shape for tests.
        public static var tiny: Shape {
            var shape = Shape()
            shape.vocabularySize = 64
            shape.hiddenSize = 32
            shape.intermediateSize = 64
            shape.layers = 2
            shape.heads = 4
            shape.kvHeads = 2
            return shape
        }
    }

    /// Writes `config.json`, `tokenizer.json`, `tokenizer_config.json` and `model.safetensors`
    /// (F16, row-major) into `directory`, which is created.
    ///
    /// - Returns: the bytes of tensor data written.
    @discardableResult
    public static func writeHuggingFaceDirectory(_ directory: String, shape: Shape, seed: UInt64 = 1) throws -> Int {
        try FileSystem.makeDirectories(directory)
        let headDimension = shape.hiddenSize / shape.heads
        let config: [String: Any] = [
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": shape.vocabularySize,
            "hidden_size": shape.hiddenSize, "intermediate_size": shape.intermediateSize,
            "num_hidden_layers": shape.layers, "num_attention_heads": shape.heads,
            "num_key_value_heads": shape.kvHeads, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "tie_word_embeddings": shape.tiedEmbeddings, "torch_dtype": "float16",
        ]
        try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]).write(
            to: URL(fileURLWithPath: directory + "/config.json"))
        let tokenizer = #"{"version":"1.0","added_tokens":[],"model":{"type":"BPE","vocab":{"a":0,"b":1},"merges":[]}}"#
        try Data(tokenizer.utf8).write(to: URL(fileURLWithPath: directory + "/tokenizer.json"))
        let tokenizerConfig =
            #"{"chat_template":"{% for m in messages %}{{ m['content'] }}{% endfor %}","bos_token":"a","eos_token":"b"}"#
        try Data(tokenizerConfig.utf8).write(to: URL(fileURLWithPath: directory + "/tokenizer_config.json"))

        var tensors: [(String, [Int])] = [("model.embed_tokens.weight", [shape.vocabularySize, shape.hiddenSize])]
        for layer in 0..<shape.layers {
            let p = "model.layers.\(layer)."
            tensors += [
                (p + "input_layernorm.weight", [shape.hiddenSize]),
                (p + "self_attn.q_proj.weight", [shape.heads * headDimension, shape.hiddenSize]),
                (p + "self_attn.k_proj.weight", [shape.kvHeads * headDimension, shape.hiddenSize]),
                (p + "self_attn.v_proj.weight", [shape.kvHeads * headDimension, shape.hiddenSize]),
                (p + "self_attn.o_proj.weight", [shape.hiddenSize, shape.heads * headDimension]),
                (p + "post_attention_layernorm.weight", [shape.hiddenSize]),
                (p + "mlp.gate_proj.weight", [shape.intermediateSize, shape.hiddenSize]),
                (p + "mlp.up_proj.weight", [shape.intermediateSize, shape.hiddenSize]),
                (p + "mlp.down_proj.weight", [shape.hiddenSize, shape.intermediateSize]),
            ]
        }
        tensors.append(("model.norm.weight", [shape.hiddenSize]))
        if !shape.tiedEmbeddings { tensors.append(("lm_head.weight", [shape.vocabularySize, shape.hiddenSize])) }
        return try writeSafetensors(directory + "/model.safetensors", tensors: tensors, seed: seed)
    }

    /// Writes an F16 safetensors file with pseudo-random contents. Returns the data bytes.
    @discardableResult
    public static func writeSafetensors(_ path: String, tensors: [(name: String, shape: [Int])], seed: UInt64) throws
        -> Int
    {
        let prefix = try SafetensorsFile.header(
            for: tensors.map { ($0.name, "F16", $0.shape, $0.shape.reduce(2, *)) }, metadata: ["format": "pt"])
        let dataBytes = tensors.reduce(0) { $0 + $1.shape.reduce(2, *) }
        let file = try FileHandle.create(path)
        try prefix.withUnsafeBytes { try file.write($0, at: 0) }
        let chunk = UnsafeAlignedBuffer(byteCount: 16 << 20)
        var state = seed | 1
        var written = 0
        while written < dataBytes {
            let count = min(chunk.byteCount, dataBytes - written)
            let words = chunk.base.bindMemory(to: UInt64.self, capacity: chunk.byteCount / 8)
            for i in 0..<(count + 7) / 8 {
                state ^= state << 13
                state ^= state >> 7
                state ^= state << 17
                words[i] = state & 0x3BFF_3BFF_3BFF_3BFF  // finite F16 values below 1.0
            }
            try file.write(UnsafeRawBufferPointer(start: chunk.base, count: count), at: Int64(prefix.count + written))
            written += count
        }
        try file.sync()
        return dataBytes
    }
}
