import Foundation

/// Runs blocking work (conversion, hashing, file I/O) on a thread of its own, so the
/// cooperative pool keeps serving other tasks.
package func runBlocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try work() })
        }
        thread.stackSize = 8 << 20
        thread.start()
    }
}
