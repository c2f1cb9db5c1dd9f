import Synchronization

/// Time as the scheduling executors see it: "now" and sleeping for keep-alive timers. The
/// system clock in production; a manual clock in tests and in the simulator, where time moves
/// only when told.
public protocol SchedulerClock: Sendable {
    /// Time since the clock's start.
    var now: Duration { get }
    /// Returns after `duration` of this clock's time; throws `CancellationError` when the task
    /// is cancelled first.
    func sleep(for duration: Duration) async throws
}

/// The continuous clock of the machine.
public struct SystemClock: SchedulerClock {
    private let start = ContinuousClock.now

    public init() {}

    public var now: Duration { ContinuousClock.now - start }

    public func sleep(for duration: Duration) async throws {
        try await Task.sleep(for: duration)
    }
}

/// A clock that moves only by `advance(by:)`: sleepers whose deadline is reached wake then, in
/// deadline order.
public final class ManualClock: SchedulerClock {
    private struct Sleeper {
        var deadline: Duration
        var continuation: CheckedContinuation<Void, any Error>?
        var cancelled = false
    }

    private struct State {
        var now = Duration.zero
        var nextID = 0
        var sleepers: [Int: Sleeper] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    public var now: Duration { state.withLock { $0.now } }

    /// Sleepers not yet woken.
    public var sleeperCount: Int { state.withLock { $0.sleepers.count } }

    public func sleep(for duration: Duration) async throws {
        let id = state.withLock { state -> Int? in
            guard duration > .zero else { return nil }
            state.nextID += 1
            state.sleepers[state.nextID] = Sleeper(deadline: state.now + duration)
            return state.nextID
        }
        guard let id else { return try Task.checkCancellation() }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let resume = state.withLock { state -> (any Error)?? in
                    guard let sleeper = state.sleepers[id] else { return .some(nil) }  // already woken
                    if sleeper.cancelled {
                        state.sleepers[id] = nil
                        return .some(CancellationError())
                    }
                    state.sleepers[id]?.continuation = continuation
                    return .none
                }
                if case .some(let error) = resume {
                    if let error { continuation.resume(throwing: error) } else { continuation.resume() }
                }
            }
        } onCancel: {
            let continuation = state.withLock { state -> CheckedContinuation<Void, any Error>? in
                guard let sleeper = state.sleepers[id] else { return nil }
                if let continuation = sleeper.continuation {
                    state.sleepers[id] = nil
                    return continuation
                }
                state.sleepers[id]?.cancelled = true
                return nil
            }
            continuation?.resume(throwing: CancellationError())
        }
    }

    /// Moves time forward and wakes every sleeper whose deadline is reached.
    public func advance(by duration: Duration) {
        let woken = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
            state.now += duration
            let due = state.sleepers.filter { $0.value.deadline <= state.now && !$0.value.cancelled }.sorted {
                $0.value.deadline < $1.value.deadline
            }
            var continuations: [CheckedContinuation<Void, any Error>] = []
            for (id, sleeper) in due {
                if let continuation = sleeper.continuation {
                    state.sleepers[id] = nil
                    continuations.append(continuation)
                } else {
                    // Registered but not yet suspended: it finds itself woken.
                    state.sleepers[id] = nil
                }
            }
            return continuations
        }
        for continuation in woken { continuation.resume() }
    }
}
