/// How long an idle instance stays loaded (Ollama's `keep_alive`).
public enum KeepAlive: Sendable, Equatable, Codable, CustomStringConvertible {
    /// Unload after this long without requests; `.zero` unloads as soon as the last request ends.
    case duration(Duration)
    /// Never unload for idleness (Ollama's negative `keep_alive`).
    case forever

    /// Parses Ollama's forms: a duration string (`5m`, `1h30m`, `90s`, `500ms`), a number of
    /// seconds, `0`, or a negative value for "forever".
    public init(parsing text: String) throws(SchedulingError) {
        let trimmed = String(
            text.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
        if let seconds = Double(trimmed) {
            try self.init(seconds: seconds)
            return
        }
        if trimmed.hasPrefix("-") || ["forever", "inf", "infinite", "never"].contains(trimmed.lowercased()) {
            self = .forever; return
        }
        guard let duration = parseDuration(trimmed) else {
            throw SchedulingError(
                .invalidSetting,
                "keep_alive `\(text)` is not a duration of at most 10 years: use e.g. 5m, 30s, 1h, 0 (unload at once) or -1 (forever)",
                field: "keep_alive")
        }
        self = .duration(duration)
    }

    /// Seconds; negative means forever. Not-a-number, infinities and more than ten years are refused.
    public init(seconds: Double) throws(SchedulingError) {
        guard !seconds.isNaN else {
            throw SchedulingError(
                .invalidSetting, "keep_alive `\(seconds)` is not a number of seconds", field: "keep_alive")
        }
        if seconds < 0 { self = .forever; return }
        guard let duration = checkedDuration(seconds: seconds) else {
            throw SchedulingError(
                .invalidSetting,
                "keep_alive `\(seconds)` seconds is out of range: at most \(Int(longestDuration)) (10 years), or -1 for forever",
                field: "keep_alive")
        }
        self = .duration(duration)
    }

    public var description: String {
        switch self {
        case .forever: return "forever"
        case .duration(let duration): return formatDuration(duration)
        }
    }

    /// Seconds, negative for forever (how it is stored and sent).
    public var seconds: Double {
        switch self {
        case .forever: return -1
        case .duration(let duration): return duration.secondsValue
        }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let seconds = try? container.decode(Double.self) {
            do { try self.init(seconds: seconds) } catch {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: error.message)
            }
        } else {
            let text = try container.decode(String.self)
            do { try self.init(parsing: text) } catch {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: error.message)
            }
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// The scaling settings of a deployment.
public struct ScalingSettings: Sendable, Equatable, Codable {
    /// Instances kept even when idle (0: scale to zero).
    public var minInstances: Int = 0
    /// Most instances at once.
    public var maxInstances: Int = 1
    /// Requests one instance serves at once (its continuous-batching width).
    public var targetConcurrency: Int = 4
    /// Idle time before an instance above `minInstances` stops.
    public var keepAlive: KeepAlive = .duration(.seconds(300))
    /// Requests waiting for a slot beyond those being served; more get 429.
    public var queueLimit: Int = 512
    /// Nodes that keep the checkpoint in their DRAM cache even with no instance running, so a
    /// cold start there maps memory instead of reading a disk or a network (0: none on purpose).
    public var dramReplicas: Int = 0

    public init() {}

    private enum CodingKeys: String, CodingKey {
        case minInstances, maxInstances, targetConcurrency, keepAlive, queueLimit, dramReplicas
    }

    /// Reads settings stored before a field existed with that field's default.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        minInstances = try container.decodeIfPresent(Int.self, forKey: .minInstances) ?? 0
        maxInstances = try container.decodeIfPresent(Int.self, forKey: .maxInstances) ?? 1
        targetConcurrency = try container.decodeIfPresent(Int.self, forKey: .targetConcurrency) ?? 4
        keepAlive = try container.decodeIfPresent(KeepAlive.self, forKey: .keepAlive) ?? .duration(.seconds(300))
        queueLimit = try container.decodeIfPresent(Int.self, forKey: .queueLimit) ?? 512
        dramReplicas = try container.decodeIfPresent(Int.self, forKey: .dramReplicas) ?? 0
    }

    /// Checks the settings' ranges.
    public func validate() throws(SchedulingError) {
        guard minInstances >= 0 else {
            throw SchedulingError(
                .invalidSetting, "min instances must be 0 or more (got \(minInstances))", field: "min_instances")
        }
        guard maxInstances >= 1 else {
            throw SchedulingError(
                .invalidSetting, "max instances must be at least 1 (got \(maxInstances))", field: "max_instances")
        }
        guard minInstances <= maxInstances else {
            throw SchedulingError(
                .invalidSetting, "min instances (\(minInstances)) exceed max instances (\(maxInstances))",
                field: "min_instances")
        }
        guard (1...256).contains(targetConcurrency) else {
            throw SchedulingError(
                .invalidSetting, "target concurrency must be 1...256 (got \(targetConcurrency))",
                field: "target_concurrency")
        }
        guard queueLimit >= 0 else {
            throw SchedulingError(
                .invalidSetting, "queue limit must be 0 or more (got \(queueLimit))", field: "queue_limit")
        }
        guard (0...64).contains(dramReplicas) else {
            throw SchedulingError(
                .invalidSetting, "DRAM replicas must be 0...64 (got \(dramReplicas))", field: "dram_replicas")
        }
    }
}
