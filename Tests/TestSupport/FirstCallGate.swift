import Foundation
import Synchronization

/// Holds the first caller of `hold()` until `release()`, and lets later ones through: a test
/// stops a load's first hand-out (its progress handler) to look at what a caller has before any
/// byte arrived, however fast the machine reads.
public final class FirstCallGate: Sendable {
    private let opened = DispatchSemaphore(value: 0)
    private let first = Mutex(true)

    public init() {}

    public func hold() {
        if first.withLock({ first in
            defer { first = false }
            return first
        }) {
            opened.wait()
        }
    }

    public func release() { opened.signal() }
}
