/// Whether a new instance fits a node's memory budget, and which idle instances to stop first
/// when it does not: least recently used first, as Ollama unloads idle models. Pure: the
/// executor gathers the facts, applies the decision and reports back.
public enum MemoryAdmission {
    /// An idle instance that may be stopped to make room.
    public struct Candidate: Sendable, Equatable {
        public var instance: String
        public var deployment: String
        /// Memory it holds (weights + KV cache).
        public var bytes: Int
        /// When it was last used, on the executor's clock (only the order matters).
        public var lastUsed: Double

        public init(instance: String, deployment: String, bytes: Int, lastUsed: Double) {
            self.instance = instance
            self.deployment = deployment
            self.bytes = bytes
            self.lastUsed = lastUsed
        }
    }

    public enum Decision: Sendable, Equatable {
        /// It fits as things are.
        case admit
        /// It fits once these instances stop, in this order.
        case evict([Candidate])
        /// It does not fit even with every candidate stopped.
        case refuse(needed: Int, free: Int, budget: Int, evictable: Int)
    }

    /// Decides for an instance of `bytes` of `deployment` on a node with `budget` bytes of which
    /// `used` are reserved. Candidates of the same deployment are never chosen (they would be
    /// replaced by the instance being started).
    public static func decide(bytes: Int, for deployment: String, budget: Int, used: Int, idle: [Candidate]) -> Decision
    {
        let free = budget - used
        guard bytes > free else { return .admit }
        let others = idle.filter { $0.deployment != deployment }.sorted {
            ($0.lastUsed, $0.instance) < ($1.lastUsed, $1.instance)
        }
        var chosen: [Candidate] = []
        var freed = 0
        for candidate in others where free + freed < bytes {
            chosen.append(candidate)
            freed += candidate.bytes
        }
        guard free + freed >= bytes else {
            return .refuse(needed: bytes, free: free, budget: budget, evictable: freed)
        }
        return .evict(chosen)
    }
}
