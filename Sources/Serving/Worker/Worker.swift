public import Engine
public import Foundation

/// Where instances run. The API front, deployments and autoscaler talk to instances only
/// through this protocol; `sllm serve` uses the in-process ``LocalWorker``, and a cluster's
/// controller will use a network client of the same shape (every value crossing it is Codable).
public protocol Worker: Sendable {
    /// Loads the model from the fastest tier holding it and starts an instance on it.
    ///
    /// - Parameter progress: load progress, 0...1, called as bytes arrive.
    func startInstance(_ spec: InstanceSpec, progress: @escaping @Sendable (Double) -> Void) async throws -> InstanceInfo

    /// Stops an instance: its running jobs end (finish reason from the interruption), its memory is freed.
    func stopInstance(_ id: String) async

    /// Runs one generation on an instance (batched with the instance's other jobs). Ending the
    /// iteration early (or cancelling the consuming task) cancels the job and frees its slot.
    func run(_ job: GenerationJob, on instance: String) -> AsyncThrowingStream<GenerationEvent, any Error>
}

/// What to start: a model with the deployment's engine settings.
public struct InstanceSpec: Sendable, Codable, Equatable {
    public var id: String
    public var deployment: String
    public var model: String
    /// Context length per sequence (nil: the model's, at most 8192).
    public var contextLength: Int?
    /// Sequences batched together (the deployment's target concurrency).
    public var maxSequences: Int

    public init(id: String, deployment: String, model: String, contextLength: Int?, maxSequences: Int) {
        self.id = id
        self.deployment = deployment
        self.model = model
        self.contextLength = contextLength
        self.maxSequences = maxSequences
    }
}

/// A started instance and what its start cost.
public struct InstanceInfo: Sendable, Codable, Equatable {
    public var id: String
    public var deployment: String
    public var model: String
    public var startedAt: Date
    /// The tier the checkpoint came from (`dram`, `ssd`, `remote`).
    public var tier: String
    public var loadSeconds: Double
    public var engineInitSeconds: Double
    public var weightBytes: Int
    /// The most KV cache the instance may use.
    public var kvCacheBytes: Int
    public var contextLength: Int
}

/// One generation request as an instance runs it: prompt token ids and how to sample.
public struct GenerationJob: Sendable, Codable {
    public var id: String
    public var prompt: [Int]
    public var sampling: SamplingParameters
    public var maxTokens: Int?
    public var stop: [String]
    /// Log-probabilities to report: nil none, 0 the chosen token's, n also the n most likely
    /// alternatives at each position.
    public var logprobs: Int?
    /// Stop at the vocabulary's end-of-generation tokens (false: llama.cpp's `ignore_eos`).
    public var stopAtEndOfGeneration = true

    public init(id: String, prompt: [Int], sampling: SamplingParameters, maxTokens: Int?, stop: [String], logprobs: Int?) {
        self.id = id
        self.prompt = prompt
        self.sampling = sampling
        self.sampling.logprobs = sampling.logprobs || logprobs != nil
        self.maxTokens = maxTokens
        self.stop = stop
        self.logprobs = logprobs
    }
}

/// What a running job reports.
public enum GenerationEvent: Sendable, Codable {
    /// One generated token and the text it releases (possibly empty); token -1 carries text
    /// flushed at the end.
    case token(TokenOutput)
    /// The job ended.
    case finished(GenerationSummary)
}

public struct TokenOutput: Sendable, Codable {
    public var token: Int
    public var text: String
    /// The token's own text even when `text` holds it back; only when logprobs were asked for.
    public var piece: String
    public var logprob: Float
    public var top: [TokenAlternative]
}

public struct TokenAlternative: Sendable, Codable {
    public var token: Int
    public var piece: String
    public var logprob: Float
}

public struct GenerationSummary: Sendable, Codable {
    public var finishReason: FinishReason
    public var promptTokens: Int
    public var completionTokens: Int
    /// Prompt tokens served from the instance's prompt cache (OpenAI's `cached_tokens`).
    public var cachedTokens: Int
    /// Seconds of engine time on the prompt.
    public var prefillSeconds: Double
    /// Seconds from the job reaching the instance to its first token.
    public var firstTokenSeconds: Double
    public var decodeSeconds: Double
}
