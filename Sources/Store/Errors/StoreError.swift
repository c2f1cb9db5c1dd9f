import Checkpoint
import Glibc

/// An error from the model store, a download, or a pull.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        case invalidName
        case notFound
        case alreadyExists
        case invalidSource
        case download
        case checksumMismatch
        case io
    }

    public var code: Code
    public var message: String
    /// The underlying error, such as an `Errno` from a failed system call (kept as a value, so a
    /// full disk can be told from a bug).
    public var cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String { message }
}

extension StoreError {
    /// A failed system call: `message`, then the current `errno` for `operation`, kept as the
    /// cause. Call it right after the failing call, before anything can change `errno`.
    static func system(_ message: String, _ operation: String) -> StoreError {
        let failure = Errno(errno, operation: operation)
        return StoreError(.io, "\(message): \(failure)", cause: failure)
    }
}
