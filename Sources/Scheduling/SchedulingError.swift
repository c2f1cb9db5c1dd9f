/// A setting or event the scheduling core refuses, with the field at fault.
public struct SchedulingError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
        /// A setting is out of range or does not parse.
        case invalidSetting
    }

    public var code: Code
    public var message: String
    /// The setting at fault, as the API names it (`keep_alive`, `min_instances`, …).
    public var field: String?

    public init(_ code: Code, _ message: String, field: String? = nil) {
        self.code = code
        self.message = message
        self.field = field
    }

    public var description: String { message }
}
