import Foundation
import Store

/// The node's memory budget for instances (weights + KV cache). A start that does not fit first
/// asks other deployments to stop idle instances (least recently used first, as Ollama unloads
/// idle models), then fails with `insufficientMemory` naming the figures.
actor NodeResources {
    let budgetBytes: Int
    private(set) var usedBytes = 0
    /// Frees at least `needed` bytes if it can by stopping idle instances of deployments other
    /// than the one named; returns the bytes freed. Set by the controller.
    private var evictor: (@Sendable (_ except: String, _ needed: Int) async -> Int)?

    init(budgetBytes: Int) {
        self.budgetBytes = budgetBytes
    }

    func setEvictor(_ evictor: @escaping @Sendable (_ except: String, _ needed: Int) async -> Int) {
        self.evictor = evictor
    }

    func reserve(_ bytes: Int, for deployment: String) async throws(ServingError) {
        if usedBytes + bytes > budgetBytes, let evictor {
            _ = await evictor(deployment, usedBytes + bytes - budgetBytes)
        }
        guard usedBytes + bytes <= budgetBytes else {
            throw ServingError(
                .insufficientMemory,
                "an instance of `\(deployment)` needs \(formatBytes(Int64(bytes))) but \(formatBytes(Int64(budgetBytes - usedBytes))) of the node's \(formatBytes(Int64(budgetBytes))) memory budget is free (raise --memory-budget, lower --context or --target-concurrency, or delete a deployment)")
        }
        usedBytes += bytes
    }

    func release(_ bytes: Int) {
        usedBytes = max(0, usedBytes - bytes)
    }
}
