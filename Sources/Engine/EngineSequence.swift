import Synchronization

/// One sequence being generated: its tokens, its KV cache, its sampler.
///
/// Tokens the cache does not hold yet (a new prompt, the last sampled token, tokens appended
/// for a migration) are *pending*; the next `Engine.step` or `Engine.prefill` computes them.
/// `snapshot()` is everything another engine needs to continue identically.
public final class EngineSequence: @unchecked Sendable {
    // Sendable: mutated only by the engine under its forward lock, or by the one task that owns it.
    public let id: Int
    /// Every token: the prompt and everything generated so far.
    public private(set) var tokens: [Int]
    /// How many of `tokens` the KV cache holds.
    public internal(set) var cachedCount: Int = 0
    public internal(set) var sampler: Sampler
    /// Engine time spent on this sequence's prompt tokens and on each generated token.
    public internal(set) var timings = SequenceTimings()
    /// Logits after the last computed token (nil before the first computation).
    var logits: [Float]?
    let cache: KVCache
    let budget: KVBudget
    /// How many tokens the sequence was created with (a prompt, or a migrated history).
    public internal(set) var promptCount: Int

    init(id: Int, tokens: [Int], sampler: Sampler, cache: KVCache, budget: KVBudget) {
        self.id = id
        self.tokens = tokens
        self.sampler = sampler
        self.cache = cache
        self.budget = budget
        promptCount = tokens.count
    }

    deinit { budget.release(cachedCount) }

    /// The context capacity in tokens.
    public var capacity: Int { cache.capacity }
    /// Tokens waiting to be computed.
    public var pendingCount: Int { tokens.count - cachedCount }

    /// Adds tokens to compute next; callers go through `Engine.append`, which validates them.
    func append(_ more: [Int]) { tokens.append(contentsOf: more) }

    func appendSampled(_ token: Int) { tokens.append(token) }

    func truncate(to count: Int) { tokens.removeLast(tokens.count - count) }

    /// The tokens and sampler state: enough to continue this sequence elsewhere.
    public func snapshot() -> SequenceSnapshot {
        SequenceSnapshot(tokens: tokens, promptCount: promptCount, sampler: sampler.state)
    }
}

/// What migrates: tokens (the target recomputes the KV cache from them) and the sampler state.
public struct SequenceSnapshot: Sendable, Codable, Equatable {
    public var tokens: [Int]
    public var promptCount: Int
    public var sampler: Sampler.State

    public init(tokens: [Int], promptCount: Int, sampler: Sampler.State) {
        self.tokens = tokens
        self.promptCount = promptCount
        self.sampler = sampler
    }
}

/// Engine-only time of one sequence, in seconds.
public struct SequenceTimings: Sendable, Equatable, Codable {
    /// Computing tokens that were given (prompt, migrated history).
    public var prefill: Double = 0
    public var prefillTokens: Int = 0
    /// Computing generated tokens (one per step).
    public var decode: Double = 0
    public var decodeTokens: Int = 0

    /// Milliseconds per generated token.
    public var millisecondsPerToken: Double { decodeTokens == 0 ? 0 : decode * 1000 / Double(decodeTokens) }
}

/// KV-cache positions in use across an engine's sequences, against a byte budget.
final class KVBudget: Sendable {
    let bytesPerPosition: Int
    let limit: Int
    private let used = Mutex(0)

    init(bytesPerPosition: Int, limit: Int) {
        self.bytesPerPosition = bytesPerPosition
        self.limit = limit
    }

    func reserve(_ positions: Int) throws(EngineError) {
        let ok = used.withLock { used -> Bool in
            guard (used + positions) * bytesPerPosition <= limit else { return false }
            used += positions
            return true
        }
        guard ok else {
            throw EngineError(
                .outOfMemory,
                "the KV cache budget of \(limit / (1 << 20)) MiB is used up (\(usedPositions) positions held)")
        }
    }

    func release(_ positions: Int) { used.withLock { $0 -= positions } }

    var usedPositions: Int { used.withLock { $0 } }
}
