#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A failed system call's `errno`, kept as a number and rendered with `strerror`.
public struct Errno: Error, Equatable, CustomStringConvertible, Sendable {
    public var rawValue: Int32
    /// The call that failed, e.g. `open`, with the path where there is one.
    public var operation: String

    public init(_ rawValue: Int32, operation: String) {
        self.rawValue = rawValue
        self.operation = operation
    }

    /// The current thread's `errno`.
    static func current(_ operation: String) -> Errno { Errno(errno, operation: operation) }

    public var description: String {
        "\(operation): \(String(cString: strerror(rawValue))) (errno \(rawValue))"
    }

    public static let noSpace: Int32 = ENOSPC
    public static let invalid: Int32 = EINVAL
}
