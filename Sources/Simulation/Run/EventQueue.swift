/// What happens at a simulated time.
enum SimulationEvent {
    /// A request's last token.
    case finish(request: Int)
    /// A deployment's keep-alive timer.
    case timer(instance: Int, token: Int)
    /// The load running on a node ends (its instance is ready, or a migration's target warmed).
    case loaded(node: Int)
    /// The remote store's next fetch may have ended (stale when `version` moved on).
    case remoteProgress(version: Int)
    /// A fetch from the remote store ends (its instance is ready, or a migration's target warmed).
    case fetched(instance: Int)
    /// A migration's target has recomputed its sequences: the hand-over.
    case handover(migration: Int)
    /// A start waiting for room gives up (the deployment's `roomWait`).
    case roomTimeout(instance: Int)
}

/// A binary min-heap of events by time, then by the order they were scheduled (so runs repeat).
struct EventQueue {
    private struct Entry {
        var time: Double
        var sequence: Int
        var event: SimulationEvent
    }

    private var heap: [Entry] = []
    private var nextSequence = 0

    var isEmpty: Bool { heap.isEmpty }
    var nextTime: Double? { heap.first?.time }

    private static func before(_ a: Entry, _ b: Entry) -> Bool {
        a.time < b.time || (a.time == b.time && a.sequence < b.sequence)
    }

    mutating func schedule(_ event: SimulationEvent, at time: Double) {
        heap.append(Entry(time: time, sequence: nextSequence, event: event))
        nextSequence += 1
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard Self.before(heap[child], heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> (time: Double, event: SimulationEvent)? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            guard left < heap.count else { break }
            var smallest = left
            if left + 1 < heap.count, Self.before(heap[left + 1], heap[left]) { smallest = left + 1 }
            guard Self.before(heap[smallest], heap[parent]) else { break }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
        return (top.time, top.event)
    }
}
