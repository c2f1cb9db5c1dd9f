public import Checkpoint
public import Engine
public import Foundation
public import Scheduling
public import Store

/// A node: what the control side (the deployment registry, the autoscaler, a cluster's
/// scheduler) knows of a machine, and the only way it touches one. `sllm serve` uses the
/// in-process ``LocalWorker``; a cluster's controller uses a network client of the same shape,
/// so every value crossing it is `Codable`, and streams carry Codable events, not closures.
public protocol Worker: Sendable {
    /// The node this worker runs (a network client knows it once the worker has registered).
    var node: NodeID { get }

    /// Where other nodes fetch this node's checkpoints (nil where nodes cannot fetch from it:
    /// `sllm serve`'s one node).
    var checkpointURL: URL? { get }

    /// Identity, cores, memory, what each tier holds and each tier's measured load bandwidth.
    func inventory() async -> NodeInventory

    /// What the control side needs of a model in this node's store, without its weights:
    /// architecture, context, sizes, and the tokenizer's files (the API tokenizes requests).
    /// - Throws: `StoreError.notFound` when the store does not hold it.
    func modelFacts(_ model: ModelName) async throws -> ModelFacts

    /// Checks a source `sllm pull` takes (a store name, an alias, a URL, a `pip:` source, a file
    /// on this node) and says whether the store holds it and what a pull would name it.
    func resolve(_ source: String) async throws -> SourceResolution

    /// Pulls a source into this node's store as `name` (resuming a download cut short).
    func pull(_ source: String, as name: ModelName) -> AsyncThrowingStream<PullEvent, any Error>

    /// Brings a model in the store into a faster tier ahead of use (`.dram`: the DRAM cache).
    func prefetch(_ model: ModelName, into tier: Tier) async throws -> LoadReport

    /// Drops a model from a tier (`.dram`: its DRAM copy, pooled for reuse); returns the bytes freed.
    func evict(_ model: ModelName, from tier: Tier) async throws -> Int

    /// Re-hashes DRAM copies (of `model`, or of every cached model); corrupt ones are dropped.
    func verifyCache(_ model: ModelName?) async throws -> [DRAMVerification]

    /// Loads the model from the fastest tier holding it and starts an instance on it: load
    /// progress events, then `.started` with what the start cost.
    func startInstance(_ spec: InstanceSpec) -> AsyncThrowingStream<StartEvent, any Error>

    /// Stops an instance: its running jobs end (finish reason from the interruption), its memory is freed.
    func stopInstance(_ id: String) async

    /// Runs one generation on an instance (batched with the instance's other jobs); a job with
    /// `resume` continues a snapshot exported from another instance. Ending the iteration early
    /// (or cancelling the consuming task) cancels the job and frees its slot.
    func run(_ job: GenerationJob, on instance: String) -> AsyncThrowingStream<GenerationEvent, any Error>

    /// Cancels a running job (as ending its stream does); unknown ids are ignored.
    func cancel(job: String, on instance: String) async

    /// A running job's sequence as another instance can continue it (tokens so far and sampler
    /// state): the hook live migration uses. Nil when the job is not running there.
    func snapshot(job: String, on instance: String) async -> SequenceSnapshot?

    /// Live migration's first stage, on the target: computes the KV cache of `tokens` (a running
    /// job's snapshot on the source) and keeps it, so that the job resumed here later computes
    /// only what came after. Runs between the instance's steps.
    func warm(_ tokens: [Int], on instance: String) async throws -> WarmReport

    /// Live migration's hand-over, on the source: takes a running job out of the instance's
    /// batch between two steps; its stream then ends with `.detached` carrying the snapshot that
    /// continues it (every token before was reported). False when the job is not running there.
    func detach(job: String, on instance: String) async -> Bool
}

extension Worker {
    public var checkpointURL: URL? { nil }
}

/// A node as the control side sees it.
public struct NodeInventory: Sendable, Codable, Equatable {
    public var node: NodeID
    public var cores: Int
    /// Compute threads each instance gets.
    public var threadsPerInstance: Int
    /// Memory instances may take on the node (weights + KV caches), and what its running
    /// instances take of it.
    public var memoryBudgetBytes: Int
    public var reservedBytes: Int
    /// The DRAM cache's budget (what it holds is in `tiers`).
    public var dramBudgetBytes: Int
    public var tiers: [TierInventory]
    /// Instances running on the node.
    public var instances: [String]
    /// What each of them is (a controller that restarted, or took over, adopts them from this).
    public var running: [InstanceInfo]
    /// What each of them holds and how its prompt cache serves (nil from a node that does not say).
    public var usage: [InstanceUsage]?
    /// Jobs running on the node's instances.
    public var runningJobs: Int
    /// Fetch bandwidth from each peer node or remote store this node has fetched a checkpoint
    /// from (nil from a node that does not say).
    public var links: [LinkInventory]?
    /// Why the node does not answer (a network worker's last inventory, kept while it cannot be
    /// reached); nil while it answers. Placement passes such a node over.
    public var unreachable: String?

    public init(
        node: NodeID, cores: Int, threadsPerInstance: Int, memoryBudgetBytes: Int, reservedBytes: Int,
        dramBudgetBytes: Int, tiers: [TierInventory], instances: [String], running: [InstanceInfo] = [],
        runningJobs: Int, unreachable: String? = nil, usage: [InstanceUsage]? = nil, links: [LinkInventory]? = nil
    ) {
        self.links = links
        self.unreachable = unreachable
        self.running = running
        self.usage = usage
        self.node = node
        self.cores = cores
        self.threadsPerInstance = threadsPerInstance
        self.memoryBudgetBytes = memoryBudgetBytes
        self.reservedBytes = reservedBytes
        self.dramBudgetBytes = dramBudgetBytes
        self.tiers = tiers
        self.instances = instances
        self.runningJobs = runningJobs
    }

    /// The fastest tier holding `model`, nil when the node holds it nowhere.
    public func fastestTier(holding model: ModelName) -> Tier? {
        tiers.first { tier in tier.models.contains { $0.name == model } }?.tier
    }
}

/// What one tier of a node holds, and how fast loads from it have been.
public struct TierInventory: Sendable, Codable, Equatable {
    public var tier: Tier
    public var models: [HeldModel]
    /// Bytes the tier's models take.
    public var usedBytes: Int
    /// Load bandwidth from this tier, bytes per second: an exponentially weighted average of
    /// the node's real loads (nil until one has run).
    public var loadBytesPerSecond: Double?
    /// Loads the average has seen.
    public var loads: Int
}

/// How fast checkpoints have come to a node from one source: the exponentially weighted average
/// of its fetches' rates (each its bytes over the time from its first chunk's request to its last
/// chunk's arrival).
public struct LinkInventory: Sendable, Codable, Equatable {
    /// A peer node's name or a remote store's address.
    public var source: String
    public var bytesPerSecond: Double
    public var fetches: Int
    /// Bytes fetched from it in all.
    public var bytes: Int

    public init(source: String, bytesPerSecond: Double, fetches: Int, bytes: Int) {
        self.source = source
        self.bytesPerSecond = bytesPerSecond
        self.fetches = fetches
        self.bytes = bytes
    }
}

public struct HeldModel: Sendable, Codable, Equatable {
    public var name: ModelName
    public var bytes: Int
}

/// A node's identity in a cluster (the host name for `sllm serve`).
public struct NodeID: Hashable, Sendable, Codable, CustomStringConvertible {
    public var rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public init(from decoder: any Decoder) throws { rawValue = try decoder.singleValueContainer().decode(String.self) }
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
    public var description: String { rawValue }
}

/// A model's facts, as the control side needs them: sizes for admission and sizing, and the
/// tokenizer's inputs (requests are tokenized and checked before they wait for an instance).
public struct ModelFacts: Sendable, Codable {
    public var name: ModelName
    public var architecture: String
    public var contextLength: Int
    /// Bytes of the checkpoint's partitions (what a load reads and an instance maps).
    public var weightBytes: Int
    /// KV-cache bytes per position of one sequence.
    public var kvBytesPerPosition: Int
    /// The checkpoint's index (tensors, files and their checksums, tokenizer record, chat template).
    public var index: CheckpointIndex
    /// The tokenizer files named by the index, by name.
    public var tokenizerFiles: [String: Data]
}

/// What `resolve` found a source to be.
public struct SourceResolution: Sendable, Codable, Equatable {
    /// The store holds it under this name already.
    public var local: ModelName?
    /// The name a pull would store it as (the source's own name, or its alias).
    public var pullName: ModelName?
    /// The source as it can be pulled again later (a relative path made absolute).
    public var pullableSource: String?
}

/// What a pull reports.
public enum PullEvent: Sendable, Codable {
    /// A phase (`download`, `convert`, `verify`) and its bytes; total 0 when unknown (pip).
    case progress(phase: String, completedBytes: Int64, totalBytes: Int64)
    case finished(name: ModelName, bytes: Int)
}

/// What a start reports.
public enum StartEvent: Sendable, Codable {
    /// Fraction (0...1) of the checkpoint's bytes loaded.
    case loading(Double)
    case started(InstanceInfo)
}

/// A load into a tier: where it came from, how long it took.
public struct LoadReport: Sendable, Codable, Equatable {
    public var model: ModelName
    public var tier: Tier
    public var bytes: Int
    public var seconds: Double
}

/// What to start: a model with the deployment's engine settings.
public struct InstanceSpec: Sendable, Codable, Equatable {
    public var id: String
    public var deployment: String
    public var model: ModelName
    /// Context, sequences and KV budget, from ``InstanceSizing`` (the one place that decides them).
    public var sizing: InstanceSizing
    /// Nodes to fetch the checkpoint from when this node's store lacks it, in order of
    /// preference (the scheduler's choice: nodes holding it, or for a scale-out the node that is
    /// fetching it last, so transfers chain); the first `spread` share the chunks. The node's own
    /// remote stores come after them.
    public var sources: [PeerSource]
    public var spread: Int

    public init(
        id: String, deployment: String, model: ModelName, sizing: InstanceSizing, sources: [PeerSource] = [],
        spread: Int = 1
    ) {
        self.id = id
        self.deployment = deployment
        self.model = model
        self.sizing = sizing
        self.sources = sources
        self.spread = spread
    }
}

/// Another node's checkpoints, as a fetch reaches them: `url/NAME/FILE` (behind the cluster token).
public struct PeerSource: Sendable, Codable, Equatable {
    public var node: NodeID
    public var url: URL
    /// The node is fetching the checkpoint itself (it relays what it has verified), and may not
    /// have begun yet: its answer for the index waits for the fetch to begin.
    public var relays: Bool

    public init(node: NodeID, url: URL, relays: Bool = false) {
        self.node = node
        self.url = url
        self.relays = relays
    }
}

/// A started instance and what its start cost.
public struct InstanceInfo: Sendable, Codable, Equatable {
    public var id: String
    public var deployment: String
    public var model: ModelName
    public var startedAt: Date
    /// The tier the checkpoint came from.
    public var tier: Tier
    public var loadSeconds: Double
    public var engineInitSeconds: Double
    public var weightBytes: Int
    /// The most KV cache the instance may use.
    public var kvCacheBytes: Int
    public var contextLength: Int
    /// For a checkpoint fetched from peers or a remote store: its bytes by source, and the
    /// seconds each source took (from its first chunk's request to its last chunk's arrival).
    public var fetchedBytes: [String: Int]?
    public var fetchSeconds: [String: Double]?
    /// Thread seconds the load spent checking the checkpoint's checksums, overlapped with its
    /// reads (nil for a load that read nothing: a DRAM hit maps verified memory).
    public var verifySeconds: Double?
}

/// What a running instance holds and how its prompt cache has served, as its node reports it.
public struct InstanceUsage: Sendable, Codable, Equatable {
    public var id: String
    /// KV-cache bytes held: the running sequences' and those kept for the prompt cache.
    public var kvUsedBytes: Int
    /// The most it may hold.
    public var kvCacheBytes: Int
    /// Sequences generating now, and finished ones kept for a later prompt sharing their prefix.
    public var activeSequences: Int
    public var retainedSequences: Int
    /// Requests the instance took (migrated-in ones not counted again), and of them those whose
    /// prompt began with tokens the prompt cache held.
    public var requests: Int
    public var promptCacheHits: Int
    /// Their prompt tokens, and of them those served from the prompt cache (OpenAI's `cached_tokens`).
    public var promptTokens: Int
    public var cachedPromptTokens: Int

    public init(
        id: String, kvUsedBytes: Int, kvCacheBytes: Int, activeSequences: Int = 0, retainedSequences: Int = 0,
        requests: Int = 0, promptCacheHits: Int = 0, promptTokens: Int = 0, cachedPromptTokens: Int = 0
    ) {
        self.id = id
        self.kvUsedBytes = kvUsedBytes
        self.kvCacheBytes = kvCacheBytes
        self.activeSequences = activeSequences
        self.retainedSequences = retainedSequences
        self.requests = requests
        self.promptCacheHits = promptCacheHits
        self.promptTokens = promptTokens
        self.cachedPromptTokens = cachedPromptTokens
    }
}

/// What warming a migration's target computed.
public struct WarmReport: Sendable, Codable, Equatable {
    /// Tokens the target now holds in its KV cache for the sequence.
    public var tokens: Int
    /// Of them, those it computed now (the rest it held from an earlier warm).
    public var computed: Int
    /// Engine seconds spent computing them.
    public var seconds: Double

    public init(tokens: Int, computed: Int, seconds: Double) {
        self.tokens = tokens
        self.computed = computed
        self.seconds = seconds
    }
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
    /// Continue this sequence (exported by ``Worker/snapshot(job:on:)`` from another instance)
    /// instead of starting from `prompt`: its generated tokens count towards `maxTokens`, and
    /// only tokens after it are reported.
    public var resume: SequenceSnapshot?

    public init(
        id: String, prompt: [Int], sampling: SamplingParameters, maxTokens: Int?, stop: [String], logprobs: Int?
    ) {
        self.id = id
        self.prompt = prompt
        self.sampling = sampling
        self.sampling.logprobs = sampling.logprobs || logprobs != nil
        self.maxTokens = maxTokens
        self.stop = stop
        self.logprobs = logprobs
    }

    /// When the job ends, as the engine's ``GenerationDriver`` takes it.
    public var parameters: GenerationParameters {
        var parameters = GenerationParameters()
        parameters.sampling = sampling
        parameters.maxTokens = maxTokens
        parameters.stop = stop
        parameters.stopAtEndOfGeneration = stopAtEndOfGeneration
        return parameters
    }
}

/// What a running job reports.
public enum GenerationEvent: Sendable, Codable {
    /// One generated token and the text it releases (possibly empty); token -1 carries text
    /// flushed at the end.
    case token(TokenOutput)
    /// The job ended.
    case finished(GenerationSummary)
    /// The job left the instance for another (live migration): the snapshot continues it there;
    /// every token before it was reported. Nothing follows on this stream.
    case detached(SequenceSnapshot)
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
