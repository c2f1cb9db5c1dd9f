import Checkpoint
import Foundation
public import Logging
import Synchronization

/// Memory the machine (or this process's cgroup) can still hand out.
public struct MemoryStatus: Sendable, Equatable {
    /// Bytes that can be allocated without swapping or reclaiming anything that matters:
    /// `MemAvailable`, or the cgroup's limit less what it uses beyond page cache, whichever is less.
    public var availableBytes: Int
    /// The memory this process may use at most: `MemTotal`, or the cgroup limit when lower.
    public var limitBytes: Int

    public init(availableBytes: Int, limitBytes: Int) {
        self.availableBytes = availableBytes
        self.limitBytes = limitBytes
    }

    /// Read from `/proc/meminfo` and, under cgroup v2, the process's cgroup; nil when unreadable.
    public static func current() -> MemoryStatus? {
        guard let meminfo = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
        func field(_ name: String, in text: String, scale: Int) -> Int? {
            for line in text.split(separator: "\n") where line.hasPrefix(name + ":") || line.hasPrefix(name + " ") {
                let parts = line.split(whereSeparator: { $0 == " " || $0 == ":" })
                if parts.count >= 2, let value = Int(parts[1]) {
                    return value.multipliedReportingOverflow(by: scale).overflow ? nil : value * scale
                }
            }
            return nil
        }
        guard let total = field("MemTotal", in: meminfo, scale: 1024),
            let available = field("MemAvailable", in: meminfo, scale: 1024)
        else { return nil }
        var status = MemoryStatus(availableBytes: available, limitBytes: total)
        // cgroup v2: "0::/path"; the limit is memory.max ("max" when none).
        if let cgroup = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8),
            let line = cgroup.split(separator: "\n").first(where: { $0.hasPrefix("0::") })
        {
            let directory = "/sys/fs/cgroup" + line.dropFirst(3)
            if let maxText = try? String(contentsOfFile: directory + "/memory.max", encoding: .utf8),
                let limit = Int(maxText.trimmingCharacters(in: .whitespacesAndNewlines)),
                let currentText = try? String(contentsOfFile: directory + "/memory.current", encoding: .utf8),
                let current = Int(currentText.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                let stat = (try? String(contentsOfFile: directory + "/memory.stat", encoding: .utf8)) ?? ""
                // Page cache of files can be reclaimed; tmpfs (the cache itself) cannot.
                let reclaimable =
                    (field("active_file", in: stat, scale: 1) ?? 0) + (field("inactive_file", in: stat, scale: 1) ?? 0)
                status.limitBytes = min(status.limitBytes, limit)
                status.availableBytes = min(status.availableBytes, max(0, limit - max(0, current - reclaimable)))
            }
        }
        return status
    }
}

/// Fills the DRAM cache's pool with allocated slabs in the background, up to the budget, so a
/// cold load writes into memory that is ready instead of paying the kernel to allocate and zero
/// fresh pages while the client waits; then keeps it topped up.
///
/// Its threads run at a low priority (nice 10), so other work keeps the cores. It stands aside
/// while a load of this process reads or the server generates (checked between slabs, 32 MiB
/// each; the fill's page faults stall a virtual CPU whatever its priority) and under memory
/// pressure: it adds a slab only while `fillFloor` bytes stay available after it,
/// and gives pooled slabs back when availability drops below `releaseFloor`.
public final class PoolFiller: Sendable {
    public struct Settings: Sendable {
        /// Threads populating each slab (`madvise(MADV_POPULATE_WRITE)`; two measured fastest
        /// here, `sllm bench populate`).
        public var threads = 2
        /// Nice value of the populating threads: they run on what other work leaves of the cores.
        public var niceness: Int32 = 10
        /// Slab bytes to reach (capped by the cache's budget).
        public var targetBytes = Int.max
        /// Seconds between checks once the pool is full.
        public var interval = 1.0
        /// Fill while this much memory stays available (nil: 1 GiB or a fifth of the limit,
        /// whichever is more).
        public var fillFloor: Int?
        /// Give pooled slabs back below this much available memory (nil: 512 MiB or a tenth of
        /// the limit, whichever is more).
        public var releaseFloor: Int?

        public init() {}
    }

    /// The first fill, from start until the pool reached its target or stopped for memory.
    public struct Report: Sendable, Codable {
        /// Bytes of slabs the fill added.
        public var addedBytes: Int
        /// Seconds from start to full, including pauses.
        public var seconds: Double
        /// Seconds it stood aside for loads and foreground work.
        public var pausedSeconds: Double
        /// Whether it stopped short because memory ran low.
        public var limitedByMemory: Bool
    }

    private let cache: DRAMCache
    private let settings: Settings
    private let memory: @Sendable () -> MemoryStatus?
    private let busy: @Sendable () -> Bool
    private let logger: Logger
    private let stopped = Atomic<Bool>(false)
    private let wake = DispatchSemaphore(value: 0)
    private let exited = DispatchSemaphore(value: 0)
    private let started = Atomic<Bool>(false)
    private let report = Mutex<Report?>(nil)
    private let filled = DispatchSemaphore(value: 0)

    /// - Parameters:
    ///   - memory: how much memory is available (normally `MemoryStatus.current`).
    ///   - busy: whether foreground work runs that the fill must not slow (a server's requests);
    ///     it waits while true, as it does for loads.
    public init(
        cache: DRAMCache, settings: Settings = .init(),
        memory: @escaping @Sendable () -> MemoryStatus? = MemoryStatus.current,
        busy: @escaping @Sendable () -> Bool = { false }, logger: Logger = Logger(label: "sllm.store")
    ) {
        self.cache = cache
        self.settings = settings
        self.memory = memory
        self.busy = busy
        self.logger = logger
    }

    /// Starts the fill on a thread of its own.
    public func start() {
        guard !started.exchange(true, ordering: .relaxed) else { return }
        let thread = Thread { [self] in
            run()
            exited.signal()
        }
        thread.name = "sllm-pool-fill"
        thread.start()
    }

    /// Stops the fill and waits for its thread (at most one slab's population).
    public func stop() {
        guard started.load(ordering: .relaxed), !stopped.exchange(true, ordering: .relaxed) else { return }
        wake.signal()
        exited.wait()
    }

    /// The first fill's report once it is done; waits up to `timeout` seconds.
    public func waitUntilFilled(timeout: Double) -> Report? {
        guard filled.wait(timeout: .now() + timeout) == .success else { return nil }
        filled.signal()
        return report.withLock { $0 }
    }

    private func floors(_ status: MemoryStatus) -> (fill: Int, release: Int) {
        (
            settings.fillFloor ?? max(1 << 30, status.limitBytes / 5),
            settings.releaseFloor ?? max(512 << 20, status.limitBytes / 10)
        )
    }

    private func sleep(_ seconds: Double) {
        _ = wake.wait(timeout: .now() + seconds)
    }

    private func run() {
        let start = ContinuousClock.now
        var added = 0
        var paused = Duration.zero
        var firstFillDone = false
        func finishFirstFill(limitedByMemory: Bool) {
            guard !firstFillDone else { return }
            firstFillDone = true
            let result = Report(
                addedBytes: added, seconds: seconds(since: start), pausedSeconds: paused.seconds,
                limitedByMemory: limitedByMemory)
            report.withLock { $0 = result }
            filled.signal()
            logger.info(
                """
                DRAM pool filled: \(formatBytes(Int64(added))) added in \(String(format: "%.2f", result.seconds)) s \
                (\(String(format: "%.2f", result.seconds > 0 ? Double(added) / 1e9 / result.seconds : 0)) GB/s, \
                \(String(format: "%.2f", result.pausedSeconds)) s aside for loads and requests)\(limitedByMemory ? ", stopped short: memory is low" : "")
                """)
        }
        while !stopped.load(ordering: .relaxed) {
            let status = memory()
            if let status {
                let (fillFloor, releaseFloor) = floors(status)
                if status.availableBytes < releaseFloor {
                    let freed = cache.releasePooled(fillFloor - status.availableBytes)
                    if freed > 0 {
                        logger.warning(
                            "memory is low: gave pooled DRAM back to the kernel",
                            metadata: ["bytes": "\(freed)", "available": "\(status.availableBytes)"])
                    }
                    finishFirstFill(limitedByMemory: true)
                    sleep(settings.interval)
                    continue
                }
                if status.availableBytes - cache.slabBytes < fillFloor {
                    finishFirstFill(limitedByMemory: true)
                    sleep(settings.interval)
                    continue
                }
            }
            if cache.loadsInFlight.load(ordering: .relaxed) > 0 || busy() {
                let aside = ContinuousClock.now
                sleep(0.005)
                paused += ContinuousClock.now - aside
                continue
            }
            let slab: UnsafeSharedMemoryFile?
            do {
                slab = try cache.addPooledSlab(limit: settings.targetBytes)
            } catch {
                logger.warning("cannot add a slab to the DRAM pool", metadata: ["error": "\(error)"])
                finishFirstFill(limitedByMemory: false)
                sleep(settings.interval)
                continue
            }
            guard let slab else {
                finishFirstFill(limitedByMemory: false)
                sleep(settings.interval)
                continue
            }
            MemoryPopulation.populateInBackground(
                slab.base, byteCount: slab.byteCount, threads: settings.threads, niceness: settings.niceness)
            slab.populated.store(true, ordering: .relaxed)
            added += slab.byteCount
        }
        finishFirstFill(limitedByMemory: false)
    }
}
