/// A progress report from long work (conversion, verification, download, load).
public struct Progress: Sendable {
    /// What is being done, e.g. `convert`, `verify`, `download`.
    public var phase: String
    public var completedBytes: Int64
    /// Zero when unknown.
    public var totalBytes: Int64

    public init(phase: String, completedBytes: Int64, totalBytes: Int64) {
        self.phase = phase
        self.completedBytes = completedBytes
        self.totalBytes = totalBytes
    }
}

/// Receives progress reports; called from the working thread, so it must be cheap.
public typealias ProgressHandler = @Sendable (Progress) -> Void
