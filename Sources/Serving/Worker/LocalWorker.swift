public import Store
import Checkpoint
import Engine
import Foundation
public import Logging
import Synchronization

/// The in-process worker of `sllm serve`: instances are engines in this process, loaded through
/// the node's tiered loader.
public final class LocalWorker: Worker {
    public let loader: ModelLoader
    /// Compute threads per instance.
    public let threads: Int
    private let instances = Mutex<[String: Instance]>([:])
    /// Tokenizers of the models this node serves, built once each.
    let tokenizers: TokenizerCache
    /// Jobs submitted and not yet finished; background work (the DRAM pool fill) waits for zero.
    let runningJobs = Atomic<Int>(0)
    var isBusy: Bool { runningJobs.load(ordering: .relaxed) > 0 }
    private let logger: Logger

    public init(loader: ModelLoader, threads: Int, logger: Logger = Logger(label: "sllm.worker")) {
        self.loader = loader
        tokenizers = TokenizerCache()
        self.threads = max(1, threads)
        self.logger = logger
    }

    public func startInstance(_ spec: InstanceSpec, progress: @escaping @Sendable (Double) -> Void) async throws -> InstanceInfo {
        let name = try ModelName(spec.model)
        let start = ContinuousClock.now
        let model = try await loader.load(name) { report in
            if report.totalBytes > 0 { progress(Double(report.completedBytes) / Double(report.totalBytes)) }
        }
        let loadSeconds = seconds(since: start)
        try Task.checkCancellation()
        var options = Engine.Options()
        options.threads = threads
        // The engine clamps the context to the model's the same way; the KV budget needs it first.
        let context = max(1, min(spec.contextLength ?? 8192, model.index.config.contextLength))
        options.contextLength = context
        options.kvCacheBytes = spec.maxSequences * context * Engine.kvBytesPerPosition(model.index.config)
        let engine = try Engine(model: model, tokenizer: try tokenizers.tokenizer(of: model), options: options)
        let info = InstanceInfo(
            id: spec.id, deployment: spec.deployment, model: spec.model, startedAt: Date(), tier: model.tier.rawValue,
            loadSeconds: loadSeconds, engineInitSeconds: engine.startupSeconds, weightBytes: model.byteCount,
            kvCacheBytes: options.kvCacheBytes, contextLength: engine.contextLength)
        let instance = Instance(info: info, engine: engine, model: model, maxSequences: spec.maxSequences, logger: logger)
        instances.withLock { $0[spec.id] = instance }
        instance.start()
        logger.info("instance \(spec.id) of \(spec.deployment) started from \(model.tier.rawValue) in \(String(format: "%.1f", loadSeconds * 1000)) ms")
        return info
    }

    public func stopInstance(_ id: String) async {
        guard let instance = instances.withLock({ $0.removeValue(forKey: id) }) else { return }
        // Waits for the batching thread to leave its current step; off the cooperative pool.
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread {
                instance.stop()
                done.resume()
            }
        }
        logger.info("instance \(id) of \(instance.info.deployment) stopped")
    }

    public func run(_ job: GenerationJob, on instanceID: String) -> AsyncThrowingStream<GenerationEvent, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: GenerationEvent.self, throwing: (any Error).self)
        guard let instance = instances.withLock({ $0[instanceID] }) else {
            continuation.finish(throwing: ServingError(.unavailable, "instance \(instanceID) is not running"))
            return stream
        }
        runningJobs.add(1, ordering: .relaxed)
        continuation.onTermination = { [self] termination in
            runningJobs.subtract(1, ordering: .relaxed)
            if case .cancelled = termination { instance.cancel(job.id) }
        }
        instance.submit(job, continuation: continuation)
        return stream
    }
}
