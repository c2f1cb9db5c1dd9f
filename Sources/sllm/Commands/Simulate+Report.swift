import ArgumentParser
import Foundation
import Scheduling
import Simulation
import Store

/// One policy's figures at one point of a run.
struct SummaryRow: Encodable {
    var point: String
    var sweep: String?
    var value: Double
    var policy: String
    var requests: Int
    var served: Int
    var failed: Int
    /// Failed requests by cause (`queue full`, `no room`).
    var failures: [String: Int]
    var coldRequests: Int
    var starts: Int
    var coldTTFT: [String: Double]
    var coldStartup: [String: Double]
    var ttft: [String: Double]
    var migrations: Int
    var migratedRequests: Int
    var evictions: Int
    var loads: [String: Int]
    var loadedBytes: [String: Int]
    var events: Int
    var wallSeconds: Double
    var eventsPerSecond: Double

    static let fractions: [(String, Double)] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)]

    init(point: String, sweep: String?, value: Double, result: SimulationResult) {
        self.point = point
        self.sweep = sweep
        self.value = value
        policy = result.policy.rawValue
        requests = result.requests
        served = result.served
        failed = result.failed
        failures = Dictionary(uniqueKeysWithValues: result.failures.map { ($0.key.rawValue, $0.value) })
        coldRequests = result.coldTTFT.count
        starts = result.counters.starts
        func summary(_ values: [Double]) -> [String: Double] {
            let sorted = values.sorted()
            return Dictionary(uniqueKeysWithValues: Self.fractions.map { ($0.0, percentile(sorted: sorted, $0.1)) })
        }
        coldTTFT = summary(result.coldTTFT)
        coldStartup = summary(result.coldStartup)
        ttft = summary(result.ttft)
        migrations = result.counters.migrations
        migratedRequests = result.counters.migratedRequests
        evictions = result.counters.evictions
        loads = Dictionary(uniqueKeysWithValues: result.counters.loads.map { ($0.key.rawValue, $0.value) })
        loadedBytes = Dictionary(uniqueKeysWithValues: result.counters.loadedBytes.map { ($0.key.rawValue, $0.value) })
        events = result.counters.events
        wallSeconds = result.wallSeconds
        eventsPerSecond = result.eventsPerSecond
    }

    static let header =
        "POLICY              COLD TTFT p50 / p90 / p99 (s)    COLD START p50 / p99   ALL TTFT p99   COLD REQS  STARTS  FAILED  MIGRATIONS  LOADS dram/ssd/peer/remote   EVENTS/s     WALL"

    var line: String {
        func s(_ value: Double?) -> String { value.map { $0.isNaN ? "n/a" : String(format: "%.3f", $0) } ?? "n/a" }
        let cold = "\(s(coldTTFT["p50"])) / \(s(coldTTFT["p90"])) / \(s(coldTTFT["p99"]))"
        let tiers = ["dram", "ssd", "peer", "remote"].map { String(loads[$0] ?? 0) }.joined(separator: "/")
        return [
            policy.padding(toLength: 19, withPad: " ", startingAt: 0),
            cold.padding(toLength: 32, withPad: " ", startingAt: 0),
            "\(s(coldStartup["p50"])) / \(s(coldStartup["p99"]))".padding(toLength: 22, withPad: " ", startingAt: 0),
            s(ttft["p99"]).padding(toLength: 14, withPad: " ", startingAt: 0),
            String(coldRequests).padding(toLength: 10, withPad: " ", startingAt: 0),
            String(starts).padding(toLength: 7, withPad: " ", startingAt: 0),
            String(failed).padding(toLength: 7, withPad: " ", startingAt: 0),
            String(migrations).padding(toLength: 11, withPad: " ", startingAt: 0),
            tiers.padding(toLength: 28, withPad: " ", startingAt: 0),
            String(format: "%.2e", eventsPerSecond).padding(toLength: 12, withPad: " ", startingAt: 0),
            String(format: "%.2f s", wallSeconds),
        ].joined(separator: " ")
    }

    static let csvHeader =
        "point,sweep,value,policy,requests,served,failed,cold_requests,starts,cold_ttft_p50,cold_ttft_p90,cold_ttft_p99,cold_startup_p50,cold_startup_p99,ttft_p50,ttft_p99,migrations,migrated_requests,evictions,loads_dram,loads_ssd,loads_peer,loads_remote,events,wall_seconds,events_per_second"

    var csv: String {
        func s(_ value: Double?) -> String { value.map { $0.isNaN ? "" : String(format: "%.6f", $0) } ?? "" }
        return [
            point, sweep ?? "", Simulate.number(value), policy, String(requests), String(served), String(failed),
            String(coldRequests), String(starts), s(coldTTFT["p50"]), s(coldTTFT["p90"]), s(coldTTFT["p99"]),
            s(coldStartup["p50"]), s(coldStartup["p99"]), s(ttft["p50"]), s(ttft["p99"]), String(migrations),
            String(migratedRequests), String(evictions), String(loads["dram"] ?? 0), String(loads["ssd"] ?? 0),
            String(loads["peer"] ?? 0), String(loads["remote"] ?? 0), String(events),
            String(format: "%.3f", wallSeconds),
            String(format: "%.0f", eventsPerSecond),
        ].joined(separator: ",")
    }
}

extension Simulate {
    /// Writes the CSVs and plots into `--out`, and the JSON summary.
    func write(rows: [SummaryRow], cdfs: [(point: String, policy: String, values: [Double])], sweep: String?) throws {
        if let json { try writeReport(rows, to: json) }
        guard let out else { return }
        let directory = absolutePath(out)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        func save(_ text: String, _ name: String) throws {
            try Data(text.utf8).write(to: URL(fileURLWithPath: directory + "/" + name), options: .atomic)
        }
        try save(([SummaryRow.csvHeader] + rows.map(\.csv)).joined(separator: "\n") + "\n", "summary.csv")
        var cdfText = "point,policy,cold_start_seconds,fraction\n"
        var plots: [String] = []
        for point in Self.ordered(cdfs.map(\.point)) {
            let series = cdfs.filter { $0.point == point }.map {
                SVGPlot.Series(name: $0.policy, points: SimulationResult.cdf($0.values))
            }
            for line in series {
                for (x, y) in line.points { cdfText += "\(point),\(line.name),\(String(format: "%.6f", x)),\(y)\n" }
            }
            let name = "cdf-\(point.replacingOccurrences(of: "=", with: "-")).svg"
            try save(
                SVGPlot(
                    title: "Cold-start latency CDF (\(point))",
                    xLabel: "arrival to an instance taking the request (s, log)", yLabel: "fraction of cold requests",
                    logX: true, steps: true, series: series
                ).render(), name)
            plots.append(name)
        }
        try save(cdfText, "cdf.csv")
        if let sweep {
            let policies = Self.ordered(rows.map(\.policy))
            for (figure, key) in [("p99", "p99"), ("p50", "p50")] {
                let series = policies.map { policy in
                    SVGPlot.Series(
                        name: policy,
                        points: rows.filter { $0.policy == policy }.map { ($0.value, $0.coldStartup[key] ?? .nan) })
                }
                let name = "sweep-\(sweep)-cold-start-\(figure).svg"
                try save(
                    SVGPlot(
                        title: "Cold-start latency \(figure) by \(sweep)", xLabel: sweep, yLabel: "seconds (log)",
                        logY: true, series: series
                    ).render(), name)
                plots.append(name)
            }
        }
        print("wrote summary.csv, cdf.csv and \(plots.joined(separator: ", ")) to \(directory)")
    }

    /// Replays a `sllm bench cluster --json` report's configuration and trace, and compares the
    /// cold-start TTFT percentiles per policy (median over the report's rounds).
    func compare(with path: String, base: inout SimulationSettings) throws {
        guard let data = FileManager.default.contents(atPath: absolutePath(path)) else {
            throw ValidationError("--validate: cannot read \(path)")
        }
        let report: BenchClusterReport
        do { report = try BenchClusterReport(data: data) } catch {
            throw ValidationError("--validate \(path): \(error.message)")
        }
        let config = report.config
        let runs = report.runs
        base.nodes = config.nodes
        base.models = config.deployments
        base.requests = config.requests
        base.durationSeconds = nil
        base.trace = nil
        base.rate = config.rate
        base.cv = config.cv
        base.zipf = config.zipf
        base.seed = config.seed
        base.sizes = [(config.weightBytes, 1)]
        base.memoryBytes = config.memoryBudgetBytes
        base.dramBytes = config.dramCacheBytes
        base.extraBytes = config.instanceBytes - config.weightBytes
        base.ssdCopies = config.ssdCopies
        base.linkRate = try Self.rate(config.link, "link")
        base.storeRate = try Self.rate(config.storeRate, "store-rate")
        guard let keep = try? KeepAlive(parsing: config.keepAlive) else {
            throw ValidationError("--validate: the report's keep_alive is not a duration")
        }
        base.keepAlive = keep
        base.maxInstances = 1
        base.prompt = .fixed(1)
        base.output = .fixed(1)
        var storeNote: String?
        if calibration == nil {
            base.calibration = Self.calibration(from: runs, bytes: config.weightBytes, base: base.calibration)
            // The shaped link is the store's limit on paper; with every process on a few cores
            // it delivers less. Measured where enough fetches overlapped that none was held by its
            // own limit (reports that time their requests).
            let perFetch = base.calibration.remoteBytesPerSecond
            let crowd = max(2, Int((base.storeRate / max(perFetch, 1)).rounded(.up)))
            if let (rate, seconds) = BenchClusterReport.crowdedStoreRate(
                runs: runs, bytes: config.weightBytes, crowd: crowd), seconds >= Self.crowdedSeconds
            {
                storeNote = String(
                    format:
                        "; the store delivered %.0f MB/s with %d or more fetches under way (%.0f s of the runs; shaped to %.0f MB/s)",
                    rate / 1e6, crowd, seconds, base.storeRate / 1e6)
                base.storeRate = min(base.storeRate, rate)
            }
        }
        let (cluster, scaling, workload) = try base.build()
        print(base.describe(cluster: cluster, requests: workload, label: "replaying \(path)"))
        let used = cluster.calibration
        print(
            String(
                format:
                    "calibration%@: loads DRAM %.2f GB/s, SSD %.2f GB/s, peer %.0f MB/s, remote %.0f MB/s per fetch, start %.1f ms more, request %.1f ms%@",
                calibration == nil ? " from the report's cold and warm requests" : " from \(calibration!)",
                used.dramBytesPerSecond / 1e9, used.ssdBytesPerSecond / 1e9, used.peerBytesPerSecond / 1e6,
                used.remoteBytesPerSecond / 1e6, used.startSeconds * 1000, used.requestSeconds * 1000, storeNote ?? ""))
        var measured: [String: [(p50: Double, p99: Double)]] = [:]
        for run in runs {
            guard let policy = run.policy, !run.coldTTFT.isEmpty else { continue }
            let sorted = run.coldTTFT.sorted()
            measured[policy, default: []].append((percentile(sorted: sorted, 0.5), percentile(sorted: sorted, 0.99)))
        }
        let order = ["locality", "random", "round-robin", "least-loaded", "kserve"].filter { measured[$0] != nil }
        print(
            "POLICY         BENCH cold p50   SIM cold p50   Δ        BENCH cold p99   SIM cold p99   Δ        (bench: median over \(runs.count / max(1, order.count)) round(s))"
        )
        var rows: [SummaryRow] = []
        var tierLines: [String] = []
        var worst = 0.0
        for name in order {
            guard let policy = SimulatedPolicy(rawValue: name), let runs = measured[name] else { continue }
            let result = try Simulator(
                cluster: cluster, policy: policy, scaling: scaling, requests: workload, seed: base.seed
            ).run()
            rows.append(SummaryRow(point: "validate", sweep: nil, value: 0, result: result))
            let benchP50 = Self.median(runs.map(\.p50))
            let benchP99 = Self.median(runs.map(\.p99))
            let simP50 = percentile(result.coldTTFT, 0.5)
            let simP99 = percentile(result.coldTTFT, 0.99)
            let d50 = (simP50 - benchP50) / benchP50
            let d99 = (simP99 - benchP99) / benchP99
            worst = max(worst, abs(d50), abs(d99))
            let benchRuns = report.runs.filter { $0.policy == name }
            tierLines.append(
                "\(name): "
                    + Self.coldByTier(
                        bench: benchRuns, simulated: Array(zip(result.coldTTFT, result.coldTiers))))
            print(
                [
                    name.padding(toLength: 14, withPad: " ", startingAt: 0),
                    String(format: "%.3f s", benchP50).padding(toLength: 16, withPad: " ", startingAt: 0),
                    String(format: "%.3f s", simP50).padding(toLength: 14, withPad: " ", startingAt: 0),
                    String(format: "%+.0f%%", d50 * 100).padding(toLength: 8, withPad: " ", startingAt: 0),
                    String(format: "%.3f s", benchP99).padding(toLength: 16, withPad: " ", startingAt: 0),
                    String(format: "%.3f s", simP99).padding(toLength: 14, withPad: " ", startingAt: 0),
                    String(format: "%+.0f%%", d99 * 100),
                ].joined(separator: " "))
        }
        print("cold requests by the tier their instance loaded from, bench per round (median over rounds) / simulated:")
        for line in tierLines { print("  " + line) }
        print(
            String(
                format: "largest deviation %.0f%%: %@ the 15%% goal", worst * 100, worst <= 0.15 ? "meets" : "misses"))
        try write(rows: rows, cdfs: [], sweep: nil)
    }

    /// Node speeds as the bench run measured them. A cold request's wait, by the server's own
    /// account, is its queue, its instance's load and engine start; what its first token took
    /// beyond a warm request's is the rest of the load (an instance serves while its weights
    /// still arrive). Per tier, the load is the median of the cold requests' loads plus the
    /// median of that rest (a remote fetch: see below); the start's fixed cost is the median engine start plus the 10th
    /// percentile of the queue phase (placement and the start call with nothing ahead); a
    /// request's own cost is the warm requests' median time to first token. Queueing behind
    /// other loads and sharing the store's link are left to the simulation. Tiers the run never
    /// loaded from keep `base`'s figures.
    /// Least time the store must have been crowded for its measured rate to replace the shaped one.
    static let crowdedSeconds = 5.0

    static func calibration(from runs: [BenchClusterReport.Run], bytes: Int, base: Calibration) -> Calibration {
        var loads: [String: [Double]] = [:]
        var rests: [String: [Double]] = [:]
        var initSeconds: [Double] = []
        var queueSeconds: [Double] = []
        var warm: [Double] = []
        for run in runs {
            warm += run.warmTTFT
            // Both list the run's cold requests in the same order.
            guard run.coldTTFT.count == run.coldPhases.count else { continue }
            for (ttft, phase) in zip(run.coldTTFT, run.coldPhases) {
                guard let phase else { continue }
                loads[phase.tier, default: []].append(phase.load)
                rests[phase.tier, default: []].append(ttft - phase.queue - phase.load - phase.engineInit)
                initSeconds.append(phase.engineInit)
                queueSeconds.append(phase.queue)
            }
        }
        var calibration = base
        let warmMedian = warm.isEmpty ? nil : median(warm)
        if let warmMedian {
            let tokens =
                1 / calibration.prefill(bytes: Int(calibration.referenceBytes))
                + 1 / calibration.decode(bytes: Int(calibration.referenceBytes))
            calibration.requestSeconds = max(0, warmMedian - tokens)
        }
        if !initSeconds.isEmpty { calibration.startSeconds = median(initSeconds) + percentile(queueSeconds, 0.1) }
        for (tier, values) in loads {
            let seconds = median(values) + max(0, median(rests[tier] ?? []) - (warmMedian ?? 0))
            let rate = Double(bytes) / max(seconds, 1e-6)
            switch tier {
            case "dram": calibration.dramBytesPerSecond = rate
            case "ssd": calibration.ssdBytesPerSecond = rate
            case "peer": calibration.peerBytesPerSecond = rate
            default: break
            }
        }
        // A remote fetch's load shares the store's link, which the simulation shares again: its
        // rate alone is the 90th percentile of the decision log's remote loads (the fastest had
        // the store nearly to themselves).
        let remote = runs.flatMap(\.loads).filter { $0.tier == "remote" }.map { $0.bytes / $0.seconds }
        if !remote.isEmpty { calibration.remoteBytesPerSecond = percentile(remote, 0.9) }
        return calibration
    }

    /// Per tier, how many cold requests waited for a load from it and their median time to first
    /// token: in the bench (per round, the median over rounds) and in the simulation.
    static func coldByTier(bench runs: [BenchClusterReport.Run], simulated: [(Double, CheckpointTier?)]) -> String {
        var parts: [String] = []
        for tier in CheckpointTier.allCases {
            var counts: [Double] = []
            var medians: [Double] = []
            for run in runs where run.coldTTFT.count == run.coldPhases.count {
                let times = zip(run.coldTTFT, run.coldPhases).compactMap { $1?.tier == tier.rawValue ? $0 : nil }
                counts.append(Double(times.count))
                if !times.isEmpty { medians.append(median(times)) }
            }
            let mine = simulated.compactMap { $1 == tier ? $0 : nil }
            guard counts.contains(where: { $0 > 0 }) || !mine.isEmpty else { continue }
            let bench = medians.isEmpty ? "-" : String(format: "%.3f s", median(medians))
            let sim = mine.isEmpty ? "-" : String(format: "%.3f s", median(mine))
            let count = counts.isEmpty ? "-" : String(format: "%.0f", median(counts))
            parts.append("\(tier.rawValue) \(count) (\(bench)) / \(mine.count) (\(sim))")
        }
        return parts.joined(separator: ", ")
    }

    /// The distinct values, in the order they first appear.
    static func ordered(_ values: [String]) -> [String] {
        var seen: Set<String> = []
        return values.filter { seen.insert($0).inserted }
    }

    static func median(_ values: [Double]) -> Double { Sample(values: values).median }
}
