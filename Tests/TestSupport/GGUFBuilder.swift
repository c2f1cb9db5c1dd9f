/// Builds GGUF files byte by byte, so tests can make valid ones and precisely broken ones.
public struct GGUFBuilder {
    public enum Value {
        case uint32(UInt32)
        case int32(Int32)
        case float32(Float)
        case bool(Bool)
        case string(String)
        case uint64(UInt64)
        case stringArray([String])
        case int32Array([Int32])
        case float32Array([Float])
    }

    public struct Tensor {
        public var name: String
        /// GGML order (innermost first).
        public var dimensions: [UInt64]
        public var type: UInt32
        public var data: [UInt8]
        public init(name: String, dimensions: [UInt64], type: UInt32, data: [UInt8]) {
            self.name = name
            self.dimensions = dimensions
            self.type = type
            self.data = data
        }
    }

    public var version: UInt32 = 3
    public var metadata: [(String, Value)] = []
    public var tensors: [Tensor] = []
    public var alignment = 32

    public init() {}

    /// A tiny but complete Llama model: 1 layer, hidden 32, vocab 8, F32 weights.
    public static func tinyLlama() -> GGUFBuilder {
        var builder = GGUFBuilder()
        builder.metadata = [
            ("general.architecture", .string("llama")),
            ("general.name", .string("tiny")),
            ("llama.context_length", .uint32(128)),
            ("llama.embedding_length", .uint32(32)),
            ("llama.feed_forward_length", .uint32(64)),
            ("llama.block_count", .uint32(1)),
            ("llama.attention.head_count", .uint32(4)),
            ("llama.attention.head_count_kv", .uint32(2)),
            ("llama.attention.layer_norm_rms_epsilon", .float32(1e-5)),
            ("llama.rope.freq_base", .float32(10000)),
            ("tokenizer.ggml.model", .string("gpt2")),
            ("tokenizer.ggml.tokens", .stringArray(["a", "b", "c", "d", "e", "f", "g", "h"])),
            ("tokenizer.ggml.token_type", .int32Array([1, 1, 1, 1, 1, 1, 1, 3])),
            ("tokenizer.ggml.merges", .stringArray(["a b"])),
            ("tokenizer.ggml.eos_token_id", .uint32(7)),
            ("tokenizer.chat_template", .string("{{ messages }}")),
        ]
        func f32(_ count: Int, _ seed: Int) -> [UInt8] {
            var bytes: [UInt8] = []
            for i in 0..<count { withUnsafeBytes(of: Float(i + seed).bitPattern.littleEndian) { bytes += $0 } }
            return bytes
        }
        builder.tensors = [
            Tensor(name: "token_embd.weight", dimensions: [32, 8], type: 0, data: f32(256, 1)),
            Tensor(name: "blk.0.attn_norm.weight", dimensions: [32], type: 0, data: f32(32, 2)),
            Tensor(name: "blk.0.attn_q.weight", dimensions: [32, 32], type: 0, data: f32(1024, 3)),
            Tensor(name: "blk.0.attn_k.weight", dimensions: [32, 16], type: 0, data: f32(512, 4)),
            Tensor(name: "blk.0.attn_v.weight", dimensions: [32, 16], type: 0, data: f32(512, 5)),
            Tensor(name: "blk.0.attn_output.weight", dimensions: [32, 32], type: 0, data: f32(1024, 6)),
            Tensor(name: "blk.0.ffn_norm.weight", dimensions: [32], type: 0, data: f32(32, 7)),
            Tensor(name: "blk.0.ffn_gate.weight", dimensions: [32, 64], type: 0, data: f32(2048, 8)),
            Tensor(name: "blk.0.ffn_up.weight", dimensions: [32, 64], type: 0, data: f32(2048, 9)),
            Tensor(name: "blk.0.ffn_down.weight", dimensions: [64, 32], type: 0, data: f32(2048, 10)),
            Tensor(name: "output_norm.weight", dimensions: [32], type: 0, data: f32(32, 11)),
            // A Q8_0 tensor: 32 elements in one 34-byte block.
            Tensor(name: "extra.q8", dimensions: [32], type: 8, data: (0..<34).map { UInt8($0) }),
        ]
        return builder
    }

    /// The file's bytes. Offsets are computed unless `offsets` overrides them.
    public func build(offsets: [UInt64]? = nil) -> [UInt8] {
        var out: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func str(_ s: String) {
            u64(UInt64(s.utf8.count))
            out += Array(s.utf8)
        }
        u32(0x4655_4747)
        u32(version)
        u64(UInt64(tensors.count))
        u64(UInt64(metadata.count))
        for (key, value) in metadata {
            str(key)
            switch value {
            case .uint32(let v): u32(4); u32(v)
            case .int32(let v): u32(5); u32(UInt32(bitPattern: v))
            case .float32(let v): u32(6); u32(v.bitPattern)
            case .bool(let v): u32(7); out.append(v ? 1 : 0)
            case .string(let v): u32(8); str(v)
            case .uint64(let v): u32(10); u64(v)
            case .stringArray(let v): u32(9); u32(8); u64(UInt64(v.count)); v.forEach(str)
            case .int32Array(let v): u32(9); u32(5); u64(UInt64(v.count)); v.forEach { u32(UInt32(bitPattern: $0)) }
            case .float32Array(let v): u32(9); u32(6); u64(UInt64(v.count)); v.forEach { u32($0.bitPattern) }
            }
        }
        var offset: UInt64 = 0
        var computed: [UInt64] = []
        for tensor in tensors {
            computed.append(offset)
            offset += UInt64((tensor.data.count + alignment - 1) / alignment * alignment)
        }
        for (i, tensor) in tensors.enumerated() {
            str(tensor.name)
            u32(UInt32(tensor.dimensions.count))
            tensor.dimensions.forEach(u64)
            u32(tensor.type)
            u64(offsets?[i] ?? computed[i])
        }
        while out.count % alignment != 0 { out.append(0) }
        for tensor in tensors {
            out += tensor.data
            while out.count % alignment != 0 { out.append(0) }
        }
        return out
    }
}
