import Engine
import Foundation
import Logging
import Store
import Synchronization
import Tokenizers

/// One running model: an engine over a loaded checkpoint and a thread that batches every job
/// submitted to it (continuous batching: jobs join and leave between decoding steps).
///
/// The engine computes on this instance's own thread, never on Swift's cooperative pool.
final class InstanceRunner: @unchecked Sendable {
    // Sendable: `incoming`, `cancelled` and `stopping` are guarded by `condition`; the engine and
    // the active jobs are touched only by the loop thread.
    let info: InstanceInfo
    let engine: Engine
    /// Keeps the weights' memory pinned while the instance lives.
    let model: LoadedModel
    private let maxSequences: Int
    private let logger: Logger
    private let condition = NSCondition()
    private var incoming: [Submitted] = []
    private var cancelled: Set<String> = []
    /// Snapshot requests (`snapshot(of:)`), answered by the loop between steps.
    private var snapshotRequests: [(job: String, reply: CheckedContinuation<SequenceSnapshot?, Never>)] = []
    private var stopping = false
    /// Set by the batching thread once it has let go of the instance (its engine and weights).
    private let exited = Exited()

    /// A flag a thread waits on.
    private final class Exited: @unchecked Sendable {
        // Sendable: `done` is guarded by `condition`.
        private let condition = NSCondition()
        private var done = false
        func signal() {
            condition.withLock {
                done = true
                condition.broadcast()
            }
        }
        func wait() { condition.withLock { while !done { condition.wait() } } }
    }

    private struct Submitted {
        var job: GenerationJob
        var continuation: AsyncThrowingStream<GenerationEvent, any Error>.Continuation
    }

    /// A job being generated.
    private struct Active {
        var job: GenerationJob
        var continuation: AsyncThrowingStream<GenerationEvent, any Error>.Continuation
        var sequence: EngineSequence
        /// When the job ends, and its text (the engine's one set of rules).
        var driver: GenerationDriver
        var joined: ContinuousClock.Instant
        var firstToken: Double?
        /// Prompt tokens whose KV cache came from an earlier request.
        var cachedTokens: Int
    }

    /// Sequences of finished jobs, kept with their KV cache so that a later prompt sharing a
    /// prefix (the same system prompt, the next turn of a chat) computes only the rest. Most
    /// recently finished last; at most `maxSequences` together with the active ones.
    private var retained: [EngineSequence] = []
    private let started = Atomic<Bool>(false)

    init(info: InstanceInfo, engine: Engine, model: LoadedModel, maxSequences: Int, logger: Logger) {
        self.info = info
        self.engine = engine
        self.model = model
        self.maxSequences = max(1, maxSequences)
        self.logger = logger
    }

    /// Starts the batching thread (once); jobs submitted before wait for it.
    func start() {
        guard !started.exchange(true, ordering: .relaxed) else { return }
        // The thread holds the instance only while its loop runs: once `exited` is signalled,
        // nothing of it keeps the weights pinned.
        let thread = Thread { [weak self, exited] in
            self?.loop()
            exited.signal()
        }
        thread.name = "sllm-instance-\(info.id)"
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// Queues a job; the loop picks it up before its next step.
    func submit(_ job: GenerationJob, continuation: AsyncThrowingStream<GenerationEvent, any Error>.Continuation) {
        let accepted = condition.withLock {
            guard !stopping else { return false }
            incoming.append(Submitted(job: job, continuation: continuation))
            condition.signal()
            return true
        }
        if !accepted {
            continuation.finish(
                throwing: ServingError(.unavailable, "instance \(info.id) of `\(info.deployment)` is stopping"))
        }
    }

    /// Cancels a job (its client went away): it leaves the batch before the next step.
    func cancel(_ jobID: String) {
        condition.withLock {
            cancelled.insert(jobID)
            condition.signal()
        }
    }

    /// A running job's sequence (tokens so far, sampler state), taken between two steps; nil
    /// when the job is not in the batch (finished, cancelled, still queued, or unknown).
    func snapshot(of jobID: String) async -> SequenceSnapshot? {
        await withCheckedContinuation { reply in
            let accepted = condition.withLock {
                guard !stopping else { return false }
                snapshotRequests.append((jobID, reply))
                condition.signal()
                return true
            }
            if !accepted { reply.resume(returning: nil) }
        }
    }

    /// Ends the loop: running jobs fail with `unavailable`. Returns once the loop has exited and
    /// its thread let go of the instance, so the caller's reference is the last and dropping it
    /// frees the engine and unpins the weights.
    func stop() {
        start()  // a loop that never ran still has to see the stop and fail what was queued
        condition.withLock {
            stopping = true
            condition.broadcast()
        }
        exited.wait()
    }

    private func loop() {
        var active: [Active] = []
        while true {
            var arrivals: [Submitted] = []
            var cancels: Set<String> = []
            var snapshots: [(job: String, reply: CheckedContinuation<SequenceSnapshot?, Never>)] = []
            let stop: Bool = condition.withLock {
                while incoming.isEmpty && active.isEmpty && cancelled.isEmpty && snapshotRequests.isEmpty && !stopping {
                    condition.wait()
                }
                snapshots = snapshotRequests
                snapshotRequests.removeAll()
                if stopping { return true }
                let room = max(0, maxSequences - active.count)
                arrivals = Array(incoming.prefix(room))
                incoming.removeFirst(arrivals.count)
                cancels = cancelled
                cancelled.removeAll()
                return false
            }
            for request in snapshots {
                request.reply.resume(returning: active.first { $0.job.id == request.job }?.sequence.snapshot())
            }
            if stop {
                let left = condition.withLock { () -> [Submitted] in
                    defer { incoming.removeAll() }
                    return incoming
                }
                let failure = ServingError(.unavailable, "instance \(info.id) of `\(info.deployment)` stopped")
                for job in active { job.continuation.finish(throwing: failure) }
                for job in left { job.continuation.finish(throwing: failure) }
                active.removeAll()
                return
            }
            if !cancels.isEmpty {
                for job in active where cancels.contains(job.job.id) {
                    job.continuation.finish()
                    retain(job.sequence)
                }
                active.removeAll { cancels.contains($0.job.id) }
                for job in arrivals where cancels.contains(job.job.id) { job.continuation.finish() }
                arrivals.removeAll { cancels.contains($0.job.id) }
            }
            for arrival in arrivals {
                do {
                    let (sequence, cached) = try sequence(for: arrival.job, activeCount: active.count)
                    // A resumed job's text so far was sent by the instance it came from: only
                    // what follows is reported.
                    let resumed =
                        arrival.job.resume.map { Array($0.tokens[min(max(0, $0.promptCount), $0.tokens.count)...]) }
                        ?? []
                    let driver = GenerationDriver(
                        tokenizer: engine.tokenizer, parameters: arrival.job.parameters, resumedTokens: resumed)
                    active.append(
                        Active(
                            job: arrival.job, continuation: arrival.continuation, sequence: sequence, driver: driver,
                            joined: .now, cachedTokens: cached))
                } catch {
                    arrival.continuation.finish(throwing: ServingError(error))
                }
            }
            guard !active.isEmpty else { continue }
            // A sequence whose context is full ends here (the engine refuses to step it), as does
            // one resumed at its token limit.
            active.removeAll { job in
                guard job.sequence.tokens.count >= job.sequence.capacity || job.driver.reachedLimit else {
                    return false
                }
                var job = job
                finish(&job, reason: .length)
                return true
            }
            guard !active.isEmpty else { continue }
            let choices: [Sampler.Choice]
            do {
                choices = try engine.step(active.map(\.sequence))
            } catch {
                logger.error("step failed on instance \(info.id): \(error)")
                for job in active { job.continuation.finish(throwing: ServingError(error)) }
                active.removeAll()
                continue
            }
            var index = 0
            while index < active.count {
                if emit(choices[index], for: &active[index]) {
                    index += 1
                } else {
                    active.remove(at: index)
                }
            }
        }
    }

    /// A sequence for a new job: the retained one sharing the longest prefix with its prompt, or
    /// a fresh one (dropping the least recently used retained sequence when slots are full).
    private func sequence(for job: GenerationJob, activeCount: Int) throws -> (EngineSequence, Int) {
        if let snapshot = job.resume {
            while !retained.isEmpty && activeCount + retained.count >= maxSequences { retained.removeFirst() }
            return (try engine.makeSequence(snapshot: snapshot), 0)
        }
        var best: (index: Int, common: Int)?
        for (index, candidate) in retained.enumerated() {
            let common = zip(candidate.tokens, job.prompt).prefix { $0 == $1 }.count
            if common > 0 && common > (best?.common ?? 0) { best = (index, common) }
        }
        if let best {
            let sequence = retained.remove(at: best.index)
            let cached = try engine.reuse(sequence, prompt: job.prompt, sampling: job.sampling)
            return (sequence, cached)
        }
        while !retained.isEmpty && activeCount + retained.count >= maxSequences { retained.removeFirst() }
        return (try engine.makeSequence(tokens: job.prompt, sampling: job.sampling), 0)
    }

    /// Keeps a finished job's sequence for later prompts.
    private func retain(_ sequence: EngineSequence) {
        retained.append(sequence)
        if retained.count > maxSequences { retained.removeFirst() }
    }

    /// Reports one sampled token; returns false when the job is over (finished or its consumer gone).
    private func emit(_ choice: Sampler.Choice, for job: inout Active) -> Bool {
        if job.firstToken == nil { job.firstToken = seconds(since: job.joined) }
        let (text, finished) = job.driver.accept(choice.token)
        var piece = ""
        var top: [TokenAlternative] = []
        if let alternatives = job.job.logprobs {
            let tokenizer = engine.tokenizer
            piece = tokenizer.decode([choice.token])
            top = engine.topLogprobs(of: job.sequence, count: alternatives).map {
                TokenAlternative(token: $0.token, piece: tokenizer.decode([$0.token]), logprob: $0.logprob)
            }
        }
        // The job's sampling computes the logprob whenever it reports logprobs (GenerationJob).
        let output = TokenOutput(token: choice.token, text: text, piece: piece, logprob: choice.logprob ?? 0, top: top)
        if case .terminated = job.continuation.yield(.token(output)) {
            retain(job.sequence)
            return false
        }
        if let finished {
            finish(&job, reason: finished)
            return false
        }
        return true
    }

    private func finish(_ job: inout Active, reason: FinishReason) {
        let rest = job.driver.finish(reason)
        if !rest.isEmpty {
            job.continuation.yield(.token(TokenOutput(token: -1, text: rest, piece: "", logprob: 0, top: [])))
        }
        let timings = job.sequence.timings
        job.continuation.yield(
            .finished(
                GenerationSummary(
                    finishReason: reason, promptTokens: job.job.prompt.count, completionTokens: job.driver.generated,
                    cachedTokens: job.cachedTokens,
                    prefillSeconds: timings.prefill, firstTokenSeconds: job.firstToken ?? 0,
                    decodeSeconds: timings.decode)))
        job.continuation.finish()
        retain(job.sequence)
    }
}
