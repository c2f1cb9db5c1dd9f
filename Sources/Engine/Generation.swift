import Foundation
public import Tokenizers

/// What to generate beyond the sampling itself.
public struct GenerationParameters: Sendable, Equatable {
    public var sampling: SamplingParameters = SamplingParameters()
    /// Most tokens to generate; nil: until end of generation or the context is full.
    public var maxTokens: Int? = nil
    /// Generation stops before any of these strings; they are not part of the text.
    public var stop: [String] = []
    /// Stop at the vocabulary's end-of-generation tokens (EOS, `<|im_end|>`, `<|eot_id|>` …).
    public var stopAtEndOfGeneration = true

    public init() {}
}

/// Why generation stopped (OpenAI's `finish_reason`).
public enum FinishReason: String, Sendable, Codable {
    /// An end-of-generation token or a stop string.
    case stop
    /// `maxTokens` or the context length.
    case length
}

/// One generated token, with the text it completes (possibly empty while a UTF-8 character or a
/// possible stop string is incomplete).
public struct GeneratedToken: Sendable, Equatable {
    public var token: Int
    /// Nil unless the sampling parameters ask for it (`logprobs`).
    public var logprob: Float?
    public var text: String
}

/// The outcome of a generation.
public struct GenerationResult: Sendable {
    public var tokens: [Int]
    public var text: String
    public var finishReason: FinishReason
    public var promptTokens: Int
    public var timings: SequenceTimings
}

/// Turns sampled tokens into text for a client: streaming-safe UTF-8, stop strings held back
/// until they are ruled out, end-of-generation tokens recognised.
public struct TextStream: Sendable {
    let stop: [String]
    let endTokens: Set<Int>
    private var decoder: StreamingDecoder
    /// Decoded text not yet released because it may be the start of a stop string.
    private var held = ""
    public private(set) var text = ""
    public private(set) var finished: FinishReason?

    public init(tokenizer: Tokenizer, stop: [String], stopAtEndOfGeneration: Bool) {
        self.stop = stop.filter { !$0.isEmpty }
        endTokens = stopAtEndOfGeneration ? tokenizer.endOfGenerationTokens : []
        decoder = StreamingDecoder(tokenizer: tokenizer)
    }

    /// Feeds one token; returns the text it releases.
    public mutating func append(_ token: Int) -> String {
        guard finished == nil else { return "" }
        if endTokens.contains(token) { return finish(.stop) }
        held += decoder.append(token)
        for candidate in stop {
            if let range = held.range(of: candidate) {
                let released = String(held[..<range.lowerBound])
                held = ""
                text += released
                finished = .stop
                return released
            }
        }
        // Keep back the longest tail of `held` that is a prefix of some stop string.
        var keep = 0
        for candidate in stop {
            for length in stride(from: min(candidate.count, held.count), to: keep, by: -1)
            where held.hasSuffix(candidate.prefix(length)) {
                keep = length
                break
            }
        }
        let released = String(held.dropLast(keep))
        held = String(held.suffix(keep))
        text += released
        return released
    }

    /// Ends the stream (length limit or end of generation): releases held text.
    public mutating func flush() -> String {
        let released = held + decoder.finish()
        held = ""
        text += released
        return released
    }

    mutating func finish(_ reason: FinishReason) -> String {
        if finished == nil { finished = reason }
        return flush()
    }
}

/// The rules that end a generation, in one place: the token limit, stop strings and
/// end-of-generation tokens (through ``TextStream``), and the flush of held-back text at the end.
/// `Engine.generate` and a server's batched instances both drive their sequences with it.
public struct GenerationDriver: Sendable {
    private var stream: TextStream
    /// Tokens generated so far (a resumed generation counts those it was resumed with).
    public private(set) var generated: Int
    private let limit: Int

    /// - Parameter resumedTokens: tokens generated before (a sequence continued from a snapshot):
    ///   their text was released already; the stream is brought to the state they left it in.
    public init(tokenizer: Tokenizer, parameters: GenerationParameters, resumedTokens: [Int] = []) {
        stream = TextStream(
            tokenizer: tokenizer, stop: parameters.stop, stopAtEndOfGeneration: parameters.stopAtEndOfGeneration)
        for token in resumedTokens { _ = stream.append(token) }
        generated = resumedTokens.count
        limit = parameters.maxTokens ?? Int.max
    }

    /// The token limit is reached: no further step.
    public var reachedLimit: Bool { generated >= limit }

    /// The text released so far.
    public var text: String { stream.text }

    /// Takes a sampled token: the text it releases, and why the generation ends with it (a stop
    /// string or end-of-generation token: `.stop`; the token limit: `.length`), nil to go on.
    public mutating func accept(_ token: Int) -> (text: String, finished: FinishReason?) {
        generated += 1
        let text = stream.append(token)
        if let finished = stream.finished { return (text, finished) }
        return (text, reachedLimit ? .length : nil)
    }

    /// Ends the generation for `reason`: the text still held back (a possible stop string's
    /// start, an incomplete character), empty when a stop already released everything.
    public mutating func finish(_ reason: FinishReason) -> String {
        stream.finished == nil ? stream.finish(reason) : ""
    }
}

extension Engine {
    /// Generates from `prompt` token ids on a sequence of its own, calling `onToken` for each
    /// token (return false to stop early). Runs on the caller's thread.
    public func generate(
        prompt: [Int], parameters: GenerationParameters,
        onToken: (GeneratedToken) -> Bool = { _ in true }
    ) throws(EngineError) -> GenerationResult {
        let sequence = try makeSequence(tokens: prompt, sampling: parameters.sampling)
        return try generate(on: sequence, parameters: parameters, onToken: onToken)
    }

    /// Generates on an existing sequence (its pending tokens are the prompt; its sampler is used,
    /// `parameters.sampling` is not).
    public func generate(
        on sequence: EngineSequence, parameters: GenerationParameters,
        onToken: (GeneratedToken) -> Bool = { _ in true }
    ) throws(EngineError) -> GenerationResult {
        let prompt = sequence.tokens
        var driver = GenerationDriver(tokenizer: tokenizer, parameters: parameters)
        var generated: [Int] = []
        var reason = FinishReason.length
        while !driver.reachedLimit {
            guard sequence.tokens.count < sequence.capacity else {
                if generated.isEmpty {
                    throw EngineError(
                        .contextOverflow,
                        "the prompt of \(prompt.count) tokens fills the context of \(sequence.capacity); nothing can be generated"
                    )
                }
                break
            }
            let choice = try step([sequence])[0]
            generated.append(choice.token)
            let (text, finished) = driver.accept(choice.token)
            let keepGoing = onToken(GeneratedToken(token: choice.token, logprob: choice.logprob, text: text))
            if let finished {
                reason = finished
                break
            }
            if !keepGoing { break }
        }
        let rest = driver.finish(reason)
        if !rest.isEmpty { _ = onToken(GeneratedToken(token: -1, logprob: nil, text: rest)) }
        return GenerationResult(
            tokens: generated, text: driver.text, finishReason: reason, promptTokens: prompt.count,
            timings: sequence.timings)
    }
}
