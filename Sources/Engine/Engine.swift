public import Checkpoint
import CKernels
import Foundation
import Synchronization
public import Tokenizers

/// A CPU inference engine for Llama-family models, computing on a model's weights in memory (`ModelWeights`: the store's `LoadedModel`) in
/// place. Start-up reads only the small norm vectors; no weight is copied or repacked.
///
/// One forward pass runs at a time (`step` and `prefill` serialize); sequences decode together in
/// one batched pass and may join or leave between steps. The arithmetic is GGML's CPU backend's
/// (activations quantized per 32-block, f16 KV cache, flash-attention style softmax), so greedy
/// output matches llama.cpp token for token, and each token's result does not depend on what
/// else is in the batch.
public final class Engine: @unchecked Sendable {
    // Sendable: all mutable state (scratch, pool) is used under `forwardLock`.
    public struct Options: Sendable {
        /// Compute threads (the caller's included).
        public var threads: Int = max(1, ProcessInfo.processInfo.activeProcessorCount)
        /// Context length of each sequence; nil: the model's.
        public var contextLength: Int?
        /// Most tokens computed in one pass (longer prompts are split).
        public var batchSize: Int = 512
        /// Bytes of KV cache all sequences may hold together.
        public var kvCacheBytes: Int = 2 << 30

        public init() {}
    }

    public let config: ModelConfig
    public let tokenizer: Tokenizer
    public let options: Options
    /// Context length of each sequence.
    public let contextLength: Int
    /// Seconds from `init` entry to ready.
    public let startupSeconds: Double
    let weights: Weights
    let ropeScaling: Weights.RopeScaling
    private let pool: OpaquePointer
    private let forwardLock = NSLock()
    private var scratch = Scratch()
    private let budget: KVBudget
    private let nextID = Atomic<Int>(0)

    public init(model: any ModelWeights, tokenizer: Tokenizer? = nil, options: Options = Options()) throws {
        let start = ContinuousClock.now
        weights = try Weights(model: model)
        config = weights.config
        ropeScaling = try Weights.RopeScaling(config)
        if let tokenizer {
            self.tokenizer = tokenizer
        } else {
            self.tokenizer = try Engine.tokenizer(index: model.index, name: model.name) { Data(try model.fileContents($0)) }
        }
        guard self.tokenizer.vocabularySize <= config.vocabularySize else {
            throw EngineError(.unsupportedModel, "the tokenizer has \(self.tokenizer.vocabularySize) tokens but the model only \(config.vocabularySize) embeddings")
        }
        guard config.headDimension <= 512, config.headDimension % 2 == 0 else {
            throw EngineError(.unsupportedModel, "head dimension \(config.headDimension) is not supported (even, at most 512)")
        }
        self.options = options
        contextLength = max(1, min(options.contextLength ?? config.contextLength, config.contextLength))
        budget = KVBudget(bytesPerPosition: Engine.kvBytesPerPosition(config), limit: options.kvCacheBytes)
        pool = sllm_pool_create(Int32(max(1, options.threads)))
        startupSeconds = (ContinuousClock.now - start).seconds
    }

    deinit { sllm_pool_destroy(pool) }

    /// The tokenizer a checkpoint carries, built from its files (not cached: a server keeps
    /// one per model; see Serving's `TokenizerCache`).
    static func tokenizer(index: CheckpointIndex, name: String, read: (String) throws -> Data) throws -> Tokenizer {
        do {
            return try Tokenizer(checkpoint: index, read: read)
        } catch let error as TokenizerError {
            throw EngineError(.unsupportedModel, "checkpoint \(name): \(error.description)")
        }
    }

    /// Checks what a model file brings that requests would trip over later: its tokenizer (special
    /// token ids inside the vocabulary), a vocabulary that fits the embeddings, and its chat
    /// template, which must parse and render a one-message conversation within the template
    /// interpreter's limits. Used when pulling, so a bad file is refused once, up front.
    public static func validate(_ reader: CheckpointReader) throws {
        let tokenizer = try tokenizer(index: reader.index, name: reader.directory) { Data(try reader.fileContents($0)) }
        let config = reader.index.config
        guard tokenizer.vocabularySize <= config.vocabularySize else {
            throw EngineError(.unsupportedModel, "the tokenizer has \(tokenizer.vocabularySize) tokens but the model only \(config.vocabularySize) embeddings")
        }
        guard tokenizer.chatTemplate != nil else { return }
        do {
            _ = try tokenizer.renderChat([ChatMessage(role: "user", content: "Hello")])
        } catch {
            throw EngineError(.unsupportedModel, "its chat template does not render a one-message conversation: \(error.description)")
        }
    }

    /// Bytes of KV cache one token position takes for a model (f16 keys and values, every layer).
    public static func kvBytesPerPosition(_ config: ModelConfig) -> Int {
        KVCache.bytesPerPosition(layers: config.blockCount, kvDimension: config.headCountKV * config.headDimension)
    }

    /// Compute threads in use.
    public var threads: Int { Int(sllm_pool_threads(pool)) }

    /// Bytes of KV cache held by live sequences.
    public var kvCacheBytesInUse: Int { budget.usedPositions * budget.bytesPerPosition }

    // MARK: - Sequences

    /// A new sequence whose first tokens are `tokens` (pending until the next step/prefill).
    public func makeSequence(tokens: [Int], sampling: SamplingParameters = .greedy) throws(EngineError) -> EngineSequence {
        try makeSequence(tokens: tokens, sampler: Sampler(parameters: sampling))
    }

    /// A sequence that continues `snapshot` exactly as the original would have.
    public func makeSequence(snapshot: SequenceSnapshot) throws(EngineError) -> EngineSequence {
        try makeSequence(tokens: snapshot.tokens, sampler: Sampler(state: snapshot.sampler))
    }

    private func makeSequence(tokens: [Int], sampler: Sampler) throws(EngineError) -> EngineSequence {
        guard !tokens.isEmpty else { throw EngineError(.invalidInput, "a sequence needs at least one token") }
        try validate(tokens)
        guard tokens.count <= contextLength else {
            throw EngineError(.contextOverflow, "\(tokens.count) tokens do not fit the context of \(contextLength)")
        }
        let cache = try KVCache(capacity: contextLength, layers: config.blockCount, kvDimension: config.headCountKV * config.headDimension)
        return EngineSequence(id: nextID.add(1, ordering: .relaxed).newValue, tokens: tokens, sampler: sampler, cache: cache, budget: budget)
    }

    func validate(_ tokens: [Int]) throws(EngineError) {
        if let bad = tokens.first(where: { $0 < 0 || $0 >= config.vocabularySize }) {
            throw EngineError(.invalidInput, "token id \(bad) is outside the vocabulary (0..<\(config.vocabularySize))")
        }
    }

    /// Adds tokens to a sequence (checked against the vocabulary and its context).
    public func append(_ tokens: [Int], to sequence: EngineSequence) throws(EngineError) {
        try validate(tokens)
        guard sequence.tokens.count + tokens.count <= sequence.capacity else {
            throw EngineError(.contextOverflow, "\(sequence.tokens.count + tokens.count) tokens do not fit the context of \(sequence.capacity)")
        }
        sequence.append(tokens)
    }

    /// Cuts a sequence back to its first `count` tokens (a conversation whose next prompt shares
    /// only a prefix with what was computed); the cache beyond is reused for the new tokens.
    public func truncate(_ sequence: EngineSequence, to count: Int) {
        forwardLock.lock()
        defer { forwardLock.unlock() }
        let keep = max(0, min(count, sequence.tokens.count))
        // The last kept token is computed again so that the next step has its logits.
        let cached = max(0, keep - 1)
        if sequence.cachedCount > cached {
            budget.release(sequence.cachedCount - cached)
            sequence.cachedCount = cached
        }
        sequence.logits = nil
        sequence.truncate(to: keep)
    }

    /// Starts a new prompt on a finished sequence, keeping the KV cache of the prefix they share
    /// (a server's prompt cache, as llama.cpp's `cache_prompt`): the rest of the prompt becomes
    /// pending, the sampler and timings start afresh.
    ///
    /// - Returns: how many prompt tokens are reused from the cache.
    @discardableResult
    public func reuse(_ sequence: EngineSequence, prompt: [Int], sampling: SamplingParameters) throws(EngineError) -> Int {
        guard !prompt.isEmpty else { throw EngineError(.invalidInput, "a sequence needs at least one token") }
        try validate(prompt)
        guard prompt.count <= sequence.capacity else {
            throw EngineError(.contextOverflow, "\(prompt.count) tokens do not fit the context of \(sequence.capacity)")
        }
        var common = 0
        let limit = min(prompt.count, sequence.tokens.count)
        while common < limit && prompt[common] == sequence.tokens[common] { common += 1 }
        truncate(sequence, to: common)
        sequence.append(Array(prompt[common...]))
        sequence.sampler = Sampler(parameters: sampling)
        sequence.timings = SequenceTimings()
        sequence.promptCount = prompt.count
        return sequence.cachedCount
    }

    /// Computes every pending token of `sequences` (the KV cache catches up; nothing is sampled).
    public func prefill(_ sequences: [EngineSequence]) throws(EngineError) {
        forwardLock.lock()
        defer { forwardLock.unlock() }
        try computePending(sequences)
    }

    public func prefill(_ sequence: EngineSequence) throws(EngineError) { try prefill([sequence]) }

    /// One decoding step for each sequence: computes its pending tokens (all sequences in shared
    /// batched passes), then samples its next token, which becomes pending. A sequence whose
    /// context is full gets a `contextOverflow` error and nothing is sampled for any.
    public func step(_ sequences: [EngineSequence]) throws(EngineError) -> [Sampler.Choice] {
        forwardLock.lock()
        defer { forwardLock.unlock() }
        for sequence in sequences where sequence.pendingCount == 0 && sequence.logits == nil {
            throw EngineError(.invalidInput, "sequence \(sequence.id) has no tokens to continue from")
        }
        for sequence in sequences where sequence.tokens.count >= sequence.capacity {
            throw EngineError(.contextOverflow, "sequence \(sequence.id) has filled its context of \(sequence.capacity) tokens")
        }
        try computePending(sequences)
        return sequences.map { sequence in
            let choice = sequence.logits!.withUnsafeBufferPointer { logits in
                sequence.sampler.sample(logits: UnsafeBufferPointer(rebasing: logits[0..<tokenizer.vocabularySize]),
                                        history: sequence.tokens[max(0, sequence.tokens.count - sequence.sampler.state.parameters.penaltyWindow)...])
            }
            sequence.appendSampled(choice.token)
            return choice
        }
    }

    /// The `count` most likely next tokens after the sequence's last computed position, with
    /// their log-probabilities under the model (before sampling settings), most likely first:
    /// after `step`, the alternatives to the token it just sampled (OpenAI's `top_logprobs`).
    public func topLogprobs(of sequence: EngineSequence, count: Int) -> [(token: Int, logprob: Float)] {
        forwardLock.lock()
        defer { forwardLock.unlock() }
        guard count > 0, let logits = sequence.logits else { return [] }
        let vocabulary = min(tokenizer.vocabularySize, logits.count)
        let top = bestCandidates((0..<vocabulary).lazy.map { (token: $0, logit: logits[$0]) }, count: count)
        guard let maximum = top.first?.logit else { return [] }
        let logSum = logits.withUnsafeBufferPointer { log(sllm_sum_exp($0.baseAddress!, Int64(vocabulary), maximum)) } + maximum
        return top.map { (token: $0.token, logprob: $0.logit - logSum) }
    }

    // MARK: - Forward

    /// One token of the batch: which sequence, its position, whether it needs logits.
    struct Slot {
        var sequence: EngineSequence
        var token: Int
        var position: Int
        var logits: Bool
    }

    private func computePending(_ sequences: [EngineSequence]) throws(EngineError) {
        var remaining = sequences.filter { $0.pendingCount > 0 }
        var seen = Set<ObjectIdentifier>()
        for sequence in remaining where !seen.insert(ObjectIdentifier(sequence)).inserted {
            throw EngineError(.invalidInput, "sequence \(sequence.id) appears twice in one step")
        }
        try budget.reserve(remaining.reduce(0) { $0 + $1.pendingCount })
        while !remaining.isEmpty {
            var slots: [Slot] = []
            var shares: [(EngineSequence, Int, Bool)] = []
            for sequence in remaining where slots.count < options.batchSize {
                let take = min(sequence.pendingCount, options.batchSize - slots.count)
                let generated = sequence.cachedCount >= sequence.promptCount && take == 1
                for i in 0..<take {
                    let position = sequence.cachedCount + i
                    slots.append(Slot(sequence: sequence, token: sequence.tokens[position], position: position,
                                      logits: i == take - 1 && take == sequence.pendingCount))
                }
                shares.append((sequence, take, generated))
            }
            let start = ContinuousClock.now
            forward(slots)
            let elapsed = (ContinuousClock.now - start).seconds
            for (sequence, take, generated) in shares {
                sequence.cachedCount += take
                // Time is shared among the sequences by how many tokens each had in the pass.
                let share = elapsed * Double(take) / Double(slots.count)
                if generated {
                    sequence.timings.decode += share
                    sequence.timings.decodeTokens += 1
                } else {
                    sequence.timings.prefill += share
                    sequence.timings.prefillTokens += take
                }
            }
            remaining.removeAll { $0.pendingCount == 0 }
        }
    }

    /// Runs the model over `slots` (in order), writing K/V into each sequence's cache and logits
    /// into the sequences of slots that ask for them.
    private func forward(_ slots: [Slot]) {
        let c = config
        let n = slots.count
        let dim = c.embeddingLength, headDim = c.headDimension
        let qDim = c.headCount * headDim, kvDim = c.headCountKV * headDim, ffn = c.feedForwardLength
        let widest = max(dim, qDim, ffn)
        let actRowBytes = [weights.tokenEmbedding.columns, qDim, ffn].map { columns in
            [SLLM_Q8_1, SLLM_F32].map { sllm_row_bytes(Int32($0), Int64(columns)) }.max()!
        }.max()! + 64
        let outputs = slots.filter(\.logits).count
        // One scratch block, carved up.
        let sizes = [n * dim, n * widest, n * qDim, n * kvDim, n * kvDim, n * qDim, n * ffn, n * ffn,
                     max(1, outputs) * dim, max(1, outputs) * c.vocabularySize, n * max(2, c.ropeDimensionCount)]
        let raw = scratch.bytes(sizes.reduce(0) { $0 + ($1 * 4 + 63) / 64 * 64 } + n * actRowBytes)
        var cursor = raw
        var parts: [UnsafeMutablePointer<Float>] = []
        for count in sizes {
            parts.append(cursor.bindMemory(to: Float.self, capacity: count))
            cursor += (count * 4 + 63) / 64 * 64
        }
        let (x, xn, q, k, v) = (parts[0], parts[1], parts[2], parts[3], parts[4])
        let (attention, gate, up, outNorm, logits) = (parts[5], parts[6], parts[7], parts[8], parts[9])
        let ropeTables = parts[10], ropeStride = max(2, c.ropeDimensionCount)
        for (t, slot) in slots.enumerated() { ropeTable(position: slot.position, into: ropeTables + t * ropeStride) }
        let activations = UnsafeMutableRawPointer(cursor)

        // Embeddings.
        let embedding = weights.tokenEmbedding
        for (t, slot) in slots.enumerated() {
            sllm_dequantize_row(embedding.type, embedding.data + slot.token * embedding.rowBytes, x + t * dim, Int64(dim))
        }

        let epsilon = Float(c.rmsNormEpsilon)
        let scale = 1 / sqrtf(Float(headDim))
        for (layerIndex, layer) in weights.layers.enumerated() {
            rmsNorm(x, into: xn, rows: n, width: dim, weight: layer.attentionNorm, epsilon: epsilon)
            multiply([layer.query, layer.key, layer.value], input: xn, rows: n, into: [q, k, v], activations: activations, stride: actRowBytes)
            if let bias = layer.queryBias { addBias(bias, to: q, rows: n) }
            if let bias = layer.keyBias { addBias(bias, to: k, rows: n) }
            if let bias = layer.valueBias { addBias(bias, to: v, rows: n) }
            for (t, slot) in slots.enumerated() {
                rope(q + t * qDim, heads: c.headCount, table: ropeTables + t * ropeStride)
                rope(k + t * kvDim, heads: c.headCountKV, table: ropeTables + t * ropeStride)
                let cache = slot.sequence.cache
                sllm_f32_to_f16(k + t * kvDim, cache.keys(layer: layerIndex) + slot.position * kvDim, Int64(kvDim))
                sllm_f32_to_f16(v + t * kvDim, cache.values(layer: layerIndex) + slot.position * kvDim, Int64(kvDim))
            }
            // Attention, (token, head) pairs spread over the threads.
            let heads = c.headCount, group = c.headCount / c.headCountKV
            parallel { thread, threads in
                let total = n * heads
                for job in (total * thread / threads)..<(total * (thread + 1) / threads) {
                    let t = job / heads, h = job % heads
                    let slot = slots[t]
                    let kvHead = h / group
                    let cache = slot.sequence.cache
                    sllm_attention_f16(q + t * qDim + h * headDim,
                                       cache.keys(layer: layerIndex) + kvHead * headDim, Int64(kvDim),
                                       cache.values(layer: layerIndex) + kvHead * headDim, Int64(kvDim),
                                       Int64(slot.position + 1), Int64(headDim), scale,
                                       attention + t * qDim + h * headDim)
                }
            }
            multiply([layer.output], input: attention, rows: n, into: [xn], activations: activations, stride: actRowBytes)
            add(xn, to: x, count: n * dim)

            rmsNorm(x, into: xn, rows: n, width: dim, weight: layer.feedForwardNorm, epsilon: epsilon)
            multiply([layer.gate, layer.up], input: xn, rows: n, into: [gate, up], activations: activations, stride: actRowBytes)
            sllm_swiglu(gate, up, gate, Int64(n * ffn))
            multiply([layer.down], input: gate, rows: n, into: [xn], activations: activations, stride: actRowBytes)
            add(xn, to: x, count: n * dim)

        }

        // Output: only the slots that want logits.
        guard outputs > 0 else { return }
        var row = 0
        for (t, slot) in slots.enumerated() where slot.logits {
            rmsNorm(x + t * dim, into: outNorm + row * dim, rows: 1, width: dim, weight: weights.outputNorm, epsilon: epsilon)
            row += 1
        }
        multiply([weights.output], input: outNorm, rows: outputs, into: [logits], activations: activations, stride: actRowBytes)
        row = 0
        for slot in slots where slot.logits {
            slot.sequence.logits = Array(UnsafeBufferPointer(start: logits + row * c.vocabularySize, count: c.vocabularySize))
            row += 1
        }
    }

    /// `outputs[i] = input × matrices[i]ᵀ` for matrices sharing their input (q/k/v, gate/up): the
    /// input is converted once per activation type.
    private func multiply(_ matrices: [Matrix], input: UnsafeMutablePointer<Float>, rows: Int, into outputs: [UnsafeMutablePointer<Float>],
                          activations: UnsafeMutableRawPointer, stride: Int) {
        var converted: Int32 = -1
        for (matrix, output) in zip(matrices, outputs) {
            let columns = matrix.columns
            if matrix.activationType != converted {
                for r in 0..<rows {
                    sllm_quantize_row(matrix.activationType, input + r * columns, activations + r * stride, Int64(columns))
                }
                converted = matrix.activationType
            }
            sllm_pool_gemm(pool, matrix.type, matrix.data, matrix.rowBytes, Int64(matrix.rows), activations, stride,
                           Int64(rows), Int64(columns), output, Int64(matrix.rows))
        }
    }

    private func rmsNorm(_ x: UnsafeMutablePointer<Float>, into y: UnsafeMutablePointer<Float>, rows: Int, width: Int, weight: [Float], epsilon: Float) {
        weight.withUnsafeBufferPointer { w in
            for r in 0..<rows {
                let xr = x + r * width, yr = y + r * width
                var sum: Double = 0
                for i in 0..<width { sum += Double(xr[i] * xr[i]) }
                let mean = Float(sum / Double(width))
                let scale = 1 / sqrtf(mean + epsilon)
                for i in 0..<width { yr[i] = xr[i] * scale * w[i] }
            }
        }
    }

    private func addBias(_ bias: [Float], to x: UnsafeMutablePointer<Float>, rows: Int) {
        bias.withUnsafeBufferPointer { b in
            for r in 0..<rows {
                let xr = x + r * b.count
                for i in 0..<b.count { xr[i] += b[i] }
            }
        }
    }

    private func add(_ y: UnsafeMutablePointer<Float>, to x: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { x[i] += y[i] }
    }

    /// The cos/sin pairs RoPE rotates a token at `position` by, GGML's arithmetic (`theta`
    /// stepped by multiplication, `cosf`/`sinf` in single precision). Computed once per token and
    /// pass, then used for q and k of every layer.
    private func ropeTable(position: Int, into table: UnsafeMutablePointer<Float>) {
        let dims = config.ropeDimensionCount
        let thetaScale = powf(Float(config.ropeFrequencyBase), -2 / Float(dims))
        var theta = Float(position)
        for i in 0..<(dims / 2) {
            let factor = weights.ropeFrequencyFactors?[i] ?? 1
            (table[2 * i], table[2 * i + 1]) = ropeScaling.rotation(theta / factor, pair: i)
            theta *= thetaScale
        }
    }

    /// Rotary embedding of every head of one token, with the fused multiply-adds GCC gives
    /// GGML's `rotate_pairs`.
    private func rope(_ x: UnsafeMutablePointer<Float>, heads: Int, table: UnsafeMutablePointer<Float>) {
        let half = config.ropeDimensionCount / 2, headDim = config.headDimension
        let neox = config.ropeStyle == "neox"
        for h in 0..<heads {
            let head = x + h * headDim
            for i in 0..<half {
                let cos = table[2 * i], sin = table[2 * i + 1]
                let (a, b) = neox ? (i, i + half) : (2 * i, 2 * i + 1)
                let x0 = head[a], x1 = head[b]
                head[a] = (-(x1 * sin)).addingProduct(x0, cos)
                head[b] = (x1 * cos).addingProduct(x0, sin)
            }
        }
    }

    /// Runs `body(thread, threads)` on every pool thread.
    private func parallel(_ body: (Int, Int) -> Void) {
        withoutActuallyEscaping(body) { body in
            var task = body
            withUnsafeMutablePointer(to: &task) { pointer in
                sllm_pool_run(pool, { context, thread, threads in
                    context!.assumingMemoryBound(to: ((Int, Int) -> Void).self).pointee(Int(thread), Int(threads))
                }, pointer)
            }
        }
    }
}
