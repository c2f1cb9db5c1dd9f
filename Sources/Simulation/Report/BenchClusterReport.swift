public import Foundation

/// A `sllm bench cluster --json` report as `sllm simulate --validate` replays it: the bench's
/// configuration, each value checked against the simulator's bounds before anything is built
/// from it, and each run's cold and warm times to first token with the cold requests' phases.
public struct BenchClusterReport: Sendable {
    public struct Config: Sendable, Equatable {
        public var nodes: Int
        public var deployments: Int
        public var requests: Int
        public var rate: Double
        public var cv: Double
        public var zipf: Double
        public var seed: UInt64
        public var weightBytes: Int
        public var instanceBytes: Int
        public var memoryBudgetBytes: Int
        public var dramCacheBytes: Int
        public var ssdCopies: Int
        /// The links' and the store's rates as the bench shaped them (`tc` units), and the keep-alive.
        public var link: String
        public var storeRate: String
        public var keepAlive: String
    }

    /// A cold request's phases, seconds, and the tier it loaded from.
    public struct Phase: Sendable, Equatable {
        public var tier: String
        public var queue: Double
        public var load: Double
        public var engineInit: Double
        /// When the request was sent, seconds after the replay began (reports before 2026-12-05
        /// lack it).
        public var at: Double?
    }

    /// A load the bench's decision log recorded: its tier, bytes and seconds.
    public struct Load: Sendable, Equatable {
        public var tier: String
        public var bytes: Double
        public var seconds: Double
    }

    /// One round of one policy.
    public struct Run: Sendable, Equatable {
        public var policy: String?
        public var coldTTFT: [Double]
        public var warmTTFT: [Double]
        /// In the order of `coldTTFT`; nil for an entry that lacks a field.
        public var coldPhases: [Phase?]
        /// Loads with every field a positive finite number (others left out).
        public var loads: [Load]
    }

    public var config: Config
    public var runs: [Run]

    /// Most values (times) a report may hold in all.
    public static let maxValues = 10_000_000

    public init(data: Data) throws(SimulationError) {
        guard let report = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let config = report["config"] as? [String: Any], let runs = report["runs"] as? [[String: Any]]
        else { throw SimulationError("it is not a `sllm bench cluster --json` report (config and runs)") }
        func number(_ key: String) throws(SimulationError) -> Double {
            guard let value = config[key] as? NSNumber else {
                throw SimulationError("the report's config lacks `\(key)`")
            }
            let double = value.doubleValue
            guard double.isFinite else { throw SimulationError("the report's `\(key)` is not a finite number") }
            return double
        }
        /// A whole number in `range`.
        func int(_ key: String, _ range: ClosedRange<Int>) throws(SimulationError) -> Int {
            let value = try number(key)
            guard value == value.rounded(), value >= Double(range.lowerBound), value <= Double(range.upperBound) else {
                throw SimulationError("the report's `\(key)` (\(value)) is not a whole number in \(range)")
            }
            return Int(value)
        }
        func positive(_ key: String, allowZero: Bool = false) throws(SimulationError) -> Double {
            let value = try number(key)
            guard value > 0 || (allowZero && value == 0), value < 1e12 else {
                throw SimulationError("the report's `\(key)` (\(value)) is out of range")
            }
            return value
        }
        func string(_ key: String) throws(SimulationError) -> String {
            guard let value = config[key] as? String, !value.isEmpty, value.utf8.count <= 64 else {
                throw SimulationError("the report's config lacks `\(key)`")
            }
            return value
        }
        let nodes = try int("nodes", 1...100_000)
        self.config = Config(
            nodes: nodes, deployments: try int("deployments", 1...1_000_000),
            requests: try int("requests", 1...10_000_000), rate: try positive("rate"), cv: try positive("cv"),
            zipf: try positive("zipf", allowZero: true), seed: UInt64(try int("seed", 0...Int.max)),
            weightBytes: try int("weight_bytes", 1...(1 << 50)),
            instanceBytes: try int("instance_bytes", 0...(1 << 50)),
            memoryBudgetBytes: try int("memory_budget_bytes", 1...(1 << 60)),
            dramCacheBytes: try int("dram_cache_bytes", 0...(1 << 60)), ssdCopies: try int("ssd_copies", 0...nodes),
            link: try string("link"), storeRate: try string("store_rate"), keepAlive: try string("keep_alive"))
        guard self.config.instanceBytes >= self.config.weightBytes else {
            throw SimulationError("the report's `instance_bytes` is smaller than its `weight_bytes`")
        }

        var total = 0
        /// Counts `values` more toward the bound on the whole report.
        func count(_ values: Int) throws(SimulationError) {
            total += values
            guard total <= Self.maxValues else {
                throw SimulationError("the report holds more than \(Self.maxValues) times")
            }
        }
        func times(_ value: Any?) throws(SimulationError) -> [Double] {
            let list = ((value as? [String: Any])?["values"] as? [Any]) ?? []
            try count(list.count)
            var values: [Double] = []
            values.reserveCapacity(list.count)
            for entry in list {
                guard let number = entry as? NSNumber, number.doubleValue.isFinite, number.doubleValue >= 0,
                    number.doubleValue < 1e9
                else { throw SimulationError("the report holds a time that is not a number of seconds: \(entry)") }
                values.append(number.doubleValue)
            }
            return values
        }
        /// A finite number from 0 to below `limit` (seconds below 1e9 by default), nil otherwise.
        func measure(_ object: [String: Any], _ key: String, below limit: Double = 1e9) -> Double? {
            guard let value = (object[key] as? NSNumber)?.doubleValue, value.isFinite, value >= 0, value < limit
            else { return nil }
            return value
        }
        var parsed: [Run] = []
        for run in runs {
            let phases = run["coldPhases"] as? [Any] ?? []
            let loads = run["loads"] as? [Any] ?? []
            try count(phases.count + loads.count)
            parsed.append(
                Run(
                    policy: run["policy"] as? String, coldTTFT: try times(run["coldTTFT"]),
                    warmTTFT: try times(run["warmTTFT"]),
                    coldPhases: phases.map { entry in
                        guard let phase = entry as? [String: Any] else { return nil }
                        let at = measure(phase, "at")
                        guard let tier = phase["tier"] as? String, let queue = measure(phase, "queue"),
                            let load = measure(phase, "load"), let start = measure(phase, "engineInit"),
                            phase["at"] == nil || at != nil
                        else { return nil }
                        return Phase(tier: tier, queue: queue, load: load, engineInit: start, at: at)
                    },
                    loads: loads.compactMap { entry in
                        guard let load = entry as? [String: Any], let tier = load["tier"] as? String,
                            let bytes = measure(load, "bytes", below: 0x1p60), bytes > 0,
                            let time = measure(load, "seconds"), time > 0
                        else { return nil }
                        return Load(tier: tier, bytes: bytes, seconds: time)
                    }))
        }
        self.runs = parsed
    }
}

extension BenchClusterReport {
    /// What the remote store delivered while it was crowded, measured from the cold requests that
    /// fetched from it (reports that time their requests): each fetch spans `at + queue` to
    /// `at + queue + load` at its average rate, `bytes / load`; requests that shared one start
    /// report the same load and count once. At each moment with at least `crowd` fetches under
    /// way (enough that no fetch's own limit binds), the sum of their rates is what the store
    /// delivered; the answer is the median of that sum over those moments, and the seconds they
    /// cover. Nil when no moment had that many.
    public static func crowdedStoreRate(runs: [Run], bytes: Int, crowd: Int) -> (
        bytesPerSecond: Double, seconds: Double
    )? {
        var samples: [(rate: Double, seconds: Double)] = []
        for run in runs {
            var seen: Set<Double> = []
            var spans: [(start: Double, end: Double, rate: Double)] = []
            for case let phase? in run.coldPhases where phase.tier == "remote" && phase.load > 0 {
                guard let at = phase.at, seen.insert(phase.load).inserted else { continue }
                let start = at + phase.queue
                spans.append((start, start + phase.load, Double(bytes) / phase.load))
            }
            // Sweep the spans' ends in time order: between two consecutive ends the set under way
            // does not change.
            let edges = spans.flatMap { [($0.start, $0.rate, 1), ($0.end, -$0.rate, -1)] }.sorted { $0.0 < $1.0 }
            var active = 0
            var rate = 0.0
            var last = edges.first?.0 ?? 0
            for (time, change, count) in edges {
                if active >= crowd, time > last { samples.append((rate, time - last)) }
                last = time
                rate += change
                active += count
            }
        }
        let covered = samples.reduce(0) { $0 + $1.seconds }
        guard covered > 0 else { return nil }
        // The time-weighted median.
        var remaining = covered / 2
        for sample in samples.sorted(by: { $0.rate < $1.rate }) {
            remaining -= sample.seconds
            if remaining <= 0 { return (sample.rate, covered) }
        }
        return (samples.map(\.rate).max()!, covered)
    }
}
