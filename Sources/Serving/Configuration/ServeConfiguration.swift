public import Foundation
public import Scheduling
import Store
import Yams

/// Everything `sllm serve` can be told, from four layers: built-in defaults, a YAML config
/// file, `SLLM_*` environment variables, then flags (each overriding the one before).
public struct ServeConfiguration: Sendable, Equatable {
    public enum Auth: String, Sendable, Equatable {
        /// Keys required unless the server binds only to loopback.
        case auto
        case on
        case off
    }

    public var host = "127.0.0.1"
    public var port = 8343
    /// Where models, the DRAM cache's index and `state.sqlite` live.
    public var dataDirectory: String
    public var auth = Auth.auto
    /// Keys accepted for the OpenAI API (besides keys created through the admin API).
    public var apiKeys: [String] = []
    /// The key for admin endpoints (also accepted for the OpenAI API).
    public var adminKey: String?
    /// Memory for instances (weights + KV caches) on this node.
    public var memoryBudgetBytes: Int
    /// DRAM cache of checkpoints (the tier instances start from fastest).
    public var dramCacheBytes: Int
    /// Where the DRAM cache lives (nil: /dev/shm/sllm-<hash of the data directory>).
    public var cacheDirectory: String?
    /// Compute threads per instance.
    public var threads: Int
    /// Read checkpoints from the SSD with `O_DIRECT` instead of buffered reads with readahead.
    public var directIO = false
    /// Remote stores (`BASE/NAME/index`) a model missing from the store is fetched from at its
    /// first load, after any peer the scheduler names (`remote`, a comma-separated list;
    /// `--remote`, repeatable).
    public var remotes: [URL] = []
    /// Deployed (scale-to-zero) on the first start; empty for none.
    public var defaultModel = ModelSource.defaultModel.name
    /// Models (deployment names) started at launch and kept loaded for their keep-alive.
    public var preload: [String] = []
    /// Defaults for new deployments.
    public var deploymentDefaults = ScalingSettings()
    /// The scaling settings some layer (file, environment, flags) gave explicitly; these also
    /// apply at start to the deployments the server makes itself (the default model, `preload`),
    /// over what `sllm update` stored for them.
    public var explicitScaling: Set<String> = []
    /// Largest request body accepted.
    public var maxBodyBytes = 8 << 20
    /// How long in-flight streams may run after SIGINT/SIGTERM before they are cut.
    public var shutdownTimeout: Duration = .seconds(30)
    /// A connection with no request in progress is closed after this long (also one whose
    /// request head never completes: slowloris).
    public var idleTimeout: Duration = .seconds(60)
    /// A request must arrive whole (head to last body byte) within this long.
    public var requestTimeout: Duration = .seconds(60)
    /// Most connections open at once; more are refused.
    public var maxConnections = 1024
    /// Bytes per second the background check of the DRAM cache re-hashes (0: off).
    public var dramScrubBytesPerSecond = 64 << 20
    /// Pause between two passes of the background check over the DRAM cache.
    public var dramScrubInterval: Duration = .seconds(600)
    /// Fill the DRAM cache's pool with allocated memory in the background from the start, up to
    /// its budget, so a cold load does not wait for fresh pages (`PoolFiller`).
    public var dramFill = true
    /// Start an instance's engine while its weights are still read from the SSD: a prompt's pass
    /// computes each layer as soon as it has arrived (`ModelLoader.load(_:streaming:)`).
    public var serveWhileLoading = true
    /// A controller: a node lacking a checkpoint fetches it from the nodes that hold it (or are
    /// fetching it); off, every node fetches from its remote stores (links that are slow or
    /// metered; the KServe-like baseline of `sllm bench cluster`).
    public var peerFetch = true
    /// A controller: a cold start may first migrate a busy instance off the node where the
    /// checkpoint sits in its fastest tier, when the locality scheduler's cost model says that
    /// starts it sooner than loading elsewhere (`MigrationPlanner`).
    public var migration = false
    /// A controller: when the instances of one deployment on different nodes carry uneven loads
    /// (after a scale-up, or as jobs end), running jobs move from the busiest to the least busy
    /// on the migration mechanism (`Deployment.rebalance`).
    public var rebalance = false
    /// A worker: a checkpoint it fetched (from a peer or a remote store) stays in its store and
    /// DRAM cache; off, it is dropped when its last instance stops, as a pod's `emptyDir` is (every
    /// start fetches it again).
    public var keepFetched = true
    /// Where deployments, settings and API keys are kept: nil for `<data-dir>/state.sqlite`, or a
    /// PostgreSQL URL (`postgres://user@host:5432/db`) that several servers or controllers share.
    public var stateURL: String?
    /// Serve HTTPS with this PEM certificate (chain) and PEM private key (both or neither).
    /// Where the console finds `sllm simulate --out` runs to show beside the live figures (nil:
    /// `<data-dir>/experiments`).
    public var experimentsDirectory: String?
    public var tlsCertificate: String?
    public var tlsKey: String?

    public init(dataDirectory: String) {
        self.dataDirectory = dataDirectory
        let memory = Int(ProcessInfo.processInfo.physicalMemory)
        memoryBudgetBytes = memory / 2
        dramCacheBytes = min(8 << 30, Int(Double(memory) * 0.4))
        threads = max(1, ProcessInfo.processInfo.activeProcessorCount)
    }

    /// Whether requests must carry a key.
    /// The experiments directory in effect.
    public var experimentsPath: String { experimentsDirectory ?? dataDirectory + "/experiments" }

    public var requiresKeys: Bool {
        switch auth {
        case .on: return true
        case .off: return false
        case .auto: return !Self.isLoopback(host)
        }
    }

    /// Whether `host` is only ever the loopback interface, decided on the addresses it resolves
    /// to (not its spelling: `127.example.com` is a public name): every address must be in
    /// 127.0.0.0/8 or be ::1. A name that does not resolve is not loopback.
    static func isLoopback(_ host: String) -> Bool {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &list) == 0, let first = list else { return false }
        defer { freeaddrinfo(list) }
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let current = entry {
            guard let address = current.pointee.ai_addr else { return false }
            switch Int32(address.pointee.sa_family) {
            case AF_INET:
                let ipv4 = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                    UInt32(bigEndian: $0.pointee.sin_addr.s_addr)
                }
                guard ipv4 >> 24 == 127 else { return false }
            case AF_INET6:
                let bytes = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
                    withUnsafeBytes(of: pointer.pointee.sin6_addr) { Array($0) }
                }
                // ::1, or an IPv4-mapped loopback (::ffff:127.x.y.z).
                let isOne = bytes.prefix(15).allSatisfy { $0 == 0 } && bytes[15] == 1
                let isMapped =
                    bytes.prefix(10).allSatisfy { $0 == 0 } && bytes[10] == 0xff && bytes[11] == 0xff
                    && bytes[12] == 127
                guard isOne || isMapped else { return false }
            default:
                return false
            }
            entry = current.pointee.ai_next
        }
        return true
    }

    /// `host:port` or `[v6]:port` split in two; nil for a bare host (or `::1`).
    static func splitHostPort(_ value: String) -> (String, Int)? {
        if value.hasPrefix("["), let close = value.firstIndex(of: "]") {
            let rest = value[value.index(after: close)...]
            guard rest.hasPrefix(":"), let port = Int(rest.dropFirst()), (0...65535).contains(port) else { return nil }
            return (String(value[value.index(after: value.startIndex)..<close]), port)
        }
        let parts = value.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, let port = Int(parts[1]), (0...65535).contains(port) else {
            return nil
        }
        return (String(parts[0]), port)
    }

    /// The URL a client on this machine reaches the server at: a wildcard bind address becomes
    /// the loopback one.
    public var clientURL: String {
        let reachable = ["0.0.0.0", "::", "", "*"].contains(host) ? "127.0.0.1" : host
        return "http://" + (reachable.contains(":") ? "[\(reachable)]" : reachable) + ":\(port)"
    }

    /// The settings `sllm serve` would start with from its config file and environment (no flags):
    /// what the admin commands read to find the server the user started.
    public static func resolved(
        dataDirectory: String, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ServingError) -> ServeConfiguration {
        var configuration = ServeConfiguration(dataDirectory: dataDirectory)
        let explicit = environment["SLLM_CONFIG"]
        let path = explicit ?? dataDirectory + "/config.yaml"
        if explicit != nil || FileManager.default.fileExists(atPath: path) {
            var file = try fileLayer(path: path)
            file["data_dir"] = nil
            try configuration.apply(file, source: "config file \(path)")
        }
        try configuration.apply(environmentLayer(environment), source: "environment")
        return configuration
    }

    // MARK: - Layers

    /// Every setting's name, as written in the config file (snake_case); the environment
    /// variable is `SLLM_` + its upper-cased name, the flag `--` + it with dashes.
    public static let keys: [String] = [
        "host", "port", "data_dir", "auth", "api_keys", "admin_key", "memory_budget", "dram_cache", "cache_dir",
        "threads",
        "direct_io", "default_model", "preload", "min_instances", "max_instances", "target_concurrency", "keep_alive",
        "queue_limit", "max_body", "shutdown_timeout", "idle_timeout", "request_timeout", "max_connections",
        "dram_scrub_rate", "dram_scrub_interval", "dram_fill", "serve_while_loading", "state_url", "tls_cert",
        "tls_key", "remote", "peer_fetch", "keep_fetched", "migration", "rebalance", "experiments",
    ]

    /// The settings that are a deployment's scaling.
    public static let scalingKeys: Set<String> = [
        "min_instances", "max_instances", "target_concurrency", "keep_alive", "queue_limit",
    ]

    /// Applies one layer of settings given as text (`source` names the layer in errors).
    public mutating func apply(_ values: [String: String], source: String) throws(ServingError) {
        func fail(_ key: String, _ value: String, _ expected: String) -> ServingError {
            ServingError(.invalidRequest, "\(source): \(key) `\(Self.brief(value))` is not \(expected)")
        }
        func list(_ value: String) -> [String] {
            value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        /// `30s`, `10m`, `1h30m`, or plain seconds; nil beyond 10 years or not a duration.
        func duration(_ value: String) -> Duration? {
            parseDuration(value) ?? Double(value).flatMap { checkedDuration(seconds: $0) }
        }
        for (key, value) in values.sorted(by: { $0.key < $1.key }) {
            if Self.scalingKeys.contains(key) { explicitScaling.insert(key) }
            switch key {
            case "host":
                // `host:port` sets both, as OLLAMA_HOST does (`[::1]:8343` for IPv6).
                if let (name, port) = Self.splitHostPort(value) {
                    host = name
                    self.port = port
                } else {
                    guard !value.isEmpty else { throw fail(key, value, "a host name or address") }
                    host = value
                }
            case "port":
                guard let port = Int(value), (0...65535).contains(port) else {
                    throw fail(key, value, "a port (0-65535)")
                }
                self.port = port
            case "data_dir": dataDirectory = value
            case "auth":
                guard let auth = Auth(rawValue: value.lowercased()) else { throw fail(key, value, "auto, on or off") }
                self.auth = auth
            case "api_keys": apiKeys = list(value)
            case "admin_key": adminKey = value.isEmpty ? nil : value
            case "memory_budget":
                guard let bytes = parseByteCount(value), bytes > 0 else {
                    throw fail(key, value, "a byte count such as 16GiB")
                }
                memoryBudgetBytes = bytes
            case "dram_cache":
                guard let bytes = parseByteCount(value) else { throw fail(key, value, "a byte count such as 8GiB") }
                dramCacheBytes = bytes
            case "cache_dir": cacheDirectory = value.isEmpty ? nil : value
            case "threads":
                guard let threads = Int(value), (1...256).contains(threads) else {
                    throw fail(key, value, "a thread count (1-256)")
                }
                self.threads = threads
            case "direct_io", "dram_fill", "serve_while_loading", "peer_fetch", "keep_fetched", "migration",
                "rebalance":
                let flag: Bool
                switch value.lowercased() {
                case "true", "yes", "on", "1": flag = true
                case "false", "no", "off", "0": flag = false
                default: throw fail(key, value, "true or false")
                }
                switch key {
                case "direct_io": directIO = flag
                case "dram_fill": dramFill = flag
                case "peer_fetch": peerFetch = flag
                case "keep_fetched": keepFetched = flag
                case "migration": migration = flag
                case "rebalance": rebalance = flag
                default: serveWhileLoading = flag
                }
            case "experiments": experimentsDirectory = value.isEmpty ? nil : value
            case "default_model": defaultModel = value
            case "preload": preload = list(value)
            case "remote":
                var urls: [URL] = []
                for text in list(value) {
                    guard let url = URL(string: text), url.scheme == "http" || url.scheme == "https", url.host != nil
                    else { throw fail(key, text, "an http(s) URL of a remote store (BASE, holding BASE/NAME/index)") }
                    urls.append(url)
                }
                remotes = urls
            case "min_instances":
                guard let count = Int(value), count >= 0 else { throw fail(key, value, "a count (0 or more)") }
                deploymentDefaults.minInstances = count
            case "max_instances":
                guard let count = Int(value), count >= 1 else { throw fail(key, value, "a count (1 or more)") }
                deploymentDefaults.maxInstances = count
            case "target_concurrency":
                guard let count = Int(value), (1...256).contains(count) else {
                    throw fail(key, value, "a count (1-256)")
                }
                deploymentDefaults.targetConcurrency = count
            case "keep_alive":
                do { deploymentDefaults.keepAlive = try KeepAlive(parsing: value) } catch {
                    throw fail(key, value, "a duration of at most 10 years such as 5m, 0 or -1 (forever)")
                }
            case "queue_limit":
                guard let count = Int(value), count >= 0 else { throw fail(key, value, "a count (0 or more)") }
                deploymentDefaults.queueLimit = count
            case "max_body":
                guard let bytes = parseByteCount(value), bytes >= 1024 else {
                    throw fail(key, value, "a byte count of at least 1KiB")
                }
                maxBodyBytes = bytes
            case "shutdown_timeout":
                guard let duration = duration(value) else {
                    throw fail(key, value, "a duration of at most 10 years such as 30s")
                }
                shutdownTimeout = duration
            case "idle_timeout", "request_timeout":
                guard let duration = duration(value), duration > .zero else {
                    throw fail(key, value, "a positive duration of at most 10 years such as 60s")
                }
                if key == "idle_timeout" { idleTimeout = duration } else { requestTimeout = duration }
            case "dram_scrub_rate":
                // Per second; `64MiB`, `64MiB/s` and `0` (off) are taken.
                let text = value.lowercased().hasSuffix("/s") ? String(value.dropLast(2)) : value
                guard let bytes = parseByteCount(text) else {
                    throw fail(key, value, "a byte count per second such as 64MiB, or 0 (off)")
                }
                dramScrubBytesPerSecond = bytes
            case "dram_scrub_interval":
                guard let duration = duration(value) else {
                    throw fail(key, value, "a duration of at most 10 years such as 10m")
                }
                dramScrubInterval = duration
            case "state_url":
                // Checked in full where it is opened; never echoed here (it may hold a password).
                guard value.isEmpty || value.hasPrefix("postgres://") || value.hasPrefix("postgresql://") else {
                    throw ServingError(
                        .invalidRequest,
                        "\(source): state_url is not a PostgreSQL URL (postgres://user@host:5432/database), or empty for the data directory's SQLite file"
                    )
                }
                stateURL = value.isEmpty ? nil : value
            case "tls_cert":
                tlsCertificate = value.isEmpty ? nil : value
            case "tls_key":
                tlsKey = value.isEmpty ? nil : value
            case "max_connections":
                guard let count = Int(value), (1...1_000_000).contains(count) else {
                    throw fail(key, value, "a count (1-1000000)")
                }
                maxConnections = count
            default:
                throw ServingError(
                    .invalidRequest, "\(source): unknown setting `\(key)` (known: \(Self.keys.joined(separator: ", ")))"
                )
            }
        }
    }

    /// The settings present in the environment (`SLLM_HOST`, `SLLM_PORT`, …; `SLLM_HOME` is the data directory).
    public static func environmentLayer(_ environment: [String: String] = ProcessInfo.processInfo.environment)
        -> [String: String]
    {
        var layer: [String: String] = [:]
        for key in keys where key != "data_dir" {
            if let value = environment["SLLM_" + key.uppercased()] { layer[key] = value }
        }
        return layer
    }

    /// Reads a YAML config file into a layer: a mapping of the settings' names to scalars (lists
    /// for `api_keys` and `preload`).
    public static func fileLayer(path: String) throws(ServingError) -> [String: String] {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ServingError(.invalidRequest, "cannot read the config file \(path): \(error.localizedDescription)")
        }
        // Composed, not constructed: aliases stay shared, so a file of nested aliases (a
        // "billion laughs") costs what it is long, and only the top two levels are read.
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch {
            throw ServingError(.invalidRequest, "config file \(path) is not valid YAML: \(brief(error))")
        }
        guard let node else { return [:] }
        guard case .mapping(let mapping) = node else {
            throw ServingError(.invalidRequest, "config file \(path): expected a mapping of settings")
        }
        var layer: [String: String] = [:]
        for (keyNode, value) in mapping {
            guard case .scalar(let keyScalar) = keyNode else {
                throw ServingError(
                    .invalidRequest, "config file \(path): a setting's name must be a plain word, not \(brief(keyNode))"
                )
            }
            let rawKey = keyScalar.string
            let key = rawKey.replacingOccurrences(of: "-", with: "_")
            guard keys.contains(key) else {
                throw ServingError(
                    .invalidRequest,
                    "config file \(path): unknown setting `\(brief(rawKey))` (known: \(keys.joined(separator: ", ")))")
            }
            guard layer[key] == nil else {
                throw ServingError(.invalidRequest, "config file \(path): `\(rawKey)` is set twice")
            }
            switch value {
            case .scalar(let scalar): layer[key] = settingText(scalar)
            case .sequence(let items):
                var texts: [String] = []
                for item in items {
                    guard case .scalar(let scalar) = item else {
                        throw ServingError(
                            .invalidRequest,
                            "config file \(path): `\(rawKey)` must be a list of plain values, not of lists or mappings")
                    }
                    texts.append(settingText(scalar))
                }
                layer[key] = texts.joined(separator: ",")
            default: throw ServingError(.invalidRequest, "config file \(path): `\(rawKey)` must be a scalar or a list")
            }
        }
        return layer
    }

    /// A YAML value as the settings parse it: an unquoted null (`~`, `null`, nothing) is empty.
    private static func settingText(_ scalar: Node.Scalar) -> String {
        let quoted = scalar.style == .singleQuoted || scalar.style == .doubleQuoted
        return !quoted && ["", "~", "null", "Null", "NULL"].contains(scalar.string) ? "" : scalar.string
    }

    /// A parser's message or a value, each line cut to a readable length (YAML errors quote the
    /// offending line, which may be as long as the file).
    private static func brief(_ value: Any) -> String {
        "\(value)".split(separator: "\n", omittingEmptySubsequences: false)
            .prefix(4).map { $0.count > 160 ? $0.prefix(160) + "…" : $0 }.joined(separator: "\n")
    }
}
