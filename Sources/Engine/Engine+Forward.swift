import CKernels
import Checkpoint
import Foundation

// The forward pass: raw-pointer arithmetic over the weights in place and one scratch block.
//
// Invariants (what makes the unsafe code here safe):
// - Only one forward pass runs at a time: `step`/`prefill` hold `forwardLock` around
//   `computePending`, so `scratch` and the thread pool are never shared between two passes.
// - `scratch.bytes(n)` returns at least `n` bytes, 64-byte aligned, valid until the next call;
//   every pointer carved from it (`cursor`) stays inside the sizes summed just before.
// - Weight views (`Weights`) point into memory the engine's `ModelWeights` pins for the engine's
//   lifetime; row counts and widths come from the config, and `Weights.init` checks every
//   tensor's dtype and shape against them, so `sllm_row_bytes` × rows never exceeds a view.
// - A slot's `position` is below its sequence's cache capacity: `makeSequence` and `append`
//   refuse tokens beyond `capacity`, `step` refuses a full sequence before sampling into it, and
//   `computePending` reserves the positions in the KV budget before any pass.
// - `parallel` bodies write disjoint row ranges of their outputs (split by thread index).
extension Engine {
    // MARK: - Forward

    /// One token of the batch: which sequence, its position, whether it needs logits.
    struct Slot {
        var sequence: EngineSequence
        var token: Int
        var position: Int
        var logits: Bool
    }

    func computePending(_ sequences: [EngineSequence], logits: Bool = true) throws(EngineError) {
        var remaining = sequences.filter { $0.pendingCount > 0 }
        // Logits of an earlier position must not be taken for those of the new last token.
        if !logits { for sequence in remaining { sequence.logits = nil } }
        var seen = Set<ObjectIdentifier>()
        for sequence in remaining where !seen.insert(ObjectIdentifier(sequence)).inserted {
            throw EngineError(.invalidInput, "sequence \(sequence.id) appears twice in one step")
        }
        try budget.reserve(remaining.reduce(0) { $0 + $1.pendingCount })
        while !remaining.isEmpty {
            // While weights still arrive, a prompt goes through in one pass (up to a bound), so
            // all of it is computed layer by layer behind the load instead of waiting for the
            // last layer between two passes.
            let batchSize =
                weights.model.isComplete ? options.batchSize : max(options.batchSize, Self.streamingBatchSize)
            var slots: [Slot] = []
            var shares: [(EngineSequence, Int, Bool)] = []
            for sequence in remaining where slots.count < batchSize {
                let take = min(sequence.pendingCount, batchSize - slots.count)
                let generated = sequence.cachedCount >= sequence.promptCount && take == 1
                for i in 0..<take {
                    let position = sequence.cachedCount + i
                    slots.append(
                        Slot(
                            sequence: sequence, token: sequence.tokens[position], position: position,
                            logits: logits && i == take - 1 && take == sequence.pendingCount))
                }
                shares.append((sequence, take, generated))
            }
            let start = ContinuousClock.now
            do {
                try forward(slots)
            } catch {
                // Nothing of this pass counts: the positions go back to the budget.
                budget.release(remaining.reduce(0) { $0 + $1.pendingCount })
                throw error
            }
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

    /// Most tokens of one pass while the weights still arrive.
    static let streamingBatchSize = 1024

    /// Layer `i`, built once its tensors have arrived when the weights are still loading.
    private func layer(_ i: Int) throws(EngineError) -> Layer {
        if let layer = arrivedLayers[i] { return layer }
        try Weights.waitFor(weights.layerTensors[i], of: weights.model)
        let layer = try Weights.layer(i, of: weights.model, read: true)
        arrivedLayers[i] = layer
        return layer
    }

    /// The output norm, read once it has arrived (the output matrix may still be arriving).
    private func outputNorm() throws(EngineError) -> [Float] {
        if let norm = arrivedOutputNorm { return norm }
        try Weights.waitFor(["output_norm.weight"], of: weights.model)
        let norm = try Weights.vector(weights.model, "output_norm.weight", count: config.embeddingLength)!
        arrivedOutputNorm = norm
        return norm
    }

    /// Runs the model over `slots` (in order), writing K/V into each sequence's cache and logits
    /// into the sequences of slots that ask for them. Weights that still arrive are waited for
    /// layer by layer.
    private func forward(_ slots: [Slot], rerun: Bool = false) throws(EngineError) {
        let c = config
        let n = slots.count
        let dim = c.embeddingLength, headDim = c.headDimension
        let qDim = c.headCount * headDim, kvDim = c.headCountKV * headDim, ffn = c.feedForwardLength
        let widest = max(dim, qDim, ffn)
        let actRowBytes =
            [weights.tokenEmbedding.columns, qDim, ffn].map { columns in
                [SLLM_Q8_1, SLLM_F32].map { sllm_row_bytes(Int32($0), Int64(columns)) }.max()!
            }.max()! + 64
        let outputs = slots.filter(\.logits).count
        // One scratch block, carved up.
        // Sliding-window layers with a RoPE base of their own (Gemma 3) get a second table.
        let localBase = c.ropeFrequencyBaseSWA
        let ropeStride = max(2, c.ropeDimensionCount)
        let sizes = [
            n * dim, n * widest, n * qDim, n * kvDim, n * kvDim, n * qDim, n * ffn, n * ffn,
            max(1, outputs) * dim, max(1, outputs) * c.vocabularySize, n * ropeStride * (localBase == nil ? 1 : 2),
        ]
        let raw = scratch.bytes(sizes.reduce(0) { $0 + ($1 * 4 + 63) / 64 * 64 } + n * actRowBytes)
        var cursor = raw
        var parts: [UnsafeMutablePointer<Float>] = []
        for count in sizes {
            parts.append(cursor.bindMemory(to: Float.self, capacity: count))
            cursor += (count * 4 + 63) / 64 * 64
        }
        let (x, xn, q, k, v) = (parts[0], parts[1], parts[2], parts[3], parts[4])
        let (attention, gate, up, outNorm, logits) = (parts[5], parts[6], parts[7], parts[8], parts[9])
        let ropeTables = parts[10], localRopeTables = localBase == nil ? parts[10] : parts[10] + n * ropeStride
        for (t, slot) in slots.enumerated() {
            ropeTable(position: slot.position, into: ropeTables + t * ropeStride)
            if let localBase {
                ropeTable(position: slot.position, base: localBase, into: localRopeTables + t * ropeStride)
            }
        }
        let activations = UnsafeMutableRawPointer(cursor)

        // Embeddings (Gemma scales them by √width). While they are still arriving (they come
        // last), the prompt's rows are read on their own, unverified, and checked against the
        // verified matrix before anything of this pass is used (after the layers, below).
        let embedding = weights.tokenEmbedding
        var early: [Int: [UInt8]] = [:]
        if weights.streamed && !rerun && !weights.model.hasArrived([embedding.name]) {
            let tokens = Set(slots.map(\.token)).sorted()
            if let rows = weights.model.unverifiedBytes(
                of: embedding.name,
                ranges: tokens.map { $0 * embedding.rowBytes..<($0 + 1) * embedding.rowBytes })
            {
                early = Dictionary(uniqueKeysWithValues: zip(tokens, rows))
            } else {
                try Weights.waitFor([embedding.name], of: weights.model)
            }
        }
        for (t, slot) in slots.enumerated() {
            if let row = early[slot.token] {
                row.withUnsafeBytes { sllm_dequantize_row(embedding.type, $0.baseAddress, x + t * dim, Int64(dim)) }
            } else {
                sllm_dequantize_row(
                    embedding.type, embedding.data + slot.token * embedding.rowBytes, x + t * dim, Int64(dim))
            }
        }
        let gemma = c.architecture == "gemma3"
        if gemma { scale(x, count: n * dim, by: sqrtf(Float(dim))) }

        let epsilon = Float(c.rmsNormEpsilon)
        // Gemma 3 scales queries before attention (by 1/√head_dim, or 1/√(width/heads) for its
        // 27B), as llama.cpp does, and attends with a scale of 1.
        let queryScale: Float? =
            gemma ? 1 / sqrtf(Float(c.blockCount == 62 ? dim / c.headCount : headDim)) : nil
        let attentionScale = queryScale == nil ? 1 / sqrtf(Float(headDim)) : 1
        for layerIndex in 0..<c.blockCount {
            let layer = try layer(layerIndex)
            rmsNorm(x, into: xn, rows: n, width: dim, weight: layer.attentionNorm, epsilon: epsilon)
            multiply(
                [layer.query, layer.key, layer.value], input: xn, rows: n, into: [q, k, v], activations: activations,
                stride: actRowBytes)
            if let bias = layer.queryBias { addBias(bias, to: q, rows: n) }
            if let bias = layer.keyBias { addBias(bias, to: k, rows: n) }
            if let bias = layer.valueBias { addBias(bias, to: v, rows: n) }
            // Qwen3: each head's query and key normalized on their own (in place), before RoPE.
            if let norm = layer.queryNorm {
                rmsNorm(q, into: q, rows: n * c.headCount, width: headDim, weight: norm, epsilon: epsilon)
            }
            if let norm = layer.keyNorm {
                rmsNorm(k, into: k, rows: n * c.headCountKV, width: headDim, weight: norm, epsilon: epsilon)
            }
            let tables = layer.slidingWindow ? localRopeTables : ropeTables
            splitRows(n) { range in
                for t in range {
                    rope(q + t * qDim, heads: c.headCount, table: tables + t * ropeStride)
                    rope(k + t * kvDim, heads: c.headCountKV, table: tables + t * ropeStride)
                    if let queryScale { scale(q + t * qDim, count: qDim, by: queryScale) }
                    let slot = slots[t], cache = slots[t].sequence.cache
                    for head in 0..<c.headCountKV {
                        sllm_f32_to_f16(
                            k + t * kvDim + head * headDim,
                            cache.keys(layer: layerIndex, head: head) + slot.position * headDim, Int64(headDim))
                        sllm_f32_to_f16(
                            v + t * kvDim + head * headDim,
                            cache.values(layer: layerIndex, head: head) + slot.position * headDim, Int64(headDim))
                    }
                }
            }
            // Attention: the (token, query head) pairs are split into one run per thread, and
            // within its run a thread takes the heads that share a KV head together (each key and
            // value row converted once for them; each head's result the same bits as alone). A
            // decoding step's nine heads on two threads: five and four, grouped 3 + 2 and 1 + 3.
            // A sliding-window layer sees the keys of the last `window` positions only (llama.cpp
            // masks the rest, which its attention loop then skips: the same as not visiting them).
            let group = c.headCount / c.headCountKV
            let window = layer.slidingWindow ? (c.slidingWindow ?? Int.max) : Int.max
            parallel { thread, threads in
                let total = n * c.headCount
                var pair = total * thread / threads
                let end = total * (thread + 1) / threads
                while pair < end {
                    let t = pair / c.headCount, head = pair % c.headCount
                    let kvHead = head / group
                    let heads = min(end - pair, (kvHead + 1) * group - head)
                    let slot = slots[t]
                    let cache = slot.sequence.cache
                    let first = max(0, slot.position + 1 - window)
                    sllm_attention_f16_group(
                        q + t * qDim + head * headDim, Int64(headDim), Int64(heads),
                        cache.keys(layer: layerIndex, head: kvHead) + first * headDim, Int64(headDim),
                        cache.values(layer: layerIndex, head: kvHead) + first * headDim, Int64(headDim),
                        Int64(slot.position + 1 - first), Int64(headDim), attentionScale,
                        attention + t * qDim + head * headDim, Int64(headDim))
                    pair += heads
                }
            }
            multiply(
                [layer.output], input: attention, rows: n, into: [xn], activations: activations, stride: actRowBytes)
            if let norm = layer.attentionPostNorm {
                rmsNorm(xn, into: xn, rows: n, width: dim, weight: norm, epsilon: epsilon)
            }
            add(xn, to: x, count: n * dim)

            rmsNorm(x, into: xn, rows: n, width: dim, weight: layer.feedForwardNorm, epsilon: epsilon)
            multiply(
                [layer.gate, layer.up], input: xn, rows: n, into: [gate, up], activations: activations,
                stride: actRowBytes)
            parallel { thread, threads in
                // Split at multiples of 16, the vector kernels' width.
                let total = n * ffn
                let start = thread == 0 ? 0 : total * thread / threads / 16 * 16
                let end = thread == threads - 1 ? total : total * (thread + 1) / threads / 16 * 16
                if gemma {
                    sllm_geglu(gate + start, up + start, gate + start, Int64(end - start))
                } else {
                    sllm_swiglu(gate + start, up + start, gate + start, Int64(end - start))
                }
            }
            multiply([layer.down], input: gate, rows: n, into: [xn], activations: activations, stride: actRowBytes)
            if let norm = layer.feedForwardPostNorm {
                rmsNorm(xn, into: xn, rows: n, width: dim, weight: norm, epsilon: epsilon)
            }
            add(xn, to: x, count: n * dim)

        }

        // Output: only the slots that want logits. While the output matrix is still being read
        // (tied to the embeddings, it comes last) its rows are multiplied as they come in.
        if outputs > 0 {
            let outputNorm = try outputNorm()
            var row = 0
            for (t, slot) in slots.enumerated() where slot.logits {
                rmsNorm(
                    x + t * dim, into: outNorm + row * dim, rows: 1, width: dim, weight: outputNorm,
                    epsilon: epsilon)
                row += 1
            }
            try projectOutput(outNorm, rows: outputs, into: logits, activations: activations, stride: actRowBytes)
        }

        // Rows read before the embeddings arrived must equal the verified ones; if any does not,
        // the pass is computed again on the verified weights (it overwrites the same cache
        // positions, and nothing of it has been handed out yet).
        if !early.isEmpty {
            try Weights.waitFor([embedding.name], of: weights.model)
            let mismatch = early.contains { token, row in
                row.withUnsafeBytes {
                    memcmp($0.baseAddress!, embedding.data + token * embedding.rowBytes, row.count) != 0
                }
            }
            if mismatch { return try forward(slots, rerun: true) }
        }

        var row = 0
        for slot in slots where slot.logits {
            slot.sequence.logits = Array(
                UnsafeBufferPointer(start: logits + row * c.vocabularySize, count: c.vocabularySize))
            row += 1
        }
    }

    /// Bytes of the output matrix multiplied at a time while it is still being read.
    static let outputPieceBytes = 2 << 20

    /// `logits = input × output matrixᵀ` for `rows` rows of input. While the matrix is still being
    /// read (a streaming load), its rows are multiplied piece by piece as they come in, each row
    /// with the arithmetic it has when the matrix is whole; it returns once the matrix has
    /// arrived verified, so nothing computed on bytes that were only read is used before.
    private func projectOutput(
        _ input: UnsafeMutablePointer<Float>, rows: Int, into logits: UnsafeMutablePointer<Float>,
        activations: UnsafeMutableRawPointer, stride: Int
    ) throws(EngineError) {
        let matrix = weights.output
        guard weights.streamed, !weights.model.hasArrived([matrix.name]) else {
            try Weights.waitFor([matrix.name], of: weights.model)
            multiply([matrix], input: input, rows: rows, into: [logits], activations: activations, stride: stride)
            return
        }
        quantize(
            input, rows: rows, type: matrix.activationType, columns: matrix.columns, into: activations, stride: stride)
        let piece = max(1, Self.outputPieceBytes / matrix.rowBytes)
        var first = 0
        while first < matrix.rows {
            var end = min(matrix.rows, first + piece)
            if !(try Weights.waitForRead(matrix.name, count: end * matrix.rowBytes, of: weights.model)) {
                // The weights cannot tell what is read: the rest once the matrix is in.
                try Weights.waitFor([matrix.name], of: weights.model)
                end = matrix.rows
            }
            sllm_pool_gemm(
                pool, matrix.type, matrix.data + first * matrix.rowBytes, matrix.rowBytes, Int64(end - first),
                activations, stride, Int64(rows), Int64(matrix.columns), logits + first, Int64(matrix.rows))
            first = end
        }
        try Weights.waitFor([matrix.name], of: weights.model)
    }

    /// `outputs[i] = input × matrices[i]ᵀ` for matrices sharing their input (q/k/v, gate/up): the
    /// input is converted once per activation type.
    private func multiply(
        _ matrices: [Matrix], input: UnsafeMutablePointer<Float>, rows: Int,
        into outputs: [UnsafeMutablePointer<Float>],
        activations: UnsafeMutableRawPointer, stride: Int
    ) {
        var converted: Int32 = -1
        for (matrix, output) in zip(matrices, outputs) {
            let columns = matrix.columns
            if matrix.activationType != converted {
                quantize(
                    input, rows: rows, type: matrix.activationType, columns: columns, into: activations, stride: stride)
                converted = matrix.activationType
            }
            sllm_pool_gemm(
                pool, matrix.type, matrix.data, matrix.rowBytes, Int64(matrix.rows), activations, stride,
                Int64(rows), Int64(columns), output, Int64(matrix.rows))
        }
    }

    /// Converts `rows` rows of `columns` floats to the activation type `type`, one row per
    /// `stride` bytes of `activations`.
    private func quantize(
        _ input: UnsafeMutablePointer<Float>, rows: Int, type: Int32, columns: Int,
        into activations: UnsafeMutableRawPointer, stride: Int
    ) {
        if rows == 1 {
            sllm_quantize_row(type, input, activations, Int64(columns))
        } else {
            // A prompt's rows are converted on every thread (each row on its own).
            parallel { thread, threads in
                for r in (rows * thread / threads)..<(rows * (thread + 1) / threads) {
                    sllm_quantize_row(type, input + r * columns, activations + r * stride, Int64(columns))
                }
            }
        }
    }

    private func rmsNorm(
        _ x: UnsafeMutablePointer<Float>, into y: UnsafeMutablePointer<Float>, rows: Int, width: Int, weight: [Float],
        epsilon: Float
    ) {
        weight.withUnsafeBufferPointer { w in
            splitRows(rows) { range in
                for r in range {
                    let xr = x + r * width, yr = y + r * width
                    var sum: Double = 0
                    for i in 0..<width { sum += Double(xr[i] * xr[i]) }
                    let mean = Float(sum / Double(width))
                    let scale = 1 / sqrtf(mean + epsilon)
                    for i in 0..<width { yr[i] = xr[i] * scale * w[i] }
                }
            }
        }
    }

    /// Runs `body` over 0..<count: on this thread for a few rows (a decoding step), else split
    /// evenly across the pool's threads (a prompt). Each row is computed the same way either way.
    private func splitRows(_ count: Int, _ body: (Range<Int>) -> Void) {
        if count < 8 {
            body(0..<count)
        } else {
            parallel { thread, threads in body((count * thread / threads)..<(count * (thread + 1) / threads)) }
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

    private func scale(_ x: UnsafeMutablePointer<Float>, count: Int, by factor: Float) {
        for i in 0..<count { x[i] *= factor }
    }

    /// The cos/sin pairs RoPE rotates a token at `position` by, GGML's arithmetic (`theta`
    /// stepped by multiplication, `cosf`/`sinf` in single precision). Computed once per token and
    /// pass, then used for q and k of every layer.
    /// With `base`, the table of sliding-window layers: their own base, no scaling.
    private func ropeTable(position: Int, base: Double? = nil, into table: UnsafeMutablePointer<Float>) {
        let dims = config.ropeDimensionCount
        let thetaScale = powf(Float(base ?? config.ropeFrequencyBase), -2 / Float(dims))
        var theta = Float(position)
        for i in 0..<(dims / 2) {
            if base != nil {
                (table[2 * i], table[2 * i + 1]) = (cosf(theta), sinf(theta))
            } else {
                let factor = weights.ropeFrequencyFactors?[i] ?? 1
                (table[2 * i], table[2 * i + 1]) = ropeScaling.rotation(theta / factor, pair: i)
            }
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
                sllm_pool_run(
                    pool,
                    { context, thread, threads in
                        context!.assumingMemoryBound(to: ((Int, Int) -> Void).self).pointee(Int(thread), Int(threads))
                    }, pointer)
            }
        }
    }
}
