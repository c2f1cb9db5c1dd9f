import CKernels
import Checkpoint
import Foundation

/// Why the engine refuses a model or a request: the kind, a message naming what was wrong, and
/// the error underneath when there is one.
public struct EngineError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// The checkpoint's architecture, a tensor's dtype or shape is not one the engine runs.
        case unsupportedModel
        /// A prompt plus the tokens to generate does not fit the sequence's context.
        case contextOverflow
        /// A token id outside the vocabulary, an empty prompt where one is needed, bad parameters.
        case invalidInput
        /// The KV-cache memory budget is used up.
        case outOfMemory
        /// The weights could not be loaded while the engine was already serving (a streaming
        /// load that failed a checksum, could not read, or was stopped).
        case weightsUnavailable
    }

    public var kind: Kind
    public var message: String
    /// The error underneath (a tokenizer that cannot be built), kept as a value.
    public var cause: (any Error & Sendable)?
    public var description: String { message }

    public init(_ kind: Kind, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.kind = kind
        self.message = message
        self.cause = cause
    }

    /// Equal kind and message (a cause is detail, not identity).
    public static func == (a: EngineError, b: EngineError) -> Bool { a.kind == b.kind && a.message == b.message }
}

/// One weight matrix as it lies in the loaded checkpoint: `rows` output rows of `columns`
/// inputs each, in GGML's block layout. The engine computes on these bytes in place.
struct Matrix: @unchecked Sendable {
    // Sendable: a read-only view into memory the `ModelWeights` keeps alive.
    var name: String
    var type: Int32
    var data: UnsafeRawPointer
    var rows: Int
    var columns: Int
    var rowBytes: Int
    /// The type activations are converted to for this matrix (GGML's `vec_dot_type`).
    var activationType: Int32
}

/// The weights of one transformer block.
struct Layer: Sendable {
    var attentionNorm: [Float]
    var query: Matrix
    var key: Matrix
    var value: Matrix
    var output: Matrix
    var queryBias: [Float]?
    var keyBias: [Float]?
    var valueBias: [Float]?
    /// Per-head RMS norms of queries and keys before RoPE (Qwen3), one weight per head dimension.
    var queryNorm: [Float]?
    var keyNorm: [Float]?
    var feedForwardNorm: [Float]
    /// Norms of the attention and feed-forward outputs before they join the residual (Gemma 3).
    var attentionPostNorm: [Float]?
    var feedForwardPostNorm: [Float]?
    /// Attention through the sliding window only (`ModelConfig.slidingWindow`).
    var slidingWindow: Bool
    var gate: Matrix
    var up: Matrix
    var down: Matrix
}

/// The architectures the engine runs: decoder-only Llama-family models.
let supportedArchitectures: Set<String> = ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma3"]

/// Weight types with kernels; others are refused at start-up with their name.
let supportedWeightTypes: Set<DType> = [
    .f32, .f16, .bf16, .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .iq4_nl, .iq4_xs,
]

/// All weights of a model, as views into a `LoadedModel` (nothing is copied except the small
/// norm and bias vectors, which are turned into floats).
///
/// Weights still arriving (a streaming load, `ModelWeights.isComplete` false) are checked the
/// same way, every tensor's dtype and shape, but no byte is read: `layers` and `outputNorm` are
/// nil, and the engine builds each layer with `layer(_:of:read:)` once its tensors are in.
struct Weights: Sendable {
    let model: any ModelWeights
    let config: ModelConfig
    let tokenEmbedding: Matrix
    let output: Matrix
    /// Nil while the weights still arrive (then read by the engine when the output needs it).
    let outputNorm: [Float]?
    /// Nil while the weights still arrive (then built by the engine layer by layer).
    let layers: [Layer?]
    /// Per-dimension-pair RoPE frequency divisors (Llama 3's `rope_freqs`), nil when absent.
    let ropeFrequencyFactors: [Float]?
    /// Whether the layers' vectors were left unread because the weights were still arriving.
    let streamed: Bool
    /// The tensors of each layer, what a pass waits for before computing it.
    let layerTensors: [[String]]

    init(model: any ModelWeights) throws(EngineError) {
        let config = model.index.config
        guard supportedArchitectures.contains(config.architecture) else {
            throw EngineError(
                .unsupportedModel,
                "architecture \(config.architecture) is not supported (supported: \(supportedArchitectures.sorted().joined(separator: ", ")))"
            )
        }
        guard config.ropeStyle == "normal" || config.ropeStyle == "neox" else {
            throw EngineError(.unsupportedModel, "rope style \(config.ropeStyle) is not supported")
        }
        self.model = model
        self.config = config
        let read = model.isComplete
        streamed = !read
        let embedding = config.embeddingLength
        tokenEmbedding = try Self.matrix(model, "token_embd.weight", rows: config.vocabularySize, columns: embedding)
        if model.tensor("output.weight") != nil {
            output = try Self.matrix(model, "output.weight", rows: config.vocabularySize, columns: embedding)
        } else {
            output = tokenEmbedding
        }
        let norm = try Self.vector(model, "output_norm.weight", count: embedding, read: read)!
        outputNorm = read ? norm : nil
        // Every layer is checked either way; only weights that are in keep theirs.
        let built = try (0..<config.blockCount).map { i throws(EngineError) in
            try Self.layer(i, of: model, read: read)
        }
        layers = read ? built : Array(repeating: nil, count: config.blockCount)
        var byLayer = [[String]](repeating: [], count: config.blockCount)
        for tensor in model.index.tensors where tensor.name.hasPrefix("blk.") {
            let rest = tensor.name.dropFirst(4)
            if let dot = rest.firstIndex(of: "."), let i = Int(rest[..<dot]), byLayer.indices.contains(i) {
                byLayer[i].append(tensor.name)
            }
        }
        layerTensors = byLayer
        // RoPE factors are needed by every pass from the start; the checkpoint lays them first.
        if !read && model.tensor("rope_freqs.weight") != nil {
            try Self.waitFor(["rope_freqs.weight"], of: model)
        }
        ropeFrequencyFactors =
            try Self.vector(model, "rope_freqs.weight", count: config.ropeDimensionCount / 2, optional: true)
            ?? Weights.llama3FrequencyFactors(config)
    }

    /// Blocks until `names` have arrived (a streaming load); a load that failed is reported as
    /// weights that are unavailable, naming the model and the cause.
    static func waitFor(_ names: [String], of model: any ModelWeights) throws(EngineError) {
        try loading(model) { try model.waitForTensors(names) }
    }

    /// Blocks until the first `count` bytes of tensor `name` are read, unverified
    /// (`ModelWeights.waitForReadBytes`); false when the weights cannot tell.
    static func waitForRead(_ name: String, count: Int, of model: any ModelWeights) throws(EngineError) -> Bool {
        try loading(model) { try model.waitForReadBytes(of: name, count: count) }
    }

    /// Runs a wait on a streaming load; its failure becomes weights that are unavailable.
    private static func loading<Value>(_ model: any ModelWeights, _ wait: () throws -> Value) throws(EngineError)
        -> Value
    {
        do {
            return try wait()
        } catch {
            throw EngineError(
                .weightsUnavailable, "the weights of \(model.name) did not load: \(error)",
                cause: error)
        }
    }

    /// The `rows` × `columns` weight matrix `name`, checked against the type and shape it must have.
    static func matrix(_ model: any ModelWeights, _ name: String, rows: Int, columns: Int) throws(EngineError)
        -> Matrix
    {
        guard let view = model.tensor(name) else {
            throw EngineError(.unsupportedModel, "tensor \(name) is missing from the checkpoint")
        }
        guard supportedWeightTypes.contains(view.dtype) else {
            throw EngineError(
                .unsupportedModel,
                "tensor \(name) has dtype \(view.dtype.name), which the engine does not compute on (supported: \(supportedWeightTypes.map(\.name).sorted().joined(separator: ", ")))"
            )
        }
        guard view.shape == [rows, columns] else {
            throw EngineError(
                .unsupportedModel, "tensor \(name) has shape \(view.shape), expected [\(rows), \(columns)]")
        }
        let type = Int32(view.dtype.rawValue)
        guard columns % view.dtype.blockSize == 0 else {
            throw EngineError(
                .unsupportedModel, "tensor \(name): \(columns) columns are not whole \(view.dtype.name) blocks")
        }
        let rowBytes = sllm_row_bytes(type, Int64(columns))
        guard rowBytes * rows == view.bytes.count, let base = view.bytes.baseAddress else {
            throw EngineError(
                .unsupportedModel, "tensor \(name) holds \(view.bytes.count) bytes, expected \(rowBytes * rows)")
        }
        return Matrix(
            name: name, type: type, data: base, rows: rows, columns: columns, rowBytes: rowBytes,
            activationType: sllm_activation_type(type))
    }

    /// Consecutive row ranges of one fused matrix (Phi-3's `attn_qkv`, its gate+up `ffn_up`),
    /// each a view into the same bytes: nothing is copied.
    static func split(_ model: any ModelWeights, _ name: String, rows: [Int], columns: Int) throws(EngineError)
        -> [Matrix]
    {
        let whole = try matrix(model, name, rows: rows.reduce(0, +), columns: columns)
        var start = 0
        return rows.map { count in
            defer { start += count }
            var part = whole
            part.data = whole.data + start * whole.rowBytes
            part.rows = count
            return part
        }
    }

    /// The vector `name` as floats, or nil when it is optional and absent; with `read` false it
    /// is only checked, and an empty array stands for it.
    static func vector(
        _ model: any ModelWeights, _ name: String, count: Int, optional: Bool = false, read: Bool = true
    ) throws(EngineError) -> [Float]? {
        guard let view = model.tensor(name) else {
            if optional { return nil }
            throw EngineError(.unsupportedModel, "tensor \(name) is missing from the checkpoint")
        }
        guard [DType.f32, .f16, .bf16].contains(view.dtype), view.shape.reduce(1, *) == count,
            view.bytes.count == count * view.dtype.blockBytes, let base = view.bytes.baseAddress
        else {
            throw EngineError(
                .unsupportedModel,
                "tensor \(name) (\(view.dtype.name) \(view.shape)) is not a vector of \(count) floats")
        }
        guard read else { return [] }
        var values = [Float](repeating: 0, count: count)
        values.withUnsafeMutableBufferPointer {
            sllm_dequantize_row(Int32(view.dtype.rawValue), base, $0.baseAddress, Int64(count))
        }
        return values
    }

    /// Transformer block `i`: its matrices, and its vectors read when `read` is set.
    static func layer(_ i: Int, of model: any ModelWeights, read: Bool) throws(EngineError) -> Layer {
        let config = model.index.config
        let embedding = config.embeddingLength
        let qDim = config.headCount * config.headDimension
        let kvDim = config.headCountKV * config.headDimension
        let p = "blk.\(i)."
        let ffnLength = config.feedForwardLength
        // Phi-3 fuses q/k/v into one matrix and gate/up into another (gate first).
        let fused = config.architecture == "phi3"
        let gemma = config.architecture == "gemma3"
        let headNorms = config.architecture == "qwen3" || gemma
        let qkv =
            fused
            ? try split(model, p + "attn_qkv.weight", rows: [qDim, kvDim, kvDim], columns: embedding)
            : [
                try matrix(model, p + "attn_q.weight", rows: qDim, columns: embedding),
                try matrix(model, p + "attn_k.weight", rows: kvDim, columns: embedding),
                try matrix(model, p + "attn_v.weight", rows: kvDim, columns: embedding),
            ]
        let gateUp =
            fused
            ? try split(model, p + "ffn_up.weight", rows: [ffnLength, ffnLength], columns: embedding)
            : [
                try matrix(model, p + "ffn_gate.weight", rows: ffnLength, columns: embedding),
                try matrix(model, p + "ffn_up.weight", rows: ffnLength, columns: embedding),
            ]
        func vector(_ name: String, count: Int, optional: Bool = false) throws(EngineError) -> [Float]? {
            try Self.vector(model, p + name, count: count, optional: optional, read: read)
        }
        return Layer(
            attentionNorm: try vector("attn_norm.weight", count: embedding)!,
            query: qkv[0], key: qkv[1], value: qkv[2],
            output: try matrix(model, p + "attn_output.weight", rows: embedding, columns: qDim),
            queryBias: try vector("attn_q.bias", count: qDim, optional: true),
            keyBias: try vector("attn_k.bias", count: kvDim, optional: true),
            valueBias: try vector("attn_v.bias", count: kvDim, optional: true),
            queryNorm: try vector("attn_q_norm.weight", count: config.headDimension, optional: !headNorms),
            keyNorm: try vector("attn_k_norm.weight", count: config.headDimension, optional: !headNorms),
            feedForwardNorm: try vector("ffn_norm.weight", count: embedding)!,
            attentionPostNorm: try vector("post_attention_norm.weight", count: embedding, optional: !gemma),
            feedForwardPostNorm: try vector("post_ffw_norm.weight", count: embedding, optional: !gemma),
            slidingWindow: config.usesSlidingWindow(layer: i),
            gate: gateUp[0], up: gateUp[1],
            down: try matrix(model, p + "ffn_down.weight", rows: embedding, columns: config.feedForwardLength))
    }

    /// Llama 3.1's rope scaling computed from the config (what llama.cpp's converter stores as
    /// `rope_freqs` for GGUF files), for checkpoints converted from Hugging Face.
    static func llama3FrequencyFactors(_ config: ModelConfig) -> [Float]? {
        guard let scaling = config.ropeScaling,
            scaling["type"]?.stringValue == "llama3" || scaling["rope_type"]?.stringValue == "llama3"
        else {
            return nil
        }
        let factor = scaling["factor"]?.doubleValue ?? 8
        let lowFactor = scaling["low_freq_factor"]?.doubleValue ?? 1
        let highFactor = scaling["high_freq_factor"]?.doubleValue ?? 4
        let original = scaling["original_max_position_embeddings"]?.doubleValue ?? 8192
        let lowWavelength = original / lowFactor
        let highWavelength = original / highFactor
        let dims = config.ropeDimensionCount
        return stride(from: 0, to: dims, by: 2).map { i in
            let frequency = 1 / pow(config.ropeFrequencyBase, Double(i) / Double(dims))
            let wavelength = 2 * Double.pi / frequency
            if wavelength < highWavelength { return 1 }
            if wavelength > lowWavelength { return Float(factor) }
            let smooth = (original / wavelength - lowFactor) / (highFactor - lowFactor)
            return Float(1 / ((1 - smooth) / factor + smooth))
        }
    }

    /// How positions become RoPE angles beyond the base frequencies: linear interpolation, or
    /// YaRN (interpolation blended with extrapolation across the dimensions, magnitude corrected),
    /// with GGML's formulas (`rope_yarn`, `ggml_rope_yarn_corr_dims`).
    struct RopeScaling: Sendable {
        /// Angles are multiplied by this (1/factor for linear and YaRN).
        var frequencyScale: Float = 1
        /// YaRN: the dimension-pair range over which extrapolation ramps into interpolation.
        var correctionDims: (low: Float, high: Float)?
        /// cos/sin are multiplied by this (YaRN's 1 + 0.1·ln(factor), times the model's attention factor).
        var magnitude: Float = 1

        init(_ config: ModelConfig) throws(EngineError) {
            guard let scaling = config.ropeScaling else { return }
            let type = scaling["type"]?.stringValue ?? scaling["rope_type"]?.stringValue ?? "none"
            let factor = scaling["factor"]?.doubleValue ?? 1
            switch type {
            case "none", "default", "llama3": return
            case "linear", "yarn":
                guard factor > 0 else {
                    throw EngineError(.unsupportedModel, "rope scaling factor \(factor) is not positive")
                }
                frequencyScale = Float(1 / factor)
            default:
                throw EngineError(
                    .unsupportedModel, "rope scaling type \(type) is not supported (supported: linear, llama3, yarn)")
            }
            guard type == "yarn" else { return }
            if let multiplier = scaling["yarn_log_multiplier"]?.doubleValue ?? scaling["mscale_all_dim"]?.doubleValue,
                multiplier != 0
            {
                throw EngineError(
                    .unsupportedModel, "YaRN with a log multiplier (DeepSeek-style mscale) is not supported")
            }
            let original = Float(
                scaling["original_context_length"]?.doubleValue ?? scaling["original_max_position_embeddings"]?
                    .doubleValue
                    ?? Double(config.contextLength) / factor)
            let betaFast = Float(scaling["yarn_beta_fast"]?.doubleValue ?? scaling["beta_fast"]?.doubleValue ?? 32)
            let betaSlow = Float(scaling["yarn_beta_slow"]?.doubleValue ?? scaling["beta_slow"]?.doubleValue ?? 1)
            let dims = Float(config.ropeDimensionCount), base = Float(config.ropeFrequencyBase)
            func correctionDim(_ rotations: Float) -> Float {
                dims * logf(original / (rotations * 2 * Float.pi)) / (2 * logf(base))
            }
            correctionDims = (max(0, floorf(correctionDim(betaFast))), min(dims - 1, ceilf(correctionDim(betaSlow))))
            let attentionFactor = Float(
                scaling["attn_factor"]?.doubleValue ?? scaling["attention_factor"]?.doubleValue ?? 1)
            magnitude = attentionFactor * (1 + 0.1 * logf(1 / frequencyScale))
        }

        /// cos and sin of dimension pair `i` at the unscaled angle `theta` (position × base^(−2i/d),
        /// already divided by any per-pair frequency factor).
        func rotation(_ theta: Float, pair i: Int) -> (cos: Float, sin: Float) {
            let interpolated = frequencyScale * theta
            guard let (low, high) = correctionDims else {
                return (cosf(interpolated) * magnitude, sinf(interpolated) * magnitude)
            }
            let y = (Float(i) - low) / max(0.001, high - low)
            let ramp = 1 - min(1, max(0, y))
            let angle = interpolated * (1 - ramp) + theta * ramp
            return (cosf(angle) * magnitude, sinf(angle) * magnitude)
        }
    }
}
