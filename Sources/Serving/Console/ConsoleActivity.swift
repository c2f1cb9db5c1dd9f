import Foundation
import Scheduling
import Synchronization

/// What the console shows beyond the registry's state: request rates and latencies over recent
/// windows, and the latest cold starts and migrations with where their time went. Recorded as
/// requests end (``ServingMetrics``), read once a second at most (``ConsoleFeed``).
final class ConsoleActivity: Sendable {
    /// One second of requests: how many ended, how many failed, and their latency samples.
    struct Second {
        var at = 0
        var requests = 0
        var errors = 0
        var firstToken: [Double] = []
        var interToken: [Double] = []
    }

    /// A cold start as a request saw it, phase by phase.
    struct ColdStart: Sendable, Codable, Equatable {
        var at: Date
        var deployment: String
        var instance: String
        var node: String
        var tier: String
        var queueSeconds: Double
        var loadSeconds: Double
        var initSeconds: Double
        var prefillSeconds: Double
        /// From the request's arrival to its first token.
        var firstTokenSeconds: Double
        var promptTokens: Int
        var weightBytes: Int
        /// For a checkpoint fetched from peers or remote stores: its bytes by source, and the
        /// seconds each source took.
        var fetchedBytes: [String: Int]?
        var fetchSeconds: [String: Double]? = nil
        /// Thread seconds spent checking checksums, overlapped with the load's reads.
        var verifySeconds: Double? = nil
    }

    /// A migration with when it ended (`failure`: why it was abandoned before its hand-over).
    /// One whose target never started has no report: its source, the target instance it meant
    /// to start, the node asked for (nil: the scheduler's choice) and how long it tried.
    struct Migration: Sendable, Codable, Equatable {
        var at: Date
        var deployment: String
        var instance: String
        var target: String
        var from: NodeID
        var to: NodeID?
        var seconds: Double
        var report: MigrationReport?
        var failure: String?

        init(
            at: Date, deployment: String, instance: String, target: String, from: NodeID, to: NodeID?,
            seconds: Double, failure: String
        ) {
            self.at = at
            self.deployment = deployment
            self.instance = instance
            self.target = target
            self.from = from
            self.to = to
            self.seconds = seconds
            self.failure = failure
        }

        init(at: Date, deployment: String, report: MigrationReport, failure: String? = nil) {
            self.init(
                at: at, deployment: deployment, instance: report.instance, target: report.target, from: report.from,
                to: report.to, seconds: report.seconds, failure: failure ?? "")
            self.failure = failure
            self.report = report
        }
    }

    /// Seconds of history kept (the longest window).
    static let history = 3600
    /// Latency samples kept per second (more requests than that in one second are counted, and
    /// their latencies sampled).
    static let samplesPerSecond = 64
    static let keptColdStarts = 200
    static let keptMigrations = 100

    private let seconds = Mutex([Second](repeating: Second(), count: history))
    private let coldStarts = Mutex<[ColdStart]>([])
    private let migrations = Mutex<[Migration]>([])
    private let now: @Sendable () -> Int

    init(now: @escaping @Sendable () -> Int = { Int(Date().timeIntervalSince1970) }) {
        self.now = now
    }

    /// A request that ended (`status` 200 or the error's), with its latencies when it produced tokens.
    func request(status: Int, firstToken: Double? = nil, interToken: Double? = nil) {
        let second = now()
        seconds.withLock { ring in
            let slot = Self.slot(second)
            if ring[slot].at != second { ring[slot] = Second(at: second) }
            ring[slot].requests += 1
            if status >= 400 && status != 499 { ring[slot].errors += 1 }
            if let firstToken, ring[slot].firstToken.count < Self.samplesPerSecond {
                ring[slot].firstToken.append(firstToken)
            }
            if let interToken, ring[slot].interToken.count < Self.samplesPerSecond {
                ring[slot].interToken.append(interToken)
            }
        }
    }

    func coldStart(_ record: ColdStart) {
        coldStarts.withLock { list in
            list.append(record)
            if list.count > Self.keptColdStarts { list.removeFirst(list.count - Self.keptColdStarts) }
        }
    }

    func migration(_ record: Migration) {
        migrations.withLock { list in
            list.append(record)
            if list.count > Self.keptMigrations { list.removeFirst(list.count - Self.keptMigrations) }
        }
    }

    /// Where `second` is kept in the ring.
    private static func slot(_ second: Int) -> Int { ((second % history) + history) % history }

    var recentColdStarts: [ColdStart] { coldStarts.withLock { $0 } }
    var recentMigrations: [Migration] { migrations.withLock { $0 } }

    /// Request figures over the last `window` seconds, with `points` buckets of it for a chart.
    /// The window ends at the last bucket boundary (a multiple of the bucket's length), so its
    /// figures change once a bucket at most, not every second: an idle server's snapshot stays
    /// the same.
    func window(_ window: Int, points: Int = 30) -> WindowStats {
        let window = min(max(1, window), Self.history - 1)
        let bucketSeconds = max(1, window / max(1, points))
        let end = now() / bucketSeconds * bucketSeconds
        // Only the window's seconds are copied, under the lock: holding the ring itself would make
        // the next request's record copy all of it (copy on write).
        let entries = seconds.withLock { ring in
            ((end - window)..<end).map { second in ring[Self.slot(second)].at == second ? ring[Self.slot(second)] : nil
            }
        }
        var stats = WindowStats(seconds: window)
        var firstToken: [Double] = []
        var interToken: [Double] = []
        var series: [WindowStats.Point] = []
        var bucket = WindowStats.Point()
        var bucketStart = end - window
        var bucketTTFT: [Double] = []
        for (offset, entry) in entries.enumerated() {
            let second = end - window + offset
            if second - bucketStart >= bucketSeconds {
                bucket.firstTokenP50 = quantile(bucketTTFT.sorted(), 0.5)
                series.append(bucket)
                bucket = WindowStats.Point()
                bucketStart = second
                bucketTTFT.removeAll()
            }
            guard let entry else { continue }
            stats.requests += entry.requests
            stats.errors += entry.errors
            firstToken += entry.firstToken
            interToken += entry.interToken
            bucket.requests += entry.requests
            bucket.errors += entry.errors
            bucketTTFT += entry.firstToken
        }
        bucket.firstTokenP50 = quantile(bucketTTFT.sorted(), 0.5)
        series.append(bucket)
        stats.requestsPerSecond = Double(stats.requests) / Double(window)
        stats.errorRate = stats.requests > 0 ? Double(stats.errors) / Double(stats.requests) : 0
        firstToken.sort()
        interToken.sort()
        stats.firstToken = Percentiles(firstToken)
        stats.interToken = Percentiles(interToken)
        stats.series = series
        stats.bucketSeconds = bucketSeconds
        return stats
    }
}

/// Requests over a window: rate, errors, and latency percentiles (seconds; nil without samples).
struct WindowStats: Sendable, Codable, Equatable {
    /// One bucket of the window, oldest first: the last ends at the snapshot's time (the
    /// buckets carry no times of their own, so an idle server's snapshot does not change).
    struct Point: Sendable, Codable, Equatable {
        var requests = 0
        var errors = 0
        var firstTokenP50: Double?
    }

    var seconds: Int
    var requests = 0
    var errors = 0
    var requestsPerSecond = 0.0
    var errorRate = 0.0
    var firstToken = Percentiles([])
    /// Each request's mean gap between tokens.
    var interToken = Percentiles([])
    var bucketSeconds = 1
    var series: [Point] = []

    init(seconds: Int) { self.seconds = seconds }
}

struct Percentiles: Sendable, Codable, Equatable {
    var samples: Int
    var p50: Double?
    var p90: Double?
    var p99: Double?

    /// From sorted samples.
    init(_ sorted: [Double]) {
        samples = sorted.count
        p50 = quantile(sorted, 0.5)
        p90 = quantile(sorted, 0.9)
        p99 = quantile(sorted, 0.99)
    }
}

/// The nearest-rank quantile of sorted values; nil when there are none.
private func quantile(_ sorted: [Double], _ fraction: Double) -> Double? {
    sorted.isEmpty ? nil : percentile(sorted: sorted, fraction)
}
