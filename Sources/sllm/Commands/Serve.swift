import ArgumentParser
import Checkpoint
import Cluster
import Foundation
import Logging
import Serving
import Store

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve deployed models over an OpenAI-compatible API, scaling each to zero when idle.",
        discussion: """
            With no configuration: binds 127.0.0.1:8343, keeps its state in <data-dir>/state.sqlite,
            and on its first start pulls and deploys smollm2-135m (scale-to-zero). Settings come from
            flags, then SLLM_* environment variables (SLLM_PORT, SLLM_KEEP_ALIVE, ...), then a YAML
            config file (--config, $SLLM_CONFIG, else <data-dir>/config.yaml if present), then defaults.

            Examples:
              sllm serve
              sllm serve --port 9000 --keep-alive 10m --preload smollm2-135m
              SLLM_ADMIN_KEY=secret sllm serve --host 0.0.0.0
            """)

    @OptionGroup var global: GlobalOptions

    @OptionGroup var options: ServeOptions

    func resolvedConfiguration() throws -> ServeConfiguration {
        try Self.layered(global: global, config: options.config, flags: options.flagLayer)
    }

    /// The settings as `sllm serve` would run with them: the config file, the environment, then
    /// `flags` (other commands, such as `sllm rm`, pass none to read the server's state_url).
    static func layered(global: GlobalOptions, config: String?, flags: [String: String]) throws
        -> ServeConfiguration
    {
        let environment = ProcessInfo.processInfo.environment
        var configuration = ServeConfiguration(dataDirectory: global.root)
        let explicitPath = config ?? environment["SLLM_CONFIG"]
        let path = explicitPath.map(absolutePath) ?? global.root + "/config.yaml"
        do {
            if explicitPath != nil || FileManager.default.fileExists(atPath: path) {
                var file = try ServeConfiguration.fileLayer(path: path)
                // --data-dir and SLLM_HOME outrank the file's data_dir.
                if global.dataDirectory != nil || environment["SLLM_HOME"] != nil { file["data_dir"] = nil }
                file["data_dir"] = file["data_dir"].map(absolutePath)
                try configuration.apply(file, source: "config file \(path)")
            }
            try configuration.apply(ServeConfiguration.environmentLayer(environment), source: "environment")
            try configuration.apply(flags, source: "flags")
        } catch {
            throw CommandFailure(error.message)
        }
        return configuration
    }

    func run() async throws {
        LoggingBootstrap.once(level: global.verbose ? .debug : global.quiet ? .error : .info)
        let configuration = try resolvedConfiguration()
        try await Self.serve(configuration, quiet: global.quiet, what: "OpenAI API under /v1") { state in
            if let state { return try await Server(configuration: configuration, state: state) }
            return try Server(configuration: configuration)
        }
    }

    /// Opens the state (the configured PostgreSQL database, else nil for the data directory's
    /// SQLite file), makes the server with it and serves until a shutdown signal, printing the
    /// address once listening. `sllm serve` and `sllm controller` run through here.
    static func serve(
        _ configuration: ServeConfiguration, quiet: Bool, what: String,
        makeServer: (PostgresStateStore?) async throws -> Server
    ) async throws {
        let server: Server
        var database: PostgresStateStore?
        do {
            if let url = configuration.stateURL {
                database = try await PostgresStateStore.open(PostgresLocation(url: url))
            }
            server = try await makeServer(database)
        } catch let error as ServingError {
            database?.close()
            throw CommandFailure(error.message)
        }
        defer { database?.close() }
        // A crash must not leave the port held by the crash reporter (a child process).
        FileSystem.installCrashSocketCloser()
        // Test hook: crash once listening, to check that a crash frees the port at once.
        let crashOnStart = ProcessInfo.processInfo.environment["SLLM_TEST_CRASH_AFTER_START"] == "1"
        do {
            try await server.run { port in
                if !quiet {
                    FileHandle.standardError.write(
                        Data(
                            "sllm serving on \(configuration.tlsCertificate == nil ? "http" : "https")://\(configuration.host):\(port) (\(what); data in \(configuration.dataDirectory))\n"
                                .utf8))
                }
                if crashOnStart { fatalError("SLLM_TEST_CRASH_AFTER_START: crashing on purpose") }
            }
        } catch {
            throw CommandFailure("serve: \(error)")
        }
    }
}

/// The settings `sllm serve` and `sllm controller` take as flags (each also an `SLLM_*` variable
/// and a config file key).
struct ServeOptions: ParsableArguments {
    @Option(help: "YAML config file (keys: \(ServeConfiguration.keys.joined(separator: ", "))).")
    var config: String?
    @Option(help: "Address to bind (default 127.0.0.1).") var host: String?
    @Option(help: "Port (default 8343; 0 picks a free one).") var port: Int?
    @Option(help: "auto (keys required beyond loopback), on or off.") var auth: String?
    @Option(name: .customLong("api-key"), help: "An accepted API key (repeatable).") var apiKeys: [String] = []
    @Option(name: .customLong("admin-key"), help: "The admin key (admin API; also valid for the OpenAI API).")
    var adminKey: String?
    @Option(
        name: .customLong("memory-budget"),
        help: "Memory for instances (weights + KV cache), e.g. 16GiB (default: half the RAM).") var memoryBudget:
        String?
    @Option(name: .customLong("dram-cache"), help: "DRAM checkpoint cache budget (default: 8GiB or 40% of RAM).")
    var dramCache: String?
    @Option(
        name: .customLong("cache-dir"),
        help: "Where the DRAM cache lives (default: /dev/shm/sllm-<hash of the data dir>).") var cacheDir: String?
    @Option(
        name: [.customShort("t"), .customLong("threads")], help: "Compute threads per instance (default: all cores).")
    var threads: Int?
    @Flag(
        name: .customLong("direct-io"),
        help:
            "Read checkpoints from the SSD with O_DIRECT (default: buffered reads with readahead, measured faster here)."
    ) var directIO = false
    @Option(
        name: .customLong("default-model"), help: "Deployed on the first start (\"\" for none; default smollm2-135m).")
    var defaultModel: String?
    @Option(help: "Start this deployment at launch (repeatable).") var preload: [String] = []
    @Option(
        name: .customLong("remote"),
        help:
            "Base URL of a remote store (BASE/NAME/index) a model missing from the store is fetched from at its first load (repeatable)."
    ) var remotes: [String] = []
    @Option(name: .customLong("min"), help: "Default minimum instances of new deployments (0).") var minInstances: Int?
    @Option(name: .customLong("max"), help: "Default maximum instances (1).") var maxInstances: Int?
    @Option(name: .customLong("target-concurrency"), help: "Default requests batched per instance (4).")
    var targetConcurrency: Int?
    @Option(
        name: .customLong("keep-alive"), parsing: .unconditional,
        help: "Default idle time before scale-down (5m; 0 = at once, -1 = never).") var keepAlive: String?
    @Option(
        name: .customLong("queue-limit"),
        help: "Default requests queued per deployment beyond its slots (512); more get 429.") var queueLimit: Int?
    @Option(name: .customLong("max-body"), help: "Largest request body (8MiB).") var maxBody: String?
    @Option(name: .customLong("shutdown-timeout"), help: "Time in-flight streams get after SIGINT/SIGTERM (30s).")
    var shutdownTimeout: String?
    @Option(
        name: .customLong("idle-timeout"), help: "Close a connection with no request in progress after this long (60s)."
    ) var idleTimeout: String?
    @Option(name: .customLong("request-timeout"), help: "A request must arrive whole within this long (60s).")
    var requestTimeout: String?
    @Option(name: .customLong("max-connections"), help: "Most connections open at once (1024).") var maxConnections:
        Int?
    @Option(
        name: .customLong("dram-scrub-rate"),
        help: "Bytes per second the background check of the DRAM cache re-hashes (64MiB; 0 = off).") var dramScrubRate:
        String?
    @Option(name: .customLong("dram-scrub-interval"), help: "Rest between two passes of the DRAM cache check (10m).")
    var dramScrubInterval: String?
    @Flag(
        name: .customLong("dram-fill"), inversion: .prefixedNo,
        help:
            "Fill the DRAM cache's pool with allocated memory in the background up to its budget, so cold loads run at disk speed (default: on; env SLLM_DRAM_FILL)."
    ) var dramFill: Bool?
    @Flag(
        name: .customLong("serve-while-loading"), inversion: .prefixedNo,
        help:
            "Start a cold instance's engine while its weights are still read from the SSD, computing each layer as it arrives (default: on)."
    ) var serveWhileLoading: Bool?
    @Option(
        name: .customLong("state-url"),
        help:
            "Keep deployments, settings and API keys in PostgreSQL (postgres://user[:password]@host[:port]/database) instead of <data-dir>/state.sqlite; PGPASSWORD supplies a password the URL lacks."
    ) var stateURL: String?
    @Option(
        name: .customLong("experiments"),
        help:
            "Where the web console finds `sllm simulate --out` runs to plot beside the live figures (default: <data-dir>/experiments)."
    ) var experiments: String?
    @Option(name: .customLong("tls-cert"), help: "Serve HTTPS with this PEM certificate (with --tls-key).")
    var tlsCert: String?
    @Option(name: .customLong("tls-key"), help: "The PEM private key of --tls-cert.") var tlsKey: String?

    /// The flags given, as a settings layer.
    var flagLayer: [String: String] {
        var layer: [String: String] = [:]
        layer["host"] = host
        layer["port"] = port.map(String.init)
        layer["auth"] = auth
        if !apiKeys.isEmpty { layer["api_keys"] = apiKeys.joined(separator: ",") }
        layer["admin_key"] = adminKey
        layer["memory_budget"] = memoryBudget
        layer["dram_cache"] = dramCache
        layer["cache_dir"] = cacheDir.map(absolutePath)
        layer["threads"] = threads.map(String.init)
        if directIO { layer["direct_io"] = "true" }
        layer["default_model"] = defaultModel
        if !preload.isEmpty { layer["preload"] = preload.joined(separator: ",") }
        if !remotes.isEmpty { layer["remote"] = remotes.joined(separator: ",") }
        layer["min_instances"] = minInstances.map(String.init)
        layer["max_instances"] = maxInstances.map(String.init)
        layer["target_concurrency"] = targetConcurrency.map(String.init)
        layer["keep_alive"] = keepAlive
        layer["queue_limit"] = queueLimit.map(String.init)
        layer["max_body"] = maxBody
        layer["shutdown_timeout"] = shutdownTimeout
        layer["idle_timeout"] = idleTimeout
        layer["request_timeout"] = requestTimeout
        layer["dram_fill"] = dramFill.map { $0 ? "true" : "false" }
        layer["serve_while_loading"] = serveWhileLoading.map { $0 ? "true" : "false" }
        layer["max_connections"] = maxConnections.map(String.init)
        layer["dram_scrub_rate"] = dramScrubRate
        layer["dram_scrub_interval"] = dramScrubInterval
        layer["state_url"] = stateURL
        layer["tls_cert"] = tlsCert.map(absolutePath)
        layer["tls_key"] = tlsKey.map(absolutePath)
        layer["experiments"] = experiments.map(absolutePath)
        return layer
    }
}
