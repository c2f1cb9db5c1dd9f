import Checkpoint
import Foundation
public import Hummingbird
import HummingbirdCore
import HummingbirdTLS
public import Logging
import NIOCore
public import Scheduling
public import ServiceLifecycle
import Store
import Synchronization
import UnixSignals

/// Whether the server is still taking requests (new ones get 503 once shutdown began), and
/// whether in-flight streams must end now (the shutdown deadline is near).
final class ServerLifecycle: Sendable {
    private let state = Atomic<Int>(0)
    private let cut = Atomic<Bool>(false)
    /// A standby server (a controller that does not lead) restores nothing until activated.
    private let activation = Mutex<(active: Bool?, waiting: [CheckedContinuation<Bool, Never>])>((false, []))

    init(standby: Bool) {
        if !standby { activation.withLock { $0.active = true } }
    }

    /// Activates a standby server (`active`), or gives up waiting for it (shutdown).
    func activate(_ active: Bool = true) {
        let waiting = activation.withLock { state in
            guard state.active == false else { return [CheckedContinuation<Bool, Never>]() }
            defer { state = (active ? true : nil, []) }
            return state.waiting
        }
        for continuation in waiting { continuation.resume(returning: active) }
    }

    /// Whether the server was activated (false: it shut down first).
    func waitForActivation() async -> Bool {
        await withCheckedContinuation { continuation in
            let settled = activation.withLock { state -> Bool? in
                if let active = state.active, active { return true }
                if state.active == nil { return false }
                state.waiting.append(continuation)
                return nil
            }
            if let settled { continuation.resume(returning: settled) }
        }
    }

    var isReady: Bool { state.load(ordering: .acquiring) == 1 }
    var isShuttingDown: Bool { state.load(ordering: .acquiring) >= 2 }
    /// Streams still running end themselves with an error event (before they are cancelled).
    var mustCutStreams: Bool { cut.load(ordering: .acquiring) }
    func markReady() {
        state.store(1, ordering: .releasing)
        wakeReadyWaiters()
    }

    /// Requests waiting for the deployments to be restored (a server starting, a controller
    /// taking over), each with its continuation.
    private let readyWaiters = Mutex<(next: Int, waiting: [Int: CheckedContinuation<Void, Never>])>((0, [:]))

    private func wakeReadyWaiters() {
        let waiting = readyWaiters.withLock { state in
            defer { state.waiting.removeAll() }
            return Array(state.waiting.values)
        }
        for continuation in waiting { continuation.resume() }
    }

    /// Returns once the server is ready (at once when it is); a request that arrives while the
    /// deployments are being restored waits for them instead of finding none.
    ///
    /// - Throws: `.shuttingDown` once shutdown began, `.unavailable` after `limit`.
    func awaitReady(limit: Duration = .seconds(30)) async throws(ServingError) {
        if isReady { return }
        if !isShuttingDown {
            let key = readyWaiters.withLock { state in
                state.next += 1
                return state.next
            }
            let timeout = Task {
                try? await Task.sleep(for: limit)
                let continuation = readyWaiters.withLock { $0.waiting.removeValue(forKey: key) }
                continuation?.resume()
            }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = readyWaiters.withLock { state -> Bool in
                    if self.isReady || self.isShuttingDown { return true }
                    state.waiting[key] = continuation
                    return false
                }
                if now { continuation.resume() }
            }
            timeout.cancel()
        }
        if isReady { return }
        throw isShuttingDown
            ? ServingError(.shuttingDown, "the server is shutting down")
            : ServingError(.unavailable, "the server is starting (restoring its deployments); retry shortly")
    }

    /// New requests get 503 from now on; streams are told to end shortly before `deadline`
    /// (`shutdown_timeout`), so each can still say why it ends.
    func beginShutdown(deadline: Duration? = nil) {
        state.store(2, ordering: .releasing)
        wakeReadyWaiters()
        guard let deadline else { return }
        // Room for every stream to write its error event and end before connections are closed:
        // a loaded machine can take more than half a second to get there.
        let margin = min(Duration.seconds(2), deadline / 4)
        Task {
            try? await Task.sleep(for: deadline - margin)
            self.cut.store(true, ordering: .releasing)
        }
    }
}

/// `sllm serve`: the OpenAI-compatible API, the admin API and the deployments of one node.
///
/// `run()` serves until SIGINT/SIGTERM (or `shutdown()`), then stops accepting connections,
/// lets in-flight streams finish within the configured deadline, stops every instance and returns.
public final class Server: Sendable {
    public let configuration: ServeConfiguration
    let registry: DeploymentRegistry
    let metrics: ServingMetrics
    let lifecycle: ServerLifecycle
    private let keys: KeyRing
    /// This node's worker, whose background services the server runs (the deployments may reach
    /// it through a test's wrapper); nil for a cluster's controller, whose workers are other
    /// processes.
    private let localWorker: LocalWorker?
    private let logger: Logger
    private let group = Mutex<ServiceGroup?>(nil)
    private let boundPort = Mutex<Int?>(nil)
    private let portWaiters = Mutex<[CheckedContinuation<Int, Never>]>([])
    private let routeTable = Mutex<[RouteEntry]>([])
    private let extensions = Mutex<[any ServerExtension]>([])

    /// Opens the data directory (store, DRAM cache, state database) and serves it with its
    /// in-process worker. Throws on bad settings.
    public convenience init(configuration: ServeConfiguration, logger: Logger = Logger(label: "sllm.serve")) throws {
        // The worker opens (and makes) the data directory the state file lives in.
        let worker = try LocalWorker(configuration: configuration, logger: logger)
        let state = try SQLiteStateStore(path: configuration.dataDirectory + "/state.sqlite")
        try self.init(
            configuration: configuration, worker: worker, state: state, storedKeyHashes: try state.keyHashes(),
            logger: logger, wrapWorker: { $0 })
    }

    /// Serves the data directory's store and DRAM cache with its state in `state` (a cluster's
    /// database) instead of the directory's SQLite file.
    public convenience init(
        configuration: ServeConfiguration, state: any StateStore, logger: Logger = Logger(label: "sllm.serve")
    ) async throws {
        let hashes = try await state.keyHashes()
        try self.init(
            configuration: configuration, worker: try LocalWorker(configuration: configuration, logger: logger),
            state: state, storedKeyHashes: hashes, logger: logger, wrapWorker: { $0 })
    }

    /// Serves the node of `worker`. `wrapWorker` lets tests put a worker of their own between
    /// the deployments and the in-process one (the seam a cluster's network worker takes);
    /// `clock` runs the deployments' keep-alive timers (tests move a manual one).
    convenience init(
        configuration: ServeConfiguration, worker local: LocalWorker, state: any StateStore,
        storedKeyHashes: [String: Bool], logger: Logger, clock: any SchedulerClock = SystemClock(),
        wrapWorker: (LocalWorker) -> any Worker
    ) throws {
        try self.init(
            configuration: configuration, workers: [wrapWorker(local)], local: local, placement: SingleNodePlacement(),
            state: state, storedKeyHashes: storedKeyHashes, tokenizers: local.tokenizers, logger: logger, clock: clock)
    }

    /// A cluster's controller: the APIs and deployments over `workers` (network clients of other
    /// processes; more join through ``join(_:)``), instances placed by `placement`, no store of
    /// its own. With no worker yet, it is ready once the first joins.
    ///
    /// - Parameter standby: restore nothing until ``activate()`` (a controller that does not lead
    ///   yet; meanwhile a ``ServerExtension``'s middleware answers for it).
    public convenience init(
        configuration: ServeConfiguration, workers: [any Worker], placement: any Placement, state: any StateStore,
        standby: Bool = false, placementLog: (any PlacementLog)? = nil,
        logger: Logger = Logger(label: "sllm.controller")
    ) async throws {
        try self.init(
            configuration: configuration, workers: workers, local: nil, placement: placement, state: state,
            storedKeyHashes: try await state.keyHashes(), tokenizers: TokenizerCache(), logger: logger,
            clock: SystemClock(), standby: standby, placementLog: placementLog)
    }

    /// A standby server starts: it restores its deployments (adopting what its workers run) and
    /// becomes ready.
    public func activate() { lifecycle.activate() }

    private init(
        configuration: ServeConfiguration, workers: [any Worker], local: LocalWorker?, placement: any Placement,
        state: any StateStore, storedKeyHashes: [String: Bool], tokenizers: TokenizerCache, logger: Logger,
        clock: any SchedulerClock, standby: Bool = false, placementLog: (any PlacementLog)? = nil
    ) throws {
        lifecycle = ServerLifecycle(standby: standby)
        // Certificate files are read now, so a bad one stops the start with its name.
        _ = try TLSFiles.server(configuration)
        self.configuration = configuration
        self.logger = logger
        localWorker = local
        keys = KeyRing(configuration: configuration, state: state, storedHashes: storedKeyHashes)
        if keys.required && !keys.hasAnyKey {
            throw ServingError(
                .invalidRequest,
                "binding \(configuration.host) (beyond loopback) requires API keys: set --admin-key / SLLM_ADMIN_KEY or --api-keys, or --auth off to serve without keys"
            )
        }
        metrics = ServingMetrics()
        registry = DeploymentRegistry(
            configuration: configuration, workers: workers, placement: placement, state: state, tokenizers: tokenizers,
            clock: clock, metrics: metrics, placementLog: placementLog, logger: logger)
    }

    /// Adds routes and services of a layer above (a cluster's membership); call before `run`.
    public func mount(_ serverExtension: any ServerExtension) {
        extensions.withLock { $0.append(serverExtension) }
    }

    /// A node joined (a worker registered): placement sees it from now on, and the instances it
    /// reports running are adopted by their deployments (or stopped when none takes them).
    public func join(_ worker: any Worker, running: [InstanceInfo] = []) async {
        await registry.join(worker, running: running)
    }

    /// A node was lost (or left, `left`): its instances are dropped and their work placed again
    /// where it can be.
    public func leave(_ node: NodeID, reason: String, left: Bool = false) async {
        await registry.leave(node, reason: reason, left: left)
    }

    /// The instances the deployments have placed on `node`.
    public func instances(on node: NodeID) async -> Set<String> { await registry.instances(on: node) }

    /// A node about to leave: nothing new is placed there, and every instance there with
    /// requests running migrates to other nodes; returns what each migration did.
    public func drain(_ node: NodeID) async -> [MigrationReport] { await registry.drain(node) }

    /// The port the server listens on once running (the configured one, or the one picked for port 0).
    public var port: Int? { boundPort.withLock { $0 } }

    /// The port, once the server listens.
    public func listeningPort() async -> Int {
        await withCheckedContinuation { continuation in
            let bound = portWaiters.withLock { waiters -> Int? in
                if let port = boundPort.withLock({ $0 }) { return port }
                waiters.append(continuation)
                return nil
            }
            if let bound { continuation.resume(returning: bound) }
        }
    }

    /// Serves until a shutdown signal or `shutdown()`.
    ///
    /// - Parameters:
    ///   - signals: whether SIGINT/SIGTERM trigger the graceful shutdown (off in tests).
    ///   - onRunning: called with the bound port once the server accepts connections.
    public func run(signals: Bool = true, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let router = Router()
        router.middlewares.add(AccessLogMiddleware(logger: logger))
        router.middlewares.add(ErrorMiddleware())
        let mounted = extensions.withLock { $0 }
        for serverExtension in mounted { serverExtension.addMiddleware(to: router) }
        router.middlewares.add(
            AuthMiddleware(keys: keys, extensionPrefixes: Set(mounted.map(\.pathPrefix)), lifecycle: lifecycle))
        let routes = register(on: router)
        for serverExtension in mounted { serverExtension.register(on: router) }
        routeTable.withLock { $0 = routes.entries }

        let connections = ConnectionCounter(limit: configuration.maxConnections)
        let requestTimeout = TimeAmount.nanoseconds(Int64(configuration.requestTimeout.seconds * 1e9))
        let http: HTTPServerBuilder = .http1(
            configuration: .init(
                additionalChannelHandlers: [
                    ConnectionLimitsHandler(counter: connections, requestTimeout: requestTimeout)
                ],
                idleTimeout: .nanoseconds(Int64(configuration.idleTimeout.seconds * 1e9))))
        let app = Application(
            router: router,
            server: try TLSFiles.server(configuration).map { try .tls(http, tlsConfiguration: $0) } ?? http,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "sllm"),
            onServerRunning: { channel in
                let bound = channel.localAddress?.port ?? 0
                // The listener was opened without close-on-exec: no child may inherit it.
                FileSystem.markDescriptorsCloseOnExec()
                self.boundPort.withLock { $0 = bound }
                for waiter in self.portWaiters.withLock({ waiters in
                    defer { waiters.removeAll() }
                    return waiters
                }) { waiter.resume(returning: bound) }
                await onRunning(bound)
            },
            logger: logger)
        let nodeService = NodeService(
            registry: registry, lifecycle: lifecycle, keys: keys, stopInstances: localWorker != nil, logger: logger)
        let gate = ShutdownGate(lifecycle: lifecycle, deadline: configuration.shutdownTimeout)
        // Services shut down in reverse order: the gate first (new requests get 503), then the
        // HTTP server (stops accepting, waits for in-flight streams), then the node (instances).
        var groupConfiguration = ServiceGroupConfiguration(
            services: [
                .init(service: nodeService),
                .init(service: app),
                .init(service: gate, successTerminationBehavior: .ignore),
            ]
                + ((localWorker?.backgroundServices(configuration: configuration, metrics: metrics, logger: logger)
                ?? [])
                + mounted.flatMap(\.services))
                .map { .init(service: $0, successTerminationBehavior: .ignore) },
            gracefulShutdownSignals: signals ? [.sigterm, .sigint] : [],
            cancellationSignals: [],
            logger: logger)
        // In-flight streams get this long after a shutdown signal; then they are cancelled.
        groupConfiguration.maximumGracefulShutdownDuration = configuration.shutdownTimeout
        let serviceGroup = ServiceGroup(configuration: groupConfiguration)
        group.withLock { $0 = serviceGroup }
        try await serviceGroup.run()
    }

    /// Begins the graceful shutdown, as SIGTERM does.
    public func shutdown() async {
        let serviceGroup = group.withLock { $0 }
        await serviceGroup?.triggerGracefulShutdown()
    }

    /// Every route the running server answers, with the access it needs.
    var routeEntries: [RouteEntry] { routeTable.withLock { $0 } }

    /// Registers every route with the access it needs (`Routes.add`).
    private func register(on router: Router<BasicRequestContext>) -> Routes {
        let routes = Routes(router: router, keys: keys, lifecycle: lifecycle)
        let openAI = OpenAIRoutes(
            registry: registry, metrics: metrics, lifecycle: lifecycle, maxBodyBytes: configuration.maxBodyBytes,
            logger: logger)
        routes.add(.post, "v1/chat/completions", .user) { request, context in
            try await openAI.handle(.chat, request, context: context)
        }
        routes.add(.post, "v1/completions", .user) { request, context in
            try await openAI.handle(.text, request, context: context)
        }
        routes.add(.get, "v1/models", .user) { _, _ in try await self.models() }
        routes.add(.get, "v1/models/{id}", .user) { _, context in
            try await self.model(try context.parameters.require("id"))
        }
        // A browser gets the console; other clients the server's summary.
        routes.add(.get, "", .open) { request, _ in
            if let page = ConsoleRoutes.page(for: request, keysRequired: self.keys.required) { return page }
            return try encode(
                ServerSummary(
                    status: "sllm is running", version: Self.version,
                    links: [
                        "openai": "/v1", "models": "/v1/models", "health": "/health", "ready": "/ready",
                        "metrics": "/metrics", "admin": "/admin/deployments", "events": "/admin/events",
                    ]))
        }
        routes.add(.get, "health", .open) { _, _ in try encode(["status": "ok"]) }
        routes.add(.get, "ready", .open) { _, _ in
            guard self.lifecycle.isReady else {
                throw ServingError(
                    self.lifecycle.isShuttingDown ? .shuttingDown : .unavailable,
                    self.lifecycle.isShuttingDown ? "the server is shutting down" : "the server is starting")
            }
            return try encode(["status": "ready"])
        }
        routes.add(.get, "metrics", .open) { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4"
            return Response(
                status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: self.metrics.render())))
        }
        AdminRoutes(registry: registry, keys: keys, maxBodyBytes: configuration.maxBodyBytes).register(on: routes)
        ConsoleRoutes(
            feed: ConsoleFeed(registry: registry, activity: metrics.activity, lifecycle: lifecycle),
            lifecycle: lifecycle,
            keys: keys,
            experiments: SimulationRuns(directory: configuration.experimentsPath)
        ).register(on: routes)
        return routes
    }

    /// sllm's version, as `sllm --version` prints it and `GET /` reports it.
    public static let version = "0.1.0"

    // MARK: - /v1/models

    // The OpenAI API writes its JSON one way, with `JSONWriter`, as its completions do.

    private func models() async throws -> Response {
        let reports = await registry.statuses()
        var json = JSONWriter()
        json.string("object", "list")
        json.raw("data", JSONWriter.array(reports) { modelObject($0) })
        return jsonResponse(json.finished)
    }

    private func model(_ id: String) async throws -> Response {
        guard let report = await registry.statuses().first(where: { $0.status.spec.name == id }) else {
            throw ServingError(.notFound, "the model `\(id)` does not exist", param: "model")
        }
        return jsonResponse(modelObject(report))
    }

    private func modelObject(_ report: DeploymentReport) -> String {
        var json = JSONWriter()
        json.string("id", report.status.spec.name)
        json.string("object", "model")
        json.int("created", Int(report.status.spec.createdAt.timeIntervalSince1970))
        json.string("owned_by", "sllm")
        json.string("state", report.state)
        json.int("context_length", report.status.contextLength)
        json.int("instances", report.status.instances.count)
        return json.finished
    }

    private func jsonResponse(_ text: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

/// Routes and services a layer above the server mounts on it (a cluster controller's worker
/// membership). Requests under `pathPrefix` skip API keys: the extension authenticates them
/// itself (the cluster token), with middleware on its own route group.
public protocol ServerExtension: Sendable {
    /// The first path component the extension's routes share (`cluster`).
    var pathPrefix: String { get }
    func register(on router: Router<BasicRequestContext>)
    /// Run beside the server, stopped with it.
    var services: [any Service] { get }
    /// Adds middleware that sees every request after the error middleware and before API keys
    /// are checked (a follower controller forwards requests to the leader from here).
    func addMiddleware(to router: Router<BasicRequestContext>)
}

extension ServerExtension {
    public func addMiddleware(to router: Router<BasicRequestContext>) {}
}

/// `GET /`: what is running and where to go.
private struct ServerSummary: Encodable {
    var status: String
    var version: String
    var links: [String: String]
}

/// Restores the deployments at start; stops every instance at shutdown (`sllm serve`), or
/// leaves them to the workers (a controller: the next one adopts them).
private struct NodeService: Service {
    let registry: DeploymentRegistry
    let lifecycle: ServerLifecycle
    let keys: KeyRing
    let stopInstances: Bool
    let logger: Logger

    func run() async throws {
        let activated = await withGracefulShutdownHandler {
            await lifecycle.waitForActivation()
        } onGracefulShutdown: {
            lifecycle.activate(false)
        }
        guard activated else { return }
        do {
            // A controller waits here for its first worker: a shutdown meanwhile ends the wait.
            try await cancelWhenGracefulShutdown {
                try await keys.refresh()
                try await registry.restore()
            }
        } catch {
            // Stopped while restoring (the state store may report the cancellation as its own error).
            guard error is CancellationError || lifecycle.isShuttingDown else { throw error }
            if stopInstances { await registry.stopAll() } else { await registry.detach() }
            return
        }
        lifecycle.markReady()
        logger.info("ready")
        try? await gracefulShutdown()
        if stopInstances { await registry.stopAll() } else { await registry.detach() }
    }
}

/// The first to hear of a shutdown: from then on new requests get 503.
private struct ShutdownGate: Service {
    let lifecycle: ServerLifecycle
    let deadline: Duration

    func run() async throws {
        try? await gracefulShutdown()
        lifecycle.beginShutdown(deadline: deadline)
    }
}
