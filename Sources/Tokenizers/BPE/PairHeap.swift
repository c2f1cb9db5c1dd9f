/// A binary max-heap of candidate merges: highest priority first, leftmost position on ties
/// (the order BPE merges in).
struct PairHeap {
    struct Pair {
        var priority: Float
        /// The left symbol's position (symbols keep the position of their first character).
        var left: Int
        /// Bytes of the two symbols when the pair was pushed; a mismatch later means it is stale.
        var length: Int

        /// Whether `self` merges before `other`.
        func precedes(_ other: Pair) -> Bool {
            priority != other.priority ? priority > other.priority : left < other.left
        }
    }

    private var items: [Pair] = []

    var isEmpty: Bool { items.isEmpty }

    mutating func push(_ pair: Pair) {
        items.append(pair)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child].precedes(items[parent]) else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Pair? {
        guard let last = items.popLast() else { return nil }
        guard !items.isEmpty else { return last }
        let top = items[0]
        items[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1
            guard left < items.count else { break }
            var best = left
            if left + 1 < items.count, items[left + 1].precedes(items[left]) { best = left + 1 }
            guard items[best].precedes(items[parent]) else { break }
            items.swapAt(best, parent)
            parent = best
        }
        return top
    }
}
