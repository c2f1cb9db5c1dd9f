/// How large an instance is: its context, how many sequences it batches, and the memory it
/// needs. The one place that decides it: the deployment reserves `totalBytes` from the node's
/// budget, the worker gives the engine this context and KV budget, and a scheduler compares
/// `totalBytes` with a node's free memory.
public struct InstanceSizing: Sendable, Codable, Equatable {
    /// The context an instance gets when its deployment names none (and the model allows it).
    public static let defaultContextLength = 8192

    /// Positions per sequence: the deployment's context, else the default, never beyond the model's.
    public var contextLength: Int
    /// Sequences batched together (the deployment's target concurrency).
    public var maxSequences: Int
    public var weightBytes: Int
    /// The most KV cache the instance may use: every sequence at full context.
    public var kvCacheBytes: Int
    public var totalBytes: Int { weightBytes + kvCacheBytes }

    /// - Parameters:
    ///   - requestedContext: the deployment's context length, nil for the default.
    ///   - modelContext: the model's trained context.
    ///   - kvBytesPerPosition: KV-cache bytes per position of one sequence.
    public init(requestedContext: Int?, modelContext: Int, maxSequences: Int, weightBytes: Int, kvBytesPerPosition: Int)
    {
        contextLength = max(1, min(requestedContext ?? Self.defaultContextLength, modelContext))
        self.maxSequences = max(1, maxSequences)
        self.weightBytes = weightBytes
        let (kv, overflow) = self.maxSequences.multipliedReportingOverflow(by: contextLength)
        let (bytes, overflow2) = kv.multipliedReportingOverflow(by: kvBytesPerPosition)
        kvCacheBytes = overflow || overflow2 ? Int.max / 2 : bytes
    }
}
