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
    /// Requests about running jobs (`snapshot(of:)`, `warm(_:)`, `detach(_:)`), answered by the
    /// loop between steps, in order.
    private var controls: [Control] = []
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

    private enum Control {
        case snapshot(String, CheckedContinuation<SequenceSnapshot?, Never>)
        case warm([Int], CheckedContinuation<Result<WarmReport, ServingError>, Never>)
        case detach(String, CheckedContinuation<Bool, Never>)

        /// The answer when the instance stops first.
        func refuse(_ error: ServingError) {
            switch self {
            case .snapshot(_, let reply): reply.resume(returning: nil)
            case .warm(_, let reply): reply.resume(returning: .failure(error))
            case .detach(_, let reply): reply.resume(returning: false)
            }
        }
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
    /// Sequence and prompt-cache counts as the loop last left them (read by `usage()`).
    private let counts = Mutex(InstanceUsage(id: "", kvUsedBytes: 0, kvCacheBytes: 0))

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

    /// What the instance holds now and how its prompt cache has served.
    func usage() -> InstanceUsage {
        var usage = counts.withLock { $0 }
        usage.id = info.id
        usage.kvUsedBytes = engine.kvCacheBytesInUse
        usage.kvCacheBytes = info.kvCacheBytes
        return usage
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
        await withCheckedContinuation { send(.snapshot(jobID, $0)) }
    }

    /// Computes and keeps the KV cache of `tokens` (a migration's target, before the job moves
    /// here), between two steps.
    func warm(_ tokens: [Int]) async throws(ServingError) -> WarmReport {
        try await withCheckedContinuation { send(.warm(tokens, $0)) }.get()
    }

    /// Takes a running job out of the batch between two steps; its stream ends with
    /// `.detached` and its snapshot. False when it is not in the batch.
    func detach(_ jobID: String) async -> Bool {
        await withCheckedContinuation { send(.detach(jobID, $0)) }
    }

    private func send(_ control: Control) {
        let accepted = condition.withLock {
            guard !stopping else { return false }
            controls.append(control)
            condition.signal()
            return true
        }
        if !accepted { control.refuse(stoppedError) }
    }

    private var stoppedError: ServingError {
        ServingError(.unavailable, "instance \(info.id) of `\(info.deployment)` stopped")
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
            counts.withLock { [active = active.count, retained = retained.count] usage in
                usage.activeSequences = active
                usage.retainedSequences = retained
            }
            var arrivals: [Submitted] = []
            var cancels: Set<String> = []
            var requests: [Control] = []
            let stop: Bool = condition.withLock {
                while incoming.isEmpty && active.isEmpty && cancelled.isEmpty && controls.isEmpty && !stopping {
                    condition.wait()
                }
                requests = controls
                controls.removeAll()
                if stopping { return true }
                let room = max(0, maxSequences - active.count)
                arrivals = Array(incoming.prefix(room))
                incoming.removeFirst(arrivals.count)
                cancels = cancelled
                cancelled.removeAll()
                return false
            }
            if stop {
                let (left, unanswered) = condition.withLock { () -> ([Submitted], [Control]) in
                    defer {
                        incoming.removeAll()
                        controls.removeAll()
                    }
                    return (incoming, controls)
                }
                let failure = stoppedError
                for request in requests + unanswered { request.refuse(failure) }
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
                    // A migrated-in job was counted where it began.
                    if arrival.job.resume == nil {
                        counts.withLock { usage in
                            usage.requests += 1
                            usage.promptTokens += arrival.job.prompt.count
                            usage.cachedPromptTokens += cached
                            if cached > 0 { usage.promptCacheHits += 1 }
                        }
                    }
                } catch {
                    arrival.continuation.finish(throwing: ServingError(error))
                }
            }
            for request in requests { answer(request, active: &active) }
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
            // Each job gets the choice made for its own sequence (`choices` is in the order the
            // jobs were stepped); the jobs that end leave afterwards.
            var going: [Active] = []
            for (job, choice) in zip(active, choices) {
                var job = job
                if emit(choice, for: &job) { going.append(job) }
            }
            active = going
        }
    }

    /// Answers a request about running jobs, between two steps.
    private func answer(_ request: Control, active: inout [Active]) {
        switch request {
        case .snapshot(let id, let reply):
            reply.resume(returning: active.first { $0.job.id == id }?.sequence.snapshot())
        case .warm(let tokens, let reply):
            do {
                reply.resume(returning: .success(try warm(tokens, active: active)))
            } catch {
                reply.resume(returning: .failure(ServingError(error)))
            }
        case .detach(let id, let reply):
            guard let index = active.firstIndex(where: { $0.job.id == id }) else {
                reply.resume(returning: false)
                return
            }
            let job = active.remove(at: index)
            job.continuation.yield(.detached(job.sequence.snapshot()))
            job.continuation.finish()
            // Kept: should the target fail, the job resumed here computes nothing again.
            retain(job.sequence)
            reply.resume(returning: true)
        }
    }

    private func warm(_ tokens: [Int], active: [Active]) throws -> WarmReport {
        let began = ContinuousClock.now
        // The job these tokens belong to was handed over and runs here already (its hand-over
        // overtook a warm sent beside the detach): its sequence holds them.
        if let resumed = active.first(where: { $0.job.resume != nil && $0.sequence.tokens.starts(with: tokens) }) {
            return WarmReport(tokens: resumed.sequence.cachedCount, computed: 0, seconds: seconds(since: began))
        }
        let activeCount = active.count
        let sequence: EngineSequence
        if let kept = takeRetained(sharingPrefixWith: tokens) {
            sequence = kept
            try engine.reuse(sequence, prompt: tokens, sampling: .greedy)
        } else {
            makeRoom(activeCount: activeCount)
            sequence = try engine.makeSequence(tokens: tokens)
        }
        let held = sequence.cachedCount
        // The job's hand-over brings more tokens, whose last gives the logits.
        try engine.prefill(sequence, logits: false)
        retain(sequence)
        return WarmReport(
            tokens: sequence.cachedCount, computed: sequence.cachedCount - held, seconds: seconds(since: began))
    }

    /// A sequence for a new job: the retained one sharing the longest prefix with its prompt (or,
    /// for a resumed job, with its snapshot: a migration warmed it), or a fresh one (dropping the
    /// least recently used retained sequence when slots are full).
    private func sequence(for job: GenerationJob, activeCount: Int) throws -> (EngineSequence, Int) {
        if let snapshot = job.resume {
            if let sequence = takeRetained(sharingPrefixWith: snapshot.tokens) {
                // Only its prompt's share counts as the prompt cache's (OpenAI's `cached_tokens`).
                return (sequence, min(try engine.reuse(sequence, snapshot: snapshot), snapshot.promptCount))
            }
            makeRoom(activeCount: activeCount)
            return (try engine.makeSequence(snapshot: snapshot), 0)
        }
        if let sequence = takeRetained(sharingPrefixWith: job.prompt) {
            return (sequence, try engine.reuse(sequence, prompt: job.prompt, sampling: job.sampling))
        }
        makeRoom(activeCount: activeCount)
        return (try engine.makeSequence(tokens: job.prompt, sampling: job.sampling), 0)
    }

    /// Removes and returns the retained sequence sharing the longest prefix with `tokens`.
    private func takeRetained(sharingPrefixWith tokens: [Int]) -> EngineSequence? {
        var best: (index: Int, common: Int)?
        for (index, candidate) in retained.enumerated() {
            let common = zip(candidate.tokens, tokens).prefix { $0 == $1 }.count
            if common > 0 && common > (best?.common ?? 0) { best = (index, common) }
        }
        return best.map { retained.remove(at: $0.index) }
    }

    /// Drops the least recently used retained sequences until a new one fits the slots.
    private func makeRoom(activeCount: Int) {
        while !retained.isEmpty && activeCount + retained.count >= maxSequences { retained.removeFirst() }
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
