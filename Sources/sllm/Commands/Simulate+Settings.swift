import ArgumentParser
import Foundation
import Scheduling
import Simulation
import Store

/// One simulation's settings, as the options give them (a sweep changes one).
struct SimulationSettings {
    var nodes: Int
    var models: Int
    var sizes: [(bytes: Int, weight: Double)]
    var extraBytes: Int
    var memoryBytes: Int?
    var instancesPerNode: Int
    var dramBytes: Int?
    var dramModels: Int
    var ssdBytes: Int
    var linkRate: Double
    var storeRate: Double
    var ssdCopies: Int
    var keepAlive: KeepAlive
    var maxInstances: Int
    var concurrency: Int
    var queueLimit: Int
    var requests: Int
    var durationSeconds: Double?
    var rate: Double
    var cv: Double
    var zipf: Double
    var prompt: LengthDistribution
    var output: LengthDistribution
    var seed: UInt64
    var trace: (path: String, format: TraceFormat, speedup: Double)?
    var calibration: Calibration

    static let sweepable = ["rate", "models", "nodes", "cv", "zipf", "instances-per-node"]

    mutating func set(_ name: String, to value: Double) throws {
        switch name {
        case "rate": rate = value
        case "models": models = Int(value)
        case "nodes": nodes = Int(value)
        case "cv": cv = value
        case "zipf": zipf = value
        case "instances-per-node": instancesPerNode = Int(value)
        default: throw ValidationError("--sweep: `\(name)` is not one of \(Self.sweepable.joined(separator: ", "))")
        }
    }

    /// The cluster, the deployments' scaling and the requests.
    func build() throws -> (SimulatedCluster, ScalingSettings, [SimulatedRequest]) {
        var random = SplitMix(seed: seed ^ 0x51_2E5)
        let total = sizes.reduce(0) { $0 + $1.weight }
        let modelBytes = (0..<models).map { _ -> Int in
            guard sizes.count > 1 else { return sizes[0].bytes }
            var draw = random.unit() * total
            for size in sizes {
                draw -= size.weight
                if draw < 0 { return size.bytes }
            }
            return sizes[sizes.count - 1].bytes
        }
        let first = sizes[0].bytes
        let cluster = SimulatedCluster(
            nodes: nodes, memoryBytes: memoryBytes ?? instancesPerNode * (first + extraBytes),
            dramCacheBytes: dramBytes ?? dramModels * first + (16 << 20), ssdBytes: ssdBytes,
            linkBytesPerSecond: linkRate, remoteBytesPerSecond: storeRate, modelBytes: modelBytes,
            instanceExtraBytes: extraBytes, ssdCopies: min(ssdCopies, nodes), calibration: calibration)
        var scaling = ScalingSettings()
        scaling.keepAlive = keepAlive
        scaling.maxInstances = maxInstances
        scaling.targetConcurrency = concurrency
        scaling.queueLimit = queueLimit
        let workload: [SimulatedRequest]
        do {
            if let trace {
                workload = try TraceReader(
                    format: trace.format, models: models, zipf: zipf, promptTokens: prompt, outputTokens: output,
                    speedup: trace.speedup, seed: seed
                ).read(path: trace.path)
            } else {
                let count = durationSeconds.map { max(1, Int(($0 * rate).rounded())) } ?? requests
                let synthetic = SyntheticWorkload(
                    requests: count, rate: rate, cv: cv, zipf: zipf, models: models, promptTokens: prompt,
                    outputTokens: output, seed: seed)
                try synthetic.validate()
                workload = synthetic.generate()
            }
            try cluster.validate()
        } catch { throw CommandFailure("simulate: \(error.message)") }
        return (cluster, scaling, workload)
    }

    func describe(cluster: SimulatedCluster, requests: [SimulatedRequest], label: String?) -> String {
        let span = requests.last?.at ?? 0
        let sizes = Set(cluster.modelBytes).sorted().map { formatBytes(Int64($0)) }.joined(separator: "/")
        return """
            \(label.map { "[\($0)] " } ?? "")\(cluster.nodes) nodes (memory \(formatBytes(Int64(cluster.memoryBytes))), DRAM cache \(formatBytes(Int64(cluster.dramCacheBytes))), link \(Self.rate(cluster.linkBytesPerSecond))), remote store \(Self.rate(cluster.remoteBytesPerSecond)); \(cluster.models) models of \(sizes), \(cluster.ssdCopies) SSD cop\(cluster.ssdCopies == 1 ? "y" : "ies") each; keep-alive \(keepAlive)
            workload: \(requests.count) requests over \(String(format: "%.0f", span)) s (\(String(format: "%.2f", Double(requests.count) / max(span, 1e-9))) req/s)\(trace.map { ", trace \($0.path) (\($0.format.rawValue))" } ?? String(format: ", Gamma CV %.1f, Zipf %.1f", cv, zipf))
            """
    }

    static func rate(_ bytesPerSecond: Double) -> String {
        bytesPerSecond >= 1e9
            ? String(format: "%.2f GB/s", bytesPerSecond / 1e9) : String(format: "%.0f MB/s", bytesPerSecond / 1e6)
    }
}

extension Simulate {
    func settings() throws -> SimulationSettings {
        func bytes(_ text: String, _ name: String) throws -> Int {
            guard let value = parseByteCount(text), value > 0 else {
                throw ValidationError("--\(name) `\(text)` is not a size (e.g. 92MiB, 4GiB)")
            }
            return value
        }
        var sizes: [(Int, Double)] = []
        for part in modelSize.split(separator: ",") {
            let pieces = part.split(separator: ":")
            guard (1...2).contains(pieces.count) else {
                throw ValidationError("--model-size `\(part)`: give SIZE or SIZE:WEIGHT")
            }
            let weight = pieces.count == 2 ? Double(pieces[1]) : 1
            guard let weight, weight.isFinite, weight > 0 else {
                throw ValidationError("--model-size `\(part)`: the weight must be a positive number")
            }
            sizes.append((try bytes(String(pieces[0]), "model-size"), weight))
        }
        guard !sizes.isEmpty else { throw ValidationError("--model-size names no size") }
        guard let keep = try? KeepAlive(parsing: keepAlive) else {
            throw ValidationError("--keep-alive `\(keepAlive)` is not a duration (e.g. 2s, 5m, -1 for forever)")
        }
        var durationSeconds: Double?
        if let duration {
            guard let parsed = parseDuration(duration), parsed > .zero else {
                throw ValidationError("--duration `\(duration)` is not a duration (e.g. 1h, 90s)")
            }
            durationSeconds = Double(parsed.components.seconds) + Double(parsed.components.attoseconds) * 1e-18
        }
        var trace: (String, TraceFormat, Double)?
        if let path = self.trace {
            guard let format = TraceFormat(rawValue: format) else {
                throw ValidationError(
                    "--format `\(format)` is not one of \(TraceFormat.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
            trace = (absolutePath(path), format, speedup)
        }
        var calibration = Calibration()
        if let path = self.calibration {
            guard let data = FileManager.default.contents(atPath: absolutePath(path)) else {
                throw ValidationError("--calibration: cannot read \(path)")
            }
            do { calibration = try JSONDecoder().decode(Calibration.self, from: data) } catch {
                throw ValidationError("--calibration \(path) is not a calibration: \(error)")
            }
        }
        guard (1...64).contains(instancesPerNode), (0...1024).contains(dramModels), maxInstances >= 1,
            (1...256).contains(concurrency), queueLimit >= 0, ssdCopies >= 0
        else {
            throw ValidationError(
                "--instances-per-node 1...64, --dram-models 0...1024, --max-instances ≥ 1, --concurrency 1...256, --queue-limit and --ssd-copies ≥ 0"
            )
        }
        let prompt: LengthDistribution
        let output: LengthDistribution
        do {
            prompt = try LengthDistribution(parsing: self.prompt, name: "--prompt")
            output = try LengthDistribution(parsing: self.output, name: "--output")
        } catch { throw ValidationError(error.message) }
        return SimulationSettings(
            nodes: nodes, models: models, sizes: sizes,
            extraBytes: try parseByteCount(instanceExtra).orThrow(
                ValidationError("--instance-extra `\(instanceExtra)` is not a size")),
            memoryBytes: try memory.map { try bytes($0, "memory") }, instancesPerNode: instancesPerNode,
            dramBytes: try dramCache.map { try bytes($0, "dram-cache") }, dramModels: dramModels,
            ssdBytes: try bytes(ssd, "ssd"), linkRate: try Self.rate(link, "link"),
            storeRate: try Self.rate(storeRate, "store-rate"), ssdCopies: ssdCopies, keepAlive: keep,
            maxInstances: maxInstances, concurrency: concurrency, queueLimit: queueLimit, requests: requests,
            durationSeconds: durationSeconds, rate: rate, cv: cv, zipf: zipf, prompt: prompt, output: output,
            seed: seed,
            trace: trace.map { (path: $0.0, format: $0.1, speedup: $0.2) }, calibration: calibration)
    }

    /// Bytes per second from tc's units (`8gbit`, `1600mbit`, `500kbit`) or a byte rate (`1GB/s`, `200MiB/s`).
    static func rate(_ text: String, _ name: String) throws -> Double {
        let lowered = text.lowercased().replacingOccurrences(of: " ", with: "")
        for (suffix, bits) in [("tbit", 1e12), ("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)]
        where lowered.hasSuffix(suffix) {
            if let value = Double(lowered.dropLast(suffix.count)), value.isFinite, value > 0, value < 1e15 {
                return value * bits / 8
            }
        }
        if lowered.hasSuffix("/s") {
            let amount = String(lowered.dropLast(2))
            for (suffix, scale) in [("gb", 1e9), ("mb", 1e6), ("kb", 1e3)] where amount.hasSuffix(suffix) {
                if let value = Double(amount.dropLast(suffix.count)), value.isFinite, value > 0, value < 1e6 {
                    return value * scale
                }
            }
            if let value = parseByteCount(amount), value > 0 { return Double(value) }
        }
        throw ValidationError("--\(name) `\(text)` is not a rate (tc units like 8gbit or 1600mbit, or 1GB/s)")
    }

    static func policies(_ text: String) throws -> [SimulatedPolicy] {
        let list = try text.split(separator: ",").map { name -> SimulatedPolicy in
            let trimmed = name.trimmingCharacters(in: .whitespaces)
            guard let policy = SimulatedPolicy(rawValue: trimmed) else {
                throw ValidationError(
                    "--policies: `\(trimmed)` is not one of \(SimulatedPolicy.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
            return policy
        }
        guard !list.isEmpty else { throw ValidationError("--policies names none") }
        return list
    }

    /// The sweep's points: (setting, value) each, or one point with no setting.
    func sweepPoints() throws -> [(name: String?, value: Double)] {
        guard let sweep else { return [(nil, 0)] }
        let parts = sweep.split(separator: "=", maxSplits: 1)
        guard parts.count == 2, SimulationSettings.sweepable.contains(String(parts[0])) else {
            throw ValidationError(
                "--sweep `\(sweep)`: give SETTING=V1,V2,… with SETTING one of \(SimulationSettings.sweepable.joined(separator: ", "))"
            )
        }
        let values = try parts[1].split(separator: ",").map { text -> Double in
            guard let value = Double(text), value.isFinite, value > 0 else {
                throw ValidationError("--sweep: `\(text)` is not a positive number")
            }
            return value
        }
        guard !values.isEmpty, values.count <= 64 else { throw ValidationError("--sweep takes 1...64 values") }
        return values.map { (String(parts[0]), $0) }
    }

    static func number(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }
}

extension Optional {
    func orThrow(_ error: @autoclosure () -> some Error) throws -> Wrapped {
        guard let self else { throw error() }
        return self
    }
}
