/// A link whose bandwidth concurrent transfers share equally (the remote store's), each also
/// held under its own cap (the receiving node's link): processor sharing, advanced as a fluid.
struct SharedLink {
    private struct Transfer {
        /// Who the bytes are for (the simulator's instance).
        var id: Int
        var remaining: Double
    }

    let bytesPerSecond: Double
    let capPerTransfer: Double
    private var transfers: [Transfer] = []
    private var updated = 0.0
    /// Bumped at every change, so a scheduled check made before it is ignored.
    private(set) var version = 0

    init(bytesPerSecond: Double, capPerTransfer: Double) {
        self.bytesPerSecond = bytesPerSecond
        self.capPerTransfer = capPerTransfer
    }

    private var rate: Double { transfers.isEmpty ? 0 : min(capPerTransfer, bytesPerSecond / Double(transfers.count)) }

    private mutating func advance(to now: Double) {
        let moved = rate * (now - updated)
        if moved > 0 { for index in transfers.indices { transfers[index].remaining -= moved } }
        updated = now
    }

    /// Starts a transfer of `bytes` for `id`; returns when the next one ends.
    mutating func add(id: Int, bytes: Int, now: Double) -> Double? {
        advance(to: now)
        transfers.append(Transfer(id: id, remaining: Double(bytes)))
        version += 1
        return nextEnd(now: now)
    }

    /// The transfers that have ended by `now` (their ids), and when the next one ends.
    mutating func finished(now: Double) -> (ids: [Int], next: Double?) {
        advance(to: now)
        var done: [Int] = []
        transfers.removeAll { transfer in
            guard transfer.remaining <= 0.5 else { return false }
            done.append(transfer.id)
            return true
        }
        if !done.isEmpty { version += 1 }
        return (done, nextEnd(now: now))
    }

    private func nextEnd(now: Double) -> Double? {
        guard let least = transfers.map(\.remaining).min() else { return nil }
        return now + max(0, least) / rate
    }
}

/// A node's checkpoint tier (DRAM cache or SSD): least recently used out first, by bytes.
struct TierCache {
    let capacity: Int
    private(set) var used = 0
    private var lastUse: [Int: Double] = [:]
    private var sizes: [Int: Int] = [:]

    init(capacity: Int) { self.capacity = capacity }

    func contains(_ model: Int) -> Bool { lastUse[model] != nil }

    mutating func touch(_ model: Int, now: Double) {
        if lastUse[model] != nil { lastUse[model] = now }
    }

    /// Puts `model` in (or marks it used); returns the models it pushed out. Models in `pinned`
    /// (a running instance maps them, as the DRAM cache's locks keep them) are never pushed out;
    /// a checkpoint that does not fit besides them, or is larger than the whole tier, is not kept.
    mutating func insert(_ model: Int, bytes: Int, now: Double, pinned: Set<Int> = []) -> [Int] {
        if lastUse[model] != nil {
            lastUse[model] = now
            return []
        }
        let movable = sizes.filter { !pinned.contains($0.key) }.values.reduce(0, +)
        guard bytes <= capacity, used - movable + bytes <= capacity else { return [] }
        var evicted: [Int] = []
        while used + bytes > capacity,
            let oldest = lastUse.filter({ !pinned.contains($0.key) }).min(by: {
                ($0.value, $0.key) < ($1.value, $1.key)
            })?
            .key
        {
            lastUse[oldest] = nil
            used -= sizes.removeValue(forKey: oldest) ?? 0
            evicted.append(oldest)
        }
        lastUse[model] = now
        sizes[model] = bytes
        used += bytes
        return evicted
    }
}
