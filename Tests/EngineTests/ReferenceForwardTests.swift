import Checkpoint
import Foundation
import Store
import TestSupport
import Testing
import Tokenizers

@testable import Engine

/// Hugging Face checkpoints, converted and run by the engine, against a plain double-precision
/// forward pass written the way Hugging Face's modeling code computes it (unpermuted q/k weights,
/// rotate-half RoPE). Llama's q/k rows are permuted at conversion into GGUF's interleaved order;
/// if that permutation or the RoPE convention were wrong, the logits would disagree by whole units.
@Suite struct ReferenceForwardTests {
    struct Tiny {
        var architecture: String
        /// YaRN rope scaling (factor 4 over an original context of 16), as in long-context Qwen2.5.
        var yarn = false
        /// Llama 3.1's rope scaling (factor 8, original context 16).
        var llama3 = false
        var hidden = 64, heads = 4, kvHeads = 2, ffn = 96, layers = 2, vocabulary = 48
        /// Qwen3 declares a head dimension of its own (here wider than hidden / heads).
        var headDim: Int { qkNorms ? 32 : hidden / heads }
        var biases: Bool { architecture == "Qwen2ForCausalLM" }
        /// Per-head query and key RMS norms before RoPE (Qwen3).
        var qkNorms: Bool { architecture == "Qwen3ForCausalLM" }
        /// q/k/v in one matrix, gate and up in another, gate first (Phi-3).
        var fused: Bool { architecture == "Phi3ForCausalLM" }
    }

    /// Signed pseudo-random F32 weights, by tensor name.
    static func weights(_ m: Tiny, seed: UInt64) -> [(String, [Int], [Float])] {
        var generator = SeededGenerator(seed: seed)
        func tensor(_ name: String, _ shape: [Int], scale: Float = 0.3, offset: Float = 0) -> (String, [Int], [Float]) {
            (
                name, shape,
                (0..<shape.reduce(1, *)).map { _ in offset + Float.random(in: -scale...scale, using: &generator) }
            )
        }
        var out = [tensor("model.embed_tokens.weight", [m.vocabulary, m.hidden], scale: 1)]
        for l in 0..<m.layers {
            let p = "model.layers.\(l)."
            out.append(tensor(p + "input_layernorm.weight", [m.hidden], scale: 0.2, offset: 1))
            if m.fused {
                out.append(tensor(p + "self_attn.qkv_proj.weight", [(m.heads + 2 * m.kvHeads) * m.headDim, m.hidden]))
            } else {
                out += [
                    tensor(p + "self_attn.q_proj.weight", [m.heads * m.headDim, m.hidden]),
                    tensor(p + "self_attn.k_proj.weight", [m.kvHeads * m.headDim, m.hidden]),
                    tensor(p + "self_attn.v_proj.weight", [m.kvHeads * m.headDim, m.hidden]),
                ]
            }
            out += [
                tensor(p + "self_attn.o_proj.weight", [m.hidden, m.heads * m.headDim]),
                tensor(p + "post_attention_layernorm.weight", [m.hidden], scale: 0.2, offset: 1),
            ]
            out +=
                m.fused
                ? [tensor(p + "mlp.gate_up_proj.weight", [2 * m.ffn, m.hidden])]
                : [
                    tensor(p + "mlp.gate_proj.weight", [m.ffn, m.hidden]),
                    tensor(p + "mlp.up_proj.weight", [m.ffn, m.hidden]),
                ]
            out.append(tensor(p + "mlp.down_proj.weight", [m.hidden, m.ffn]))
            if m.qkNorms {
                out += [
                    tensor(p + "self_attn.q_norm.weight", [m.headDim], scale: 0.5, offset: 1),
                    tensor(p + "self_attn.k_norm.weight", [m.headDim], scale: 0.5, offset: 1),
                ]
            }
            if m.biases {
                out += [
                    tensor(p + "self_attn.q_proj.bias", [m.heads * m.headDim]),
                    tensor(p + "self_attn.k_proj.bias", [m.kvHeads * m.headDim]),
                    tensor(p + "self_attn.v_proj.bias", [m.kvHeads * m.headDim]),
                ]
            }
        }
        out += [
            tensor("model.norm.weight", [m.hidden], scale: 0.2, offset: 1),
            tensor("lm_head.weight", [m.vocabulary, m.hidden]),
        ]
        return out
    }

    static func writeModel(_ m: Tiny, _ tensors: [(String, [Int], [Float])], to directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let config: [String: Any] = [
            "architectures": [m.architecture], "vocab_size": m.vocabulary, "hidden_size": m.hidden,
            "intermediate_size": m.ffn,
            "num_hidden_layers": m.layers, "num_attention_heads": m.heads, "num_key_value_heads": m.kvHeads,
            "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
        ].merging(m.qkNorms ? ["head_dim": m.headDim] : [:]) { a, _ in a }
            .merging(
                m.yarn
                    ? ["rope_scaling": ["type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16]] : [:]
            ) { a, _ in a }
            .merging(
                m.llama3
                    ? [
                        "rope_scaling": [
                            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                            "original_max_position_embeddings": 16,
                        ]
                    ] : [:]
            ) { a, _ in a }
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: directory + "/config.json"))
        let vocab = Dictionary(uniqueKeysWithValues: (0..<m.vocabulary).map { ("t\($0)", $0) })
        let tokenizer: [String: Any] = [
            "model": ["type": "BPE", "vocab": vocab, "merges": [String]()], "added_tokens": [Any](),
        ]
        try JSONSerialization.data(withJSONObject: tokenizer).write(
            to: URL(fileURLWithPath: directory + "/tokenizer.json"))
        var data: [UInt8] = []
        for (_, _, values) in tensors { values.withUnsafeBytes { data += $0 } }
        let header = try SafetensorsFile.header(for: tensors.map { ($0.0, "F32", $0.1, $0.2.count * 4) })
        try writeFile(directory + "/model.safetensors", header + data)
    }

    /// Logits after each position of `tokens`, computed as Hugging Face's modeling code does.
    static func reference(_ m: Tiny, _ tensors: [(String, [Int], [Float])], tokens: [Int]) -> [[Double]] {
        let w = Dictionary(uniqueKeysWithValues: tensors.map { ($0.0, $0.2.map(Double.init)) })
        func matvec(_ name: String, _ x: [Double], rows: Int) -> [Double] {
            let matrix = w[name]!
            let bias = w[name.replacingOccurrences(of: ".weight", with: ".bias")]
            let columns = x.count
            var out = [Double](repeating: 0, count: rows)
            for r in 0..<rows {
                var sum = bias?[r] ?? 0
                for c in 0..<columns { sum += matrix[r * columns + c] * x[c] }
                out[r] = sum
            }
            return out
        }
        /// Qwen3's per-head norm of a query or key vector (`q_norm`, `k_norm`), or the vector as is.
        func headNorm(_ x: [Double], _ name: String) -> [Double] { w[name] == nil ? x : rmsNorm(x, name) }
        func rmsNorm(_ x: [Double], _ name: String) -> [Double] {
            let scale = 1 / (x.reduce(0) { $0 + $1 * $1 } / Double(x.count) + 1e-5).squareRoot()
            return zip(x, w[name]!).map { $0 * scale * $1 }
        }
        // Hugging Face's inverse frequencies (`_compute_yarn_parameters` when YaRN is on).
        let d = m.headDim
        var inverseFrequencies = (0..<(d / 2)).map { 1 / pow(10000, 2 * Double($0) / Double(d)) }
        var magnitude = 1.0
        if m.yarn {
            let factor = 4.0, original = 16.0
            func correction(_ rotations: Double) -> Double {
                Double(d) * log(original / (rotations * 2 * .pi)) / (2 * log(10000))
            }
            let low = max(floor(correction(32)), 0), high = min(ceil(correction(1)), Double(d - 1))
            inverseFrequencies = inverseFrequencies.enumerated().map { i, extrapolated in
                let ramp = min(max((Double(i) - low) / (high == low ? 0.001 : high - low), 0), 1)
                let extrapolationFactor = 1 - ramp
                return extrapolated / factor * (1 - extrapolationFactor) + extrapolated * extrapolationFactor
            }
            magnitude = 0.1 * log(factor) + 1
        }
        if m.llama3 {
            // `_compute_llama3_parameters`: long wavelengths divided by the factor, short ones kept,
            // the band between smoothed.
            let factor = 8.0, low = 1.0, high = 4.0, original = 16.0
            inverseFrequencies = inverseFrequencies.map { frequency in
                let wavelength = 2 * .pi / frequency
                if wavelength < original / high { return frequency }
                if wavelength > original / low { return frequency / factor }
                let smooth = (original / wavelength - low) / (high - low)
                return (1 - smooth) * frequency / factor + smooth * frequency
            }
        }
        func rotateHalf(_ head: [Double], position: Int) -> [Double] {
            let half = head.count / 2
            var out = head
            for i in 0..<half {
                let angle = Double(position) * inverseFrequencies[i]
                let (c, s) = (cos(angle) * magnitude, sin(angle) * magnitude)
                out[i] = head[i] * c - head[i + half] * s
                out[i + half] = head[i + half] * c + head[i] * s
            }
            return out
        }
        let hd = m.headDim
        var keys = [[[Double]]](repeating: [], count: m.layers), values = [[[Double]]](repeating: [], count: m.layers)
        var logits: [[Double]] = []
        for (position, token) in tokens.enumerated() {
            var x = Array(w["model.embed_tokens.weight"]![(token * m.hidden)..<((token + 1) * m.hidden)])
            for l in 0..<m.layers {
                let p = "model.layers.\(l)."
                let xn = rmsNorm(x, p + "input_layernorm.weight")
                let q: [Double], k: [Double], v: [Double]
                if m.fused {
                    let qkv = matvec(p + "self_attn.qkv_proj.weight", xn, rows: (m.heads + 2 * m.kvHeads) * hd)
                    let (qEnd, kEnd) = (m.heads * hd, (m.heads + m.kvHeads) * hd)
                    (q, k, v) = (Array(qkv[..<qEnd]), Array(qkv[qEnd..<kEnd]), Array(qkv[kEnd...]))
                } else {
                    q = matvec(p + "self_attn.q_proj.weight", xn, rows: m.heads * hd)
                    k = matvec(p + "self_attn.k_proj.weight", xn, rows: m.kvHeads * hd)
                    v = matvec(p + "self_attn.v_proj.weight", xn, rows: m.kvHeads * hd)
                }
                keys[l].append(
                    (0..<m.kvHeads).flatMap {
                        rotateHalf(
                            headNorm(Array(k[($0 * hd)..<(($0 + 1) * hd)]), p + "self_attn.k_norm.weight"),
                            position: position)
                    })
                values[l].append(v)
                var attention: [Double] = []
                for h in 0..<m.heads {
                    let qh = rotateHalf(
                        headNorm(Array(q[(h * hd)..<((h + 1) * hd)]), p + "self_attn.q_norm.weight"), position: position
                    )
                    let g = h / (m.heads / m.kvHeads)
                    let scores = keys[l].map { key -> Double in
                        var dot = 0.0
                        for d in 0..<hd { dot += qh[d] * key[g * hd + d] }
                        return dot / Double(hd).squareRoot()
                    }
                    let top = scores.max()!
                    let weights = scores.map { exp($0 - top) }
                    let total = weights.reduce(0, +)
                    for d in 0..<hd {
                        var sum = 0.0
                        for (weight, value) in zip(weights, values[l]) { sum += weight * value[g * hd + d] }
                        attention.append(sum / total)
                    }
                }
                x = zip(x, matvec(p + "self_attn.o_proj.weight", attention, rows: m.hidden)).map(+)
                let xn2 = rmsNorm(x, p + "post_attention_layernorm.weight")
                let gate: [Double], up: [Double]
                if m.fused {
                    // Phi3MLP: `gate, up = gate_up_proj(x).chunk(2)`.
                    let both = matvec(p + "mlp.gate_up_proj.weight", xn2, rows: 2 * m.ffn)
                    (gate, up) = (Array(both[..<m.ffn]), Array(both[m.ffn...]))
                } else {
                    gate = matvec(p + "mlp.gate_proj.weight", xn2, rows: m.ffn)
                    up = matvec(p + "mlp.up_proj.weight", xn2, rows: m.ffn)
                }
                let h = zip(gate, up).map { $0 / (1 + exp(-$0)) * $1 }
                x = zip(x, matvec(p + "mlp.down_proj.weight", h, rows: m.hidden)).map(+)
            }
            logits.append(matvec("lm_head.weight", rmsNorm(x, "model.norm.weight"), rows: m.vocabulary))
        }
        return logits
    }

    @Test(arguments: [
        "LlamaForCausalLM", "LlamaForCausalLM+llama3", "Qwen2ForCausalLM", "Qwen2ForCausalLM+yarn", "Qwen3ForCausalLM",
        "Phi3ForCausalLM",
    ])
    func engineLogitsMatchAHuggingFaceStyleForwardPass(variant: String) async throws {
        let architecture = String(variant.prefix { $0 != "+" })
        let directory = try TemporaryDirectory("engine-reference")
        defer { directory.remove() }
        let m = Tiny(architecture: architecture, yarn: variant.hasSuffix("+yarn"), llama3: variant.hasSuffix("+llama3"))
        let tensors = Self.weights(m, seed: 7)
        try Self.writeModel(m, tensors, to: directory.file("src"))
        let store = ModelStore(root: directory.file("home"))
        try Converter.convert(directory.file("src"), to: store.directory(for: try ModelName("m")))
        let loader = ModelLoader(
            store: store,
            cache: try DRAMCache(directory: directory.file("cache"), budgetBytes: 64 << 20, slabBytes: 1 << 20),
            configuration: .init(threads: 1))
        let engine = try Engine(model: try await loader.load(try ModelName("m")))
        #expect(engine.config.ropeStyle == (architecture.hasPrefix("Llama") ? "normal" : "neox"))
        let tokens = [3, 17, 42, 5, 9, 30, 11]
        let expected = Self.reference(m, tensors, tokens: tokens)
        // Token by token, so the logits after every position are compared.
        let sequence = try engine.makeSequence(tokens: [tokens[0]])
        for position in 0..<tokens.count {
            if position > 0 {
                try engine.append([tokens[position]], to: sequence)
            }
            try engine.prefill(sequence)
            let logits = try #require(sequence.logits)
            let scale = expected[position].map(abs).max()!
            let worst = zip(logits, expected[position]).map { abs(Double($0) - $1) }.max()!
            // The engine keeps K/V and attention sums in f16 like llama.cpp: agreement to ~1%.
            #expect(worst <= 0.01 * scale, "\(variant) position \(position): off by \(worst) (largest logit \(scale))")
        }
    }
}
