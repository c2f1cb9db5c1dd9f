/// Maps Hugging Face Llama-family tensor names to GGUF's, so the engine sees one convention.
enum TensorNameMap {
    private static let layerSuffixes: [(hf: String, gguf: String)] = [
        ("input_layernorm.weight", "attn_norm.weight"),
        ("self_attn.q_proj.weight", "attn_q.weight"),
        ("self_attn.q_proj.bias", "attn_q.bias"),
        ("self_attn.k_proj.weight", "attn_k.weight"),
        ("self_attn.k_proj.bias", "attn_k.bias"),
        ("self_attn.v_proj.weight", "attn_v.weight"),
        ("self_attn.v_proj.bias", "attn_v.bias"),
        ("self_attn.o_proj.weight", "attn_output.weight"),
        ("self_attn.o_proj.bias", "attn_output.bias"),
        ("self_attn.qkv_proj.weight", "attn_qkv.weight"),
        ("mlp.gate_up_proj.weight", "ffn_up.weight"),
        ("self_attn.q_norm.weight", "attn_q_norm.weight"),
        ("self_attn.k_norm.weight", "attn_k_norm.weight"),
        ("post_attention_layernorm.weight", "ffn_norm.weight"),
        ("mlp.gate_proj.weight", "ffn_gate.weight"),
        ("mlp.up_proj.weight", "ffn_up.weight"),
        ("mlp.down_proj.weight", "ffn_down.weight"),
    ]

    /// The GGUF name for `name`, nil for tensors that are derived and dropped (`rotary_emb.inv_freq`),
    /// or `name` itself when it is not a known Llama-family tensor.
    static func ggufName(for name: String) -> String? {
        if name.hasSuffix("rotary_emb.inv_freq") { return nil }
        switch name {
        case "model.embed_tokens.weight": return "token_embd.weight"
        case "model.norm.weight": return "output_norm.weight"
        case "lm_head.weight": return "output.weight"
        default: break
        }
        let prefix = "model.layers."
        guard name.hasPrefix(prefix) else { return name }
        let rest = name.dropFirst(prefix.count)
        guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]) else { return name }
        let suffix = rest[rest.index(after: dot)...]
        guard let match = layerSuffixes.first(where: { $0.hf == suffix }) else { return name }
        return "blk.\(layer).\(match.gguf)"
    }

    /// Sort key that lays tensors out in the order a forward pass waits for them, so a load that
    /// streams (serve while loading) hands out each layer just before the pass needs it. The
    /// token embeddings go last: a pass needs only its prompt's rows of them first (read on
    /// their own, `ModelWeights.unverifiedBytes`), and the whole matrix only for the output,
    /// which it also is in models that tie them (often the largest tensor: 65% of Gemma 3 270M).
    static func order(of name: String) -> (Int, Int, String) {
        if name == "rope_freqs.weight" { return (0, 0, name) }
        if name == "token_embd.weight" { return (Int.max, 0, name) }
        if name.hasPrefix("blk."), let dot = name.dropFirst(4).firstIndex(of: "."),
            let layer = Int(name.dropFirst(4)[..<dot]), (0..<1_000_000).contains(layer)
        {
            let suffix = String(name[name.index(after: dot)...])
            let position = layerSuffixes.firstIndex { $0.gguf == suffix } ?? layerSuffixes.count
            return (1 + layer, position, name)
        }
        if name == "output_norm.weight" { return (Int.max - 2, 0, name) }
        if name == "output.weight" { return (Int.max - 1, 0, name) }
        return (Int.max - 3, 0, name)
    }
}
