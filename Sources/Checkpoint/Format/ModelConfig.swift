/// The architecture of a model, normalised from GGUF metadata or a Hugging Face `config.json`.
///
/// Names follow GGUF's `{arch}.*` keys. Tensor names in a checkpoint follow GGUF's convention
/// (`token_embd.weight`, `blk.N.attn_q.weight`, …) whatever the source was.
public struct ModelConfig: Codable, Equatable, Sendable {
    /// `llama` (also Mistral, SmolLM), `qwen2`, … as GGUF's `general.architecture`.
    public var architecture: String
    public var vocabularySize: Int
    public var contextLength: Int
    public var embeddingLength: Int
    public var feedForwardLength: Int
    public var blockCount: Int
    public var headCount: Int
    public var headCountKV: Int
    /// Dimension of one attention head (`embeddingLength / headCount` unless the config says otherwise).
    public var headDimension: Int
    public var rmsNormEpsilon: Double
    public var ropeFrequencyBase: Double
    /// Number of dimensions of each head that RoPE rotates.
    public var ropeDimensionCount: Int
    /// `normal` (interleaved pairs, GGUF's llama convention) or `neox` (halves, Qwen2 and friends).
    public var ropeStyle: String
    /// Rope scaling as the source gave it (`type`, `factor`, …), nil when absent.
    public var ropeScaling: [String: JSONValue]?
    /// True when the output projection reuses the token embedding.
    public var tiedEmbeddings: Bool
    /// Sliding-window attention: the window (a query at position p sees keys at positions above
    /// p − window), nil when every layer attends to the whole context.
    public var slidingWindow: Int?
    /// Which layers use the sliding window (one flag per block); nil with a window means all.
    public var slidingWindowLayers: [Bool]?
    /// The RoPE base of sliding-window layers when it differs from `ropeFrequencyBase` (Gemma 3's
    /// local layers use 10 000, its global ones 1 000 000).
    public var ropeFrequencyBaseSWA: Double?

    public init(
        architecture: String, vocabularySize: Int, contextLength: Int, embeddingLength: Int,
        feedForwardLength: Int, blockCount: Int, headCount: Int, headCountKV: Int, headDimension: Int,
        rmsNormEpsilon: Double, ropeFrequencyBase: Double, ropeDimensionCount: Int, ropeStyle: String,
        ropeScaling: [String: JSONValue]?, tiedEmbeddings: Bool, slidingWindow: Int? = nil,
        slidingWindowLayers: [Bool]? = nil, ropeFrequencyBaseSWA: Double? = nil
    ) {
        self.architecture = architecture
        self.vocabularySize = vocabularySize
        self.contextLength = contextLength
        self.embeddingLength = embeddingLength
        self.feedForwardLength = feedForwardLength
        self.blockCount = blockCount
        self.headCount = headCount
        self.headCountKV = headCountKV
        self.headDimension = headDimension
        self.rmsNormEpsilon = rmsNormEpsilon
        self.ropeFrequencyBase = ropeFrequencyBase
        self.ropeDimensionCount = ropeDimensionCount
        self.ropeStyle = ropeStyle
        self.ropeScaling = ropeScaling
        self.tiedEmbeddings = tiedEmbeddings
        self.slidingWindow = slidingWindow
        self.slidingWindowLayers = slidingWindowLayers
        self.ropeFrequencyBaseSWA = ropeFrequencyBaseSWA
    }

    /// Whether block `layer` attends through the sliding window.
    public func usesSlidingWindow(layer: Int) -> Bool {
        guard slidingWindow != nil else { return false }
        guard let layers = slidingWindowLayers, layer < layers.count else { return true }
        return layers[layer]
    }

    /// The RoPE convention GGML uses for an architecture.
    public static func ropeStyle(forArchitecture architecture: String) -> String {
        switch architecture {
        case "llama", "mistral", "baichuan", "deci", "granite": "normal"
        default: "neox"
        }
    }

    /// Rejects values no real model has, so that later allocations are bounded.
    func validate() throws(CheckpointError) {
        func check(_ value: Int, _ name: String, _ range: ClosedRange<Int>) throws(CheckpointError) {
            guard range.contains(value) else {
                throw CheckpointError.format(
                    "model config: \(name) = \(value) is outside \(range.lowerBound)...\(range.upperBound)")
            }
        }
        try check(vocabularySize, "vocabulary size", 1...(1 << 24))
        try check(contextLength, "context length", 1...(1 << 24))
        try check(embeddingLength, "embedding length", 1...(1 << 20))
        try check(feedForwardLength, "feed-forward length", 1...(1 << 22))
        try check(blockCount, "block count", 1...4096)
        try check(headCount, "head count", 1...4096)
        try check(headCountKV, "key/value head count", 1...headCount)
        try check(headDimension, "head dimension", 1...(1 << 16))
        try check(ropeDimensionCount, "rope dimension count", 0...headDimension)
        if let slidingWindow { try check(slidingWindow, "sliding window", 1...(1 << 24)) }
        if let layers = slidingWindowLayers, layers.count != blockCount {
            throw CheckpointError.format(
                "model config: \(layers.count) sliding-window layer flags for \(blockCount) blocks")
        }
        if let base = ropeFrequencyBaseSWA, !(base > 0) {
            throw CheckpointError.format("model config: sliding-window rope base \(base) is out of range")
        }
        guard headCount % headCountKV == 0 else {
            throw CheckpointError.format(
                "model config: \(headCount) heads are not a multiple of \(headCountKV) key/value heads")
        }
        guard rmsNormEpsilon > 0, rmsNormEpsilon < 1, ropeFrequencyBase > 0 else {
            throw CheckpointError.format(
                "model config: rms_norm_eps \(rmsNormEpsilon) or rope base \(ropeFrequencyBase) is out of range")
        }
    }
}
