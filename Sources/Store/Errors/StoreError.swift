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

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
