import CKernels
public import Checkpoint
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
    let pool: OpaquePointer
    let forwardLock = NSLock()
    var scratch = Scratch()
    /// Layers built as their tensors arrived (weights from a streaming load); under `forwardLock`.
    var arrivedLayers: [Layer?]
    var arrivedOutputNorm: [Float]?
    let budget: KVBudget
    private let nextID = Atomic<Int>(0)

    public init(model: any ModelWeights, tokenizer: Tokenizer? = nil, options: Options = Options()) throws {
        let start = ContinuousClock.now
        weights = try Weights(model: model)
        config = weights.config
        arrivedLayers = weights.layers
        arrivedOutputNorm = weights.outputNorm
        ropeScaling = try Weights.RopeScaling(config)
        if let tokenizer {
            self.tokenizer = tokenizer
        } else {
            self.tokenizer = try Engine.tokenizer(of: model)
        }
        guard self.tokenizer.vocabularySize <= config.vocabularySize else {
            throw EngineError(
                .unsupportedModel,
                "the tokenizer has \(self.tokenizer.vocabularySize) tokens but the model only \(config.vocabularySize) embeddings"
            )
        }
        guard config.headDimension <= 512, config.headDimension % 2 == 0 else {
            throw EngineError(
                .unsupportedModel, "head dimension \(config.headDimension) is not supported (even, at most 512)")
        }
        self.options = options
        contextLength = max(1, min(options.contextLength ?? config.contextLength, config.contextLength))
        budget = KVBudget(bytesPerPosition: Engine.kvBytesPerPosition(config), limit: options.kvCacheBytes)
        pool = sllm_pool_create(Int32(max(1, options.threads)))
        startupSeconds = (ContinuousClock.now - start).seconds
    }

    deinit { sllm_pool_destroy(pool) }

    /// The tokenizer a checkpoint carries, built from its files (not cached: a server keeps
    /// one per model; see Serving's `TokenizerCache`). A tokenizer the files do not make is an
    /// unsupported model; a file that cannot be read throws its own error.
    package static func tokenizer(name: String, build: () throws -> Tokenizer) throws -> Tokenizer {
        do {
            return try build()
        } catch let error as TokenizerError {
            throw EngineError(.unsupportedModel, "checkpoint \(name): \(error.description)", cause: error)
        }
    }

    /// The tokenizer of loaded weights (their `vocabulary.bin` mapped in place when they have one).
    package static func tokenizer(of model: any ModelWeights) throws -> Tokenizer {
        try tokenizer(name: model.name) {
            try Tokenizer(checkpoint: model.index, map: model.mappedFile, read: model.fileContents)
        }
    }

    /// Checks what a model file brings that requests would trip over later: its architecture and
    /// every tensor's dtype (one the engine has kernels for), its tokenizer (special
    /// token ids inside the vocabulary), a vocabulary that fits the embeddings, and its chat
    /// template, which must parse and render a one-message conversation within the template
    /// interpreter's limits. Used when pulling, so a bad file is refused once, up front.
    public static func validate(_ reader: CheckpointReader) throws {
        // What the engine cannot compute on is refused here, naming it, not at the first request.
        let index = reader.index
        guard supportedArchitectures.contains(index.config.architecture) else {
            throw EngineError(
                .unsupportedModel,
                "architecture \(index.config.architecture) is not supported (supported: \(supportedArchitectures.sorted().joined(separator: ", ")))"
            )
        }
        if let tensor = index.tensors.first(where: { !supportedWeightTypes.contains($0.dtype) }) {
            throw EngineError(
                .unsupportedModel,
                "tensor \(tensor.name) has dtype \(tensor.dtype.name), which the engine does not compute on (supported: \(supportedWeightTypes.map(\.name).sorted().joined(separator: ", ")))"
            )
        }
        let tokenizer = try tokenizer(name: reader.directory) {
            try Tokenizer(checkpoint: reader.index, map: reader.mappedFile, read: reader.fileContents)
        }
        let config = reader.index.config
        guard tokenizer.vocabularySize <= config.vocabularySize else {
            throw EngineError(
                .unsupportedModel,
                "the tokenizer has \(tokenizer.vocabularySize) tokens but the model only \(config.vocabularySize) embeddings"
            )
        }
        guard tokenizer.chatTemplate != nil else { return }
        do {
            _ = try tokenizer.renderChat([ChatMessage(role: "user", content: "Hello")])
        } catch {
            throw EngineError(
                .unsupportedModel, "its chat template does not render a one-message conversation: \(error.description)")
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
    public func makeSequence(tokens: [Int], sampling: SamplingParameters = .greedy) throws(EngineError)
        -> EngineSequence
    {
        try makeSequence(tokens: tokens, sampler: Sampler(parameters: sampling))
    }

    /// A sequence that continues `snapshot` exactly as the original would have (its prompt
    /// count too, so a second snapshot still tells the prompt from what was generated). A
    /// migration's first stage may pass a prefix of the tokens, shorter than the prompt.
    public func makeSequence(snapshot: SequenceSnapshot) throws(EngineError) -> EngineSequence {
        let sequence = try makeSequence(tokens: snapshot.tokens, sampler: Sampler(state: snapshot.sampler))
        sequence.promptCount = min(max(0, snapshot.promptCount), snapshot.tokens.count)
        return sequence
    }

    private func makeSequence(tokens: [Int], sampler: Sampler) throws(EngineError) -> EngineSequence {
        guard !tokens.isEmpty else { throw EngineError(.invalidInput, "a sequence needs at least one token") }
        try validate(tokens)
        guard tokens.count <= contextLength else {
            throw EngineError(.contextOverflow, "\(tokens.count) tokens do not fit the context of \(contextLength)")
        }
        let cache = try KVCache(
            capacity: contextLength, layers: config.blockCount, heads: config.headCountKV,
            headDimension: config.headDimension)
        return EngineSequence(
            id: nextID.add(1, ordering: .relaxed).newValue, tokens: tokens, sampler: sampler, cache: cache,
            budget: budget)
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
            throw EngineError(
                .contextOverflow,
                "\(sequence.tokens.count + tokens.count) tokens do not fit the context of \(sequence.capacity)")
        }
        sequence.append(tokens)
    }

    /// Cuts a sequence back to its first `count` tokens (a conversation whose next prompt shares
    /// only a prefix with what was computed); the cache beyond is reused for the new tokens.
    public func truncate(_ sequence: EngineSequence, to count: Int) { cut(sequence, to: count, followed: false) }

    /// `truncate`, and when `followed` (more tokens are about to be appended) the last kept
    /// token's cache stays too: the logits come from the tokens that follow.
    private func cut(_ sequence: EngineSequence, to count: Int, followed: Bool) {
        forwardLock.lock()
        defer { forwardLock.unlock() }
        let keep = max(0, min(count, sequence.tokens.count))
        // Else the last kept token is computed again so that the next step has its logits.
        let cached = followed ? keep : max(0, keep - 1)
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
    public func reuse(_ sequence: EngineSequence, prompt: [Int], sampling: SamplingParameters) throws(EngineError)
        -> Int
    {
        try replaceTokens(of: sequence, with: prompt)
        sequence.sampler = Sampler(parameters: sampling)
        sequence.promptCount = prompt.count
        return sequence.cachedCount
    }

    /// Continues `snapshot` on a sequence that holds a prefix of its tokens (a migration's target
    /// warmed with an earlier snapshot of the same sequence): only the tokens beyond the shared
    /// prefix are computed, and the sequence goes on exactly as `makeSequence(snapshot:)` would.
    ///
    /// - Returns: how many of the snapshot's tokens are reused from the cache.
    @discardableResult
    public func reuse(_ sequence: EngineSequence, snapshot: SequenceSnapshot) throws(EngineError) -> Int {
        try replaceTokens(of: sequence, with: snapshot.tokens)
        sequence.sampler = Sampler(state: snapshot.sampler)
        sequence.promptCount = min(max(0, snapshot.promptCount), snapshot.tokens.count)
        return sequence.cachedCount
    }

    /// Makes `tokens` the sequence's tokens, keeping the KV cache of the prefix they share with
    /// what it holds; timings start afresh.
    private func replaceTokens(of sequence: EngineSequence, with tokens: [Int]) throws(EngineError) {
        guard !tokens.isEmpty else { throw EngineError(.invalidInput, "a sequence needs at least one token") }
        try validate(tokens)
        guard tokens.count <= sequence.capacity else {
            throw EngineError(.contextOverflow, "\(tokens.count) tokens do not fit the context of \(sequence.capacity)")
        }
        var common = 0
        let limit = min(tokens.count, sequence.tokens.count)
        while common < limit && tokens[common] == sequence.tokens[common] { common += 1 }
        // Tokens that only extend what is computed compute nothing again (a migration's next
        // round, a conversation's next prompt).
        cut(sequence, to: common, followed: tokens.count > common)
        sequence.append(Array(tokens[common...]))
        sequence.timings = SequenceTimings()
    }

    /// Computes every pending token of `sequences` (the KV cache catches up; nothing is sampled).
    /// Without `logits`, the output projection of their last tokens is skipped too: for a
    /// sequence that only gets more tokens before its next step (a migration's target warming);
    /// stepping it without appending is then refused.
    public func prefill(_ sequences: [EngineSequence], logits: Bool = true) throws(EngineError) {
        forwardLock.lock()
        defer { forwardLock.unlock() }
        try computePending(sequences, logits: logits)
    }

    public func prefill(_ sequence: EngineSequence, logits: Bool = true) throws(EngineError) {
        try prefill([sequence], logits: logits)
    }

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
            throw EngineError(
                .contextOverflow, "sequence \(sequence.id) has filled its context of \(sequence.capacity) tokens")
        }
        try computePending(sequences)
        return sequences.map { sequence in
            let choice = sequence.logits!.withUnsafeBufferPointer { logits in
                sequence.sampler.sample(
                    logits: UnsafeBufferPointer(rebasing: logits[0..<tokenizer.vocabularySize]),
                    history: sequence.tokens[
                        max(0, sequence.tokens.count - max(0, sequence.sampler.state.parameters.penaltyWindow))...])
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
        let logSum =
            logits.withUnsafeBufferPointer { log(sllm_sum_exp($0.baseAddress!, Int64(vocabulary), maximum)) } + maximum
        return top.map { (token: $0.token, logprob: $0.logit - logSum) }
    }
}
