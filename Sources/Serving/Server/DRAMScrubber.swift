import Logging
import ServiceLifecycle
import Store
import Synchronization

/// The background check of the DRAM cache: re-hashes every cached model at a bounded rate
/// (`dram_scrub_rate`), then rests (`dram_scrub_interval`), and drops a copy whose bytes changed.
/// A flipped bit in shared memory is found within one pass plus one rest: cache bytes / rate +
/// interval (8 GiB at the default 64 MiB/s: about 2 minutes, plus 10).
struct DRAMScrubber: Service {
    let cache: DRAMCache
    let store: ModelStore
    let bytesPerSecond: Int
    let interval: Duration
    let metrics: ServingMetrics
    let logger: Logger

    func run() async throws {
        guard bytesPerSecond > 0 else { return }
        let stopped = StopFlag()
        try? await cancelWhenGracefulShutdown {
            try await withTaskCancellationHandler {
                while !Task.isCancelled {
                    let results = try await runBlocking { [cache, store, bytesPerSecond] in
                        cache.verifyAll(store: store, bytesPerSecond: bytesPerSecond, shouldStop: { stopped.isSet })
                    }
                    for result in results { metrics.dramVerified(result) }
                    if !results.isEmpty {
                        logger.debug(
                            "DRAM cache checked",
                            metadata: [
                                "models": "\(results.count)",
                                "corrupt": "\(results.filter { $0.corruptTensor != nil }.count)",
                            ])
                    }
                    try await Task.sleep(for: interval)
                }
            } onCancel: {
                stopped.set()
            }
        }
    }
}

/// A flag set once, from any thread.
final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}
