/// An error from reading, writing, converting or verifying a checkpoint.
///
/// `code` is stable and meant for programs; `message` is for the operator and names the concrete
/// value that was wrong (a path, a tensor, an offset). `cause` keeps an underlying error, such as
/// an ``Errno`` from a failed system call.
public struct CheckpointError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure this is.
    public enum Code: String, Sendable {
        /// The input is not in the format it claims to be (bad magic, truncated, inconsistent).
        case invalidFormat
        /// The input is well formed but uses something this build does not handle.
        case unsupported
        /// Stored bytes do not match their checksum.
        case corrupt
        /// A system call failed (see `cause`).
        case io
        /// Something that must not exist already does.
        case alreadyExists
        /// A model, file or tensor was not found.
        case notFound
        /// A caller-supplied value is not acceptable (a model name, an option).
        case invalidArgument
    }

    public var code: Code
    public var message: String
    public var cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String {
        if let cause { return "\(message): \(cause)" }
        return message
    }
}

extension CheckpointError {
    static func format(_ message: String) -> CheckpointError { CheckpointError(.invalidFormat, message) }
}
