/// How the next token is chosen from the logits. Defaults are llama.cpp's.
public struct SamplingParameters: Sendable, Equatable, Codable {
    /// 0 or less: greedy (argmax).
    public var temperature: Float = 0.8
    /// 0: off.
    public var topK: Int = 40
    /// 1: off.
    public var topP: Float = 0.95
    /// 0: off.
    public var minP: Float = 0.05
    /// 1: off. Logits of recent tokens are divided (positive) or multiplied (negative) by it.
    public var repetitionPenalty: Float = 1
    /// Subtracted once per occurrence of a token in the recent window.
    public var frequencyPenalty: Float = 0
    /// Subtracted once if a token occurs in the recent window.
    public var presencePenalty: Float = 0
    /// How many recent tokens the penalties look at.
    public var penaltyWindow: Int = 64
    public var seed: UInt64 = 0
    /// Report the chosen token's log-probability (`Sampler.Choice.logprob`); it costs a pass
    /// over the vocabulary per token, so it is off unless a caller shows it.
    public var logprobs = false

    public init() {}

    /// Greedy decoding: always the most likely token.
    public static var greedy: SamplingParameters {
        var parameters = SamplingParameters()
        parameters.temperature = 0
        return parameters
    }
}
