import CKernels
import Foundation

/// Chooses tokens from logits: penalties, then top-k, top-p, min-p, temperature, then a draw
/// from the softmax (llama.cpp's default chain order), or the argmax when greedy.
///
/// Its whole state is `(parameters, rngState, drawn)`: `state` exports it and
/// `init(state:)` resumes it, so a sequence migrated to another instance continues with the
/// identical draws.
public struct Sampler: Sendable {
    /// Everything needed to resume sampling elsewhere.
    public struct State: Sendable, Equatable, Codable {
        public var parameters: SamplingParameters
        /// SplitMix64 state.
        public var rngState: UInt64
        /// Draws made so far.
        public var drawn: Int
    }

    /// A chosen token and its log-probability under the model's own distribution (the softmax
    /// of the raw logits, before penalties, truncation and temperature), as OpenAI and llama.cpp
    /// report it: the same distribution `top_logprobs` come from, so one answer never carries
    /// two values for a token. Nil unless the parameters ask for it (`logprobs`).
    public struct Choice: Sendable, Equatable {
        public var token: Int
        public var logprob: Float?
    }

    public private(set) var state: State
    private var candidates: [(token: Int, logit: Float)] = []

    public init(parameters: SamplingParameters) {
        state = State(parameters: parameters, rngState: parameters.seed, drawn: 0)
    }

    public init(state: State) { self.state = state }

    /// Picks the next token from `logits` given the tokens so far (for the penalties).
    public mutating func sample(logits: UnsafeBufferPointer<Float>, history: some Collection<Int>) -> Choice {
        let p = state.parameters
        let penalised = p.repetitionPenalty != 1 || p.frequencyPenalty != 0 || p.presencePenalty != 0
        // The argmax, for greedy decoding and for the log-sum-exp; neither is needed when
        // sampling without logprobs.
        var maximum = logits[0]
        var best = 0
        if p.logprobs || (p.temperature <= 0 && !penalised) {
            for i in 1..<logits.count where logits[i] > maximum {
                maximum = logits[i]
                best = i
            }
        }
        let logSum = p.logprobs ? maximum + log(sllm_sum_exp(logits.baseAddress!, Int64(logits.count), maximum)) : 0
        func choice(_ token: Int) -> Choice { Choice(token: token, logprob: p.logprobs ? logits[token] - logSum : nil) }
        // Greedy without penalties: the argmax.
        if p.temperature <= 0 && !penalised { return choice(best) }
        candidates.removeAll(keepingCapacity: true)
        candidates.reserveCapacity(logits.count)
        for (token, logit) in logits.enumerated() { candidates.append((token, logit)) }
        applyPenalties(history: history)

        if p.temperature <= 0 {
            let best = candidates.max { $0.logit < $1.logit || ($0.logit == $1.logit && $0.token > $1.token) }!
            return choice(best.token)
        }
        if p.topK > 0 && p.topK < candidates.count {
            keepTop(p.topK)
        } else if p.topP >= 1 && p.minP <= 0 {
            // Nothing is cut: draw from the whole distribution in vocabulary order, no sort.
        } else {
            candidates.sort { $0.logit > $1.logit || ($0.logit == $1.logit && $0.token < $1.token) }
        }
        var probabilities = softmax(candidates.map(\.logit))
        if p.topP < 1 {
            var cumulative: Float = 0
            var keep = candidates.count
            for (i, probability) in probabilities.enumerated() {
                cumulative += probability
                if cumulative >= p.topP {
                    keep = i + 1
                    break
                }
            }
            candidates.removeLast(candidates.count - keep)
            probabilities = softmax(candidates.map(\.logit))
        }
        if p.minP > 0, let top = probabilities.first {
            let keep = probabilities.firstIndex { $0 < p.minP * top } ?? probabilities.count
            candidates.removeLast(candidates.count - max(1, keep))
        }
        let final = softmax(candidates.map { $0.logit / p.temperature })
        let draw = Float(Double(nextRandom() >> 11) / Double(1 << 53))
        var cumulative: Float = 0
        var chosen = final.count - 1
        for (i, probability) in final.enumerated() {
            cumulative += probability
            if draw < cumulative {
                chosen = i
                break
            }
        }
        return choice(candidates[chosen].token)
    }

    /// Keeps the `k` best candidates, sorted best first.
    private mutating func keepTop(_ k: Int) {
        candidates = bestCandidates(candidates, count: k)
    }

    private mutating func applyPenalties(history: some Collection<Int>) {
        let p = state.parameters
        guard p.repetitionPenalty != 1 || p.frequencyPenalty != 0 || p.presencePenalty != 0, p.penaltyWindow > 0 else {
            return
        }
        var counts: [Int: Int] = [:]
        for token in history.suffix(p.penaltyWindow) { counts[token, default: 0] += 1 }
        for (token, count) in counts where token >= 0 && token < candidates.count {
            var logit = candidates[token].logit
            logit = logit > 0 ? logit / p.repetitionPenalty : logit * p.repetitionPenalty
            logit -= Float(count) * p.frequencyPenalty + p.presencePenalty
            candidates[token].logit = logit
        }
    }

    /// SplitMix64: one 64-bit state, so it exports and resumes exactly.
    private mutating func nextRandom() -> UInt64 {
        state.drawn += 1
        state.rngState &+= 0x9E37_79B9_7F4A_7C15
        var z = state.rngState
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Numerically stable softmax.
func softmax(_ logits: [Float]) -> [Float] {
    guard let maximum = logits.max() else { return [] }
    let exps = logits.map { exp($0 - maximum) }
    let sum = exps.reduce(0, +)
    return exps.map { $0 / sum }
}

/// The `k` best (token, logit) pairs, best first (ties: the lower token first), in one pass
/// without sorting the whole vocabulary.
func bestCandidates(_ candidates: some Sequence<(token: Int, logit: Float)>, count k: Int) -> [(
    token: Int, logit: Float
)] {
    func better(_ a: (token: Int, logit: Float), _ b: (token: Int, logit: Float)) -> Bool {
        a.logit > b.logit || (a.logit == b.logit && a.token < b.token)
    }
    var top: [(token: Int, logit: Float)] = []
    guard k > 0 else { return top }
    top.reserveCapacity(k + 1)
    for candidate in candidates {
        if top.count == k, let last = top.last, !better(candidate, last) { continue }
        var i = top.count
        while i > 0 && better(candidate, top[i - 1]) { i -= 1 }
        top.insert(candidate, at: i)
        if top.count > k { top.removeLast() }
    }
    return top
}
