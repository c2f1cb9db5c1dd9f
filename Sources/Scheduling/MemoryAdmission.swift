/// Whether a new instance fits a node's memory budget, and which idle instances to stop first
/// when it does not: least recently used first, as Ollama unloads idle models, except that an
/// instance that is cheap to start again (its checkpoint in this node's DRAM) goes before one
/// that is dear (read from a disk or fetched over the network): each second its reload would
/// take counts as `reloadWorth` seconds of more recent use. Pure: the executor gathers the
/// facts, applies the decision and reports back.
public enum MemoryAdmission {
    /// An idle instance that may be stopped to make room.
    public struct Candidate: Sendable, Equatable {
        public var instance: String
        public var deployment: String
        /// Memory it holds (weights + KV cache).
        public var bytes: Int
        /// When it was last used, on the executor's clock (seconds; only differences matter).
        public var lastUsed: Double
        /// The model it serves.
        public var model: String
        /// Seconds its next start would spend loading, from the fastest tier of this node that
        /// holds its checkpoint (0 when unknown).
        public var reloadSeconds: Double

        public init(
            instance: String, deployment: String, bytes: Int, lastUsed: Double, model: String = "",
            reloadSeconds: Double = 0
        ) {
            self.instance = instance
            self.deployment = deployment
            self.bytes = bytes
            self.lastUsed = lastUsed
            self.model = model
            self.reloadSeconds = reloadSeconds
        }

        /// The eviction order's key: lowest goes first.
        var keep: Double { lastUsed + reloadSeconds * MemoryAdmission.reloadWorth }
    }

    /// Seconds of recent use that one second of reload is worth when choosing what to stop: an
    /// instance whose reload takes 0.5 s longer is kept as if used 30 s later.
    public static let reloadWorth = 60.0

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
        guard bytes > budget - used else { return .admit }
        return decide(bytes: bytes, for: deployment, budget: budget, used: used, ordered: evictionOrder(idle))
    }

    /// The order admission stops idle instances in (what `decide` walks).
    public static func evictionOrder(_ idle: [Candidate]) -> [Candidate] {
        idle.sorted { ($0.keep, $0.instance) < ($1.keep, $1.instance) }
    }

    /// `decide` over candidates already in ``evictionOrder(_:)``, for a caller that decides often
    /// on the same idle instances (the simulator keeps each node's order until it changes).
    public static func decide(bytes: Int, for deployment: String, budget: Int, used: Int, ordered: [Candidate])
        -> Decision
    {
        let free = budget - used
        guard bytes > free else { return .admit }
        var chosen: [Candidate] = []
        let freed = walk(bytes: bytes, for: deployment, free: free, ordered: ordered) { chosen.append($0) }
        guard free + freed >= bytes else {
            return .refuse(needed: bytes, free: free, budget: budget, evictable: freed)
        }
        return .evict(chosen)
    }

    /// What `decide` would cost in reloads: the seconds the instances it stops will take to load
    /// again at their next start (0 when it admits as things are), or nil when it would refuse.
    /// Allocates nothing (a scheduler asks it of every node at each placement).
    public static func roomSeconds(bytes: Int, for deployment: String, budget: Int, used: Int, ordered: [Candidate])
        -> Double?
    {
        let free = budget - used
        guard bytes > free else { return 0 }
        var seconds = 0.0
        let freed = walk(bytes: bytes, for: deployment, free: free, ordered: ordered) { seconds += $0.reloadSeconds }
        return free + freed >= bytes ? seconds : nil
    }

    /// Visits the candidates `decide` stops, in order, until `bytes` fit; returns the bytes freed.
    private static func walk(
        bytes: Int, for deployment: String, free: Int, ordered: [Candidate], _ visit: (Candidate) -> Void
    ) -> Int {
        var freed = 0
        for candidate in ordered where free + freed < bytes && candidate.deployment != deployment {
            visit(candidate)
            freed += candidate.bytes
        }
        return freed
    }
}
