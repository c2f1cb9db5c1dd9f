/// What went wrong setting up or reading the input of a simulation: a setting out of range, or a
/// trace file that is not in the format named (with the line).
public struct SimulationError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}
