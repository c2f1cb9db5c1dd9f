import Foundation
import Scheduling
import Store

/// The node's memory budget for instances (weights + KV cache), executing `MemoryAdmission`'s
/// decisions: a start that does not fit first stops the idle instances of other deployments the
/// policy names (least recently used first, as Ollama unloads idle models); one that cannot fit
/// fails with `insufficientMemory` naming the figures, and stops nothing.
actor NodeResources {
    let budgetBytes: Int
    private(set) var usedBytes = 0
    /// Where idle instances come from and how one is stopped (set by the deployment registry):
    /// `candidates` lists the node's idle instances; `evict` stops one and returns the bytes freed.
    private var idle:
        (
            candidates: @Sendable () async -> [MemoryAdmission.Candidate],
            evict: @Sendable (MemoryAdmission.Candidate) async -> Int
        )?

    init(budgetBytes: Int) {
        self.budgetBytes = budgetBytes
    }

    func setIdleInstances(
        candidates: @escaping @Sendable () async -> [MemoryAdmission.Candidate],
        evict: @escaping @Sendable (MemoryAdmission.Candidate) async -> Int
    ) {
        idle = (candidates, evict)
    }

    func reserve(_ bytes: Int, for deployment: String) async throws(ServingError) {
        if usedBytes + bytes > budgetBytes, let idle {
            let decision = MemoryAdmission.decide(
                bytes: bytes, for: deployment, budget: budgetBytes, used: usedBytes, idle: await idle.candidates())
            if case .evict(let victims) = decision {
                for victim in victims { _ = await idle.evict(victim) }
            }
        }
        guard usedBytes + bytes <= budgetBytes else {
            throw ServingError(
                .insufficientMemory,
                "an instance of `\(deployment)` needs \(formatBytes(Int64(bytes))) but \(formatBytes(Int64(budgetBytes - usedBytes))) of the node's \(formatBytes(Int64(budgetBytes))) memory budget is free (raise --memory-budget, lower --context or --target-concurrency, or delete a deployment)"
            )
        }
        usedBytes += bytes
    }

    func release(_ bytes: Int) {
        usedBytes = max(0, usedBytes - bytes)
    }
}
