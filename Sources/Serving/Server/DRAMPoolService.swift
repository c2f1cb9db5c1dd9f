import Logging
import ServiceLifecycle
import Store

/// The background fill of the DRAM cache's pool (`dram_fill`), from the start until shutdown;
/// it stands aside while loads read and while requests generate.
struct DRAMPoolService: Service {
    let cache: DRAMCache
    let enabled: Bool
    /// Whether requests are generating: the fill waits for them.
    let busy: @Sendable () -> Bool
    let logger: Logger

    func run() async throws {
        guard enabled else { return }
        let filler = PoolFiller(cache: cache, busy: busy, logger: logger)
        filler.start()
        try? await gracefulShutdown()
        _ = try? await runBlocking { filler.stop() }
    }
}
