import ArgumentParser
import AsyncHTTPClient
import Checkpoint
import Cluster
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOSSL
import Scheduling
import ServiceLifecycle
import Serving
import Store
import UnixSignals

/// The cluster token from `--token-file` or `SLLM_CLUSTER_TOKEN` (a Kubernetes Secret gives either).
struct ClusterTokenOptions: ParsableArguments {
    @Option(
        name: .customLong("token-file"),
        help: "File holding the cluster token that controllers and workers share (else $SLLM_CLUSTER_TOKEN).")
    var tokenFile: String?
    @Option(
        name: .customLong("tls-ca"),
        help:
            "PEM certificates of the authority that signed the cluster's TLS certificates, trusted beside the system's (else $SLLM_CLUSTER_CA)."
    )
    var tlsCA: String?

    /// The HTTP client settings for reaching workers and controllers (`https` ones trusted by `--tls-ca`).
    func clientConfiguration() throws -> HTTPClient.Configuration {
        let authorities =
            tlsCA ?? ProcessInfo.processInfo.environment["SLLM_CLUSTER_CA"].flatMap { $0.isEmpty ? nil : $0 }
        do {
            return RemoteWorker.clientConfiguration(
                tls: try TLSFiles.client(authorities: authorities.map(absolutePath)))
        } catch {
            throw CommandFailure(error.message)
        }
    }

    func token() throws -> String {
        if let tokenFile {
            guard let data = FileManager.default.contents(atPath: tokenFile) else {
                throw CommandFailure("cannot read the cluster token file \(tokenFile)")
            }
            return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        if let token = ProcessInfo.processInfo.environment["SLLM_CLUSTER_TOKEN"], !token.isEmpty { return token }
        throw CommandFailure(
            "the cluster needs a shared token: --token-file FILE or SLLM_CLUSTER_TOKEN (at least 16 bytes, e.g. `openssl rand -hex 32`)"
        )
    }
}

struct Controller: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Serve the OpenAI and admin APIs over the workers of a cluster, placing each cold start where it starts fastest.",
        discussion: """
            The same APIs, deployments and settings as `sllm serve`, with instances on the cluster's workers, placed by the locality-aware scheduler. Workers join by themselves (`sllm worker --controller URL`) and stay members while they renew their lease (every --worker-lease / 3); one silent for --worker-lease is lost, its instances dropped and their work placed again. --worker names a worker to use without a lease. Keep the state in PostgreSQL (--state-url) to share it between controllers.

            Example:
              SLLM_CLUSTER_TOKEN=$(cat token) sllm controller --host 10.0.0.1 --auth on \\
                --state-url postgres://sllm@db/sllm
              SLLM_CLUSTER_TOKEN=$(cat token) sllm worker --host 10.0.0.2 --controller http://10.0.0.1:8343
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var options: ServeOptions
    @OptionGroup var cluster: ClusterTokenOptions
    @Option(
        name: .customLong("worker"),
        help:
            "A worker's URL, http://HOST:PORT, used without a lease (repeatable; workers with --controller join by themselves)."
    )
    var workers: [String] = []
    @Option(
        name: .customLong("worker-lease"),
        help: "How long a worker stays a member without renewing its lease (it renews 3 times in it).")
    var workerLease = "3s"
    @Option(
        help: ArgumentHelp(
            "How cold starts are placed: \(PlacementPolicy.allCases.map(\.rawValue).joined(separator: ", ")) (the others are baselines to compare with)."
        ))
    var placement = PlacementPolicy.locality.rawValue
    @Flag(
        name: .customLong("peer-fetch"), inversion: .prefixedNo,
        help:
            "Nodes lacking a checkpoint fetch it from the nodes holding it (default); with --no-peer-fetch, from their --remote stores."
    )
    var peerFetch: Bool?
    @Flag(
        name: .customLong("migration"), inversion: .prefixedNo,
        help:
            "A cold start may first live-migrate a busy instance off the node holding its checkpoint in the fastest tier, when that starts it sooner than loading elsewhere (default off)."
    )
    var migration: Bool?
    @Flag(
        name: .customLong("rebalance"), inversion: .prefixedNo,
        help:
            "When a deployment's instances on different nodes carry uneven loads (after a scale-up, or as jobs end), live-migrate running jobs from the busiest to the least busy (default off)."
    )
    var rebalance: Bool?
    @Option(
        help:
            "The URL other controllers and workers reach this one at (default: http://HOST:PORT as bound; needed with --host 0.0.0.0 when controllers share --state-url)."
    )
    var advertise: String?

    func validate() throws {
        guard let lease = parseDuration(workerLease), lease >= .milliseconds(300), lease <= .seconds(300) else {
            throw ValidationError("--worker-lease \(workerLease) is not a duration from 300ms to 5m (e.g. 3s)")
        }
        // The node's settings belong to its worker: a controller holds no store, cache or instance.
        let nodeOnly: [(String, Bool)] = [
            ("--memory-budget", options.memoryBudget != nil), ("--dram-cache", options.dramCache != nil),
            ("--cache-dir", options.cacheDir != nil), ("--threads", options.threads != nil),
            ("--direct-io", options.directIO), ("--dram-scrub-rate", options.dramScrubRate != nil),
            ("--dram-scrub-interval", options.dramScrubInterval != nil), ("--dram-fill", options.dramFill != nil),
            ("--serve-while-loading", options.serveWhileLoading != nil),
        ]
        if let (flag, _) = nodeOnly.first(where: { $0.1 }) {
            throw ValidationError(
                "\(flag) is a node's setting: give it to `sllm worker` (a controller runs no instance)")
        }
        if PlacementPolicy(rawValue: placement) == nil {
            throw ValidationError(
                "--placement \(placement) is not one of \(PlacementPolicy.allCases.map(\.rawValue).joined(separator: ", "))"
            )
        }
        if let advertise, LeaseRequest.checkedURL(advertise) == nil {
            throw ValidationError("--advertise \(advertise) is not this controller's URL (http://HOST:PORT)")
        }
        for worker in workers {
            guard let url = URL(string: worker), url.scheme == "http" || url.scheme == "https", url.host != nil,
                url.path.isEmpty || url.path == "/", url.query == nil
            else {
                throw ValidationError("--worker \(worker) is not a worker URL (http://HOST:PORT)")
            }
        }
    }

    func run() async throws {
        LoggingBootstrap.once(level: global.verbose ? .debug : global.quiet ? .error : .info)
        var flags = options.flagLayer
        flags["peer_fetch"] = peerFetch.map { $0 ? "true" : "false" }
        flags["migration"] = migration.map { $0 ? "true" : "false" }
        flags["rebalance"] = rebalance.map { $0 ? "true" : "false" }
        var configuration = try Serve.layered(global: global, config: options.config, flags: flags)
        // A controller holds no models: nothing is deployed by itself unless asked.
        if options.defaultModel == nil && ProcessInfo.processInfo.environment["SLLM_DEFAULT_MODEL"] == nil {
            configuration.defaultModel = ""
        }
        let token = try cluster.token()
        let logger = Logger(label: "sllm.controller")
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: try cluster.clientConfiguration())
        do {
            try await run(configuration: configuration, token: token, client: client, logger: logger)
        } catch {
            try? await client.shutdown()
            throw error
        }
        try? await client.shutdown()
    }

    private func run(configuration: ServeConfiguration, token: String, client: HTTPClient, logger: Logger) async throws
    {
        var connected: [any Worker] = []
        for address in workers {
            let url = URL(string: address.hasSuffix("/") ? String(address.dropLast()) : address)!
            do {
                connected.append(try await RemoteWorker.connect(url: url, token: token, client: client, logger: logger))
            } catch {
                throw CommandFailure("worker \(address): \(error.message)")
            }
        }
        let workers = connected
        let lease = parseDuration(workerLease)!
        let what =
            workers.isEmpty
            ? "controller; workers join with `sllm worker --controller URL`"
            : "controller of \(workers.map(\.node.rawValue).joined(separator: ", ")); more join with --controller"
        var controller: ClusterController?
        let (advertise, host) = (advertise, configuration.host)
        let bound = BoundAddress()
        try await Serve.serve(configuration, quiet: global.quiet, what: what) { database in
            let state: any StateStore =
                try database ?? SQLiteStateStore(path: try Self.stateFile(configuration.dataDirectory))
            let made = try await ClusterController(
                configuration: configuration, workers: workers, state: state, database: database, token: token,
                client: client, workerLease: lease, policy: PlacementPolicy(rawValue: placement)!,
                advertise: {
                    if let advertise { return advertise }
                    let port = await bound.port()
                    return
                        "\(configuration.tlsCertificate == nil ? "http" : "https")://\(host.contains(":") ? "[\(host)]" : host):\(port)"
                }, logger: logger)
            controller = made
            Task { await bound.set(await made.server.listeningPort()) }
            return made.server
        }
        await controller?.leaseLog?.flush()
        await controller?.placementLog?.close()
        if let reason = controller?.leadership?.deposedReason {
            throw CommandFailure("stopped: this controller no longer leads (\(reason)); start it again to follow")
        }
    }

    /// The SQLite file of a controller without `--state-url` (its data directory made if missing).
    static func stateFile(_ directory: String) throws -> String {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory + "/state.sqlite"
    }
}

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run this node for a cluster's controllers: its store, DRAM cache and instances, over HTTP.",
        discussion: """
            Serves the worker protocol on --host/--port behind the cluster token, and joins the controllers given by --controller (the first that answers), renewing its lease while it runs; it leaves when stopped. The node's settings (data directory, memory budget, DRAM cache, threads) are those of `sllm serve`: the flags below, SLLM_* variables, the config file.

            Example: SLLM_CLUSTER_TOKEN=$(cat token) sllm worker --host 10.0.0.2 --controller http://10.0.0.1:8343
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var cluster: ClusterTokenOptions
    @Option(help: "YAML config file (the keys of `sllm serve`).") var config: String?
    @Option(help: "Address to bind.") var host = "127.0.0.1"
    @Option(help: "Port (0 picks a free one).") var port = 8344
    @Option(help: "This node's name in the cluster (default: the host name).") var node: String?
    @Option(
        name: .customLong("controller"),
        help: "A controller's URL, http://HOST:PORT, to join (repeatable: every controller of the cluster).")
    var controllers: [String] = []
    @Option(
        help:
            "The URL controllers reach this worker at (default: http://HOST:PORT as bound; needed when --host is 0.0.0.0)."
    )
    var advertise: String?
    @Option(
        name: [.customShort("t"), .customLong("threads")], help: "Compute threads per instance (default: all cores).")
    var threads: Int?
    @Option(name: .customLong("memory-budget"), help: "Memory for instances (default: half the RAM).")
    var memoryBudget: String?
    @Option(name: .customLong("dram-cache"), help: "DRAM checkpoint cache budget.") var dramCache: String?
    @Option(name: .customLong("cache-dir"), help: "Where the DRAM cache lives.") var cacheDir: String?
    @Flag(name: .customLong("dram-fill"), inversion: .prefixedNo, help: "Fill the DRAM pool in the background.")
    var dramFill: Bool?
    @Flag(
        name: .customLong("keep-fetched"), inversion: .prefixedNo,
        help:
            "Keep the checkpoints this node fetched (default); with --no-keep-fetched, drop each when its last instance stops."
    )
    var keepFetched: Bool?
    @Option(
        name: .customLong("remote"),
        help:
            "Base URL of a remote store (BASE/NAME/index), fetched from when no peer holds a model (repeatable).")
    var remotes: [String] = []
    @Option(name: .customLong("tls-cert"), help: "Serve the worker protocol over HTTPS with this PEM certificate.")
    var tlsCert: String?
    @Option(name: .customLong("tls-key"), help: "The PEM private key of --tls-cert.") var tlsKey: String?

    func validate() throws {
        for controller in controllers where LeaseRequest.checkedURL(controller) == nil {
            throw ValidationError("--controller \(controller) is not a controller URL (http://HOST:PORT)")
        }
        if let advertise, LeaseRequest.checkedURL(advertise) == nil {
            throw ValidationError("--advertise \(advertise) is not this worker's URL (http://HOST:PORT)")
        }
        if advertise == nil, !controllers.isEmpty, host == "0.0.0.0" || host == "::" {
            throw ValidationError(
                "--host \(host) is not an address controllers can reach: give --advertise http://ADDRESS:PORT")
        }
    }

    func run() async throws {
        LoggingBootstrap.once(level: global.verbose ? .debug : global.quiet ? .error : .info)
        var flags: [String: String] = [:]
        flags["threads"] = threads.map(String.init)
        flags["memory_budget"] = memoryBudget
        flags["dram_cache"] = dramCache
        flags["cache_dir"] = cacheDir.map(absolutePath)
        flags["dram_fill"] = dramFill.map { $0 ? "true" : "false" }
        flags["keep_fetched"] = keepFetched.map { $0 ? "true" : "false" }
        if !remotes.isEmpty { flags["remote"] = remotes.joined(separator: ",") }
        flags["tls_cert"] = tlsCert.map(absolutePath)
        flags["tls_key"] = tlsKey.map(absolutePath)
        let configuration = try Serve.layered(global: global, config: config, flags: flags)
        let token = try cluster.token()
        let logger = Logger(label: "sllm.worker")
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: try cluster.clientConfiguration())
        let local: LocalWorker
        let routes: WorkerRoutes
        let server: HTTPServerBuilder
        do {
            local = try LocalWorker(
                configuration: configuration, node: node.map(NodeID.init),
                peers: { peer in
                    CheckpointSource(
                        base: peer.url, label: peer.node.rawValue, isPeer: true,
                        headers: [("Authorization", "Bearer \(token)")], client: client, relays: peer.relays)
                }, logger: logger)
            routes = try WorkerRoutes(worker: local, token: token, checkpoints: local.loader, logger: logger)
            server = try TLSFiles.server(configuration).map { try .tls(.http1(), tlsConfiguration: $0) } ?? .http1()
        } catch {
            throw CommandFailure(ServingError(error).message)
        }
        let scheme = configuration.tlsCertificate == nil ? "http" : "https"
        FileSystem.installCrashSocketCloser()
        let quiet = global.quiet
        let host = host
        let bound = BoundAddress()
        let app = Application(
            router: routes.router(), server: server,
            configuration: .init(address: .hostname(host, port: port), serverName: "sllm-worker"),
            onServerRunning: { channel in
                FileSystem.markDescriptorsCloseOnExec()
                await bound.set(channel.localAddress?.port ?? 0)
                if !quiet {
                    FileHandle.standardError.write(
                        Data(
                            "sllm worker \(local.node) serving on \(scheme)://\(host):\(channel.localAddress?.port ?? 0) (worker protocol \(WorkerWire.version); data in \(configuration.dataDirectory))\n"
                                .utf8))
                }
            },
            logger: logger)
        var services: [any Service] = local.backgroundServices(configuration: configuration, logger: logger)
        if !controllers.isEmpty {
            let advertise = advertise
            services.append(
                LeaseRenewer(
                    controllers: controllers.compactMap(LeaseRequest.checkedURL), worker: local,
                    url: {
                        if let advertise { return advertise }
                        let port = await bound.port()
                        return "\(scheme)://\(host.contains(":") ? "[\(host)]" : host):\(port)"
                    },
                    token: token, client: client, logger: logger))
        }
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: app)]
                    + services.map { .init(service: $0, successTerminationBehavior: .ignore) },
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do { try await group.run() } catch {
            try? await client.shutdown()
            throw CommandFailure("worker: \(error)")
        }
        try? await client.shutdown()
    }
}

/// The port a server bound, for those that must wait for it (a worker's lease names its URL).
actor BoundAddress {
    private var bound: Int?
    private var waiting: [CheckedContinuation<Int, Never>] = []

    func set(_ port: Int) {
        bound = port
        for continuation in waiting { continuation.resume(returning: port) }
        waiting.removeAll()
    }

    func port() async -> Int {
        if let bound { return bound }
        return await withCheckedContinuation { waiting.append($0) }
    }
}
