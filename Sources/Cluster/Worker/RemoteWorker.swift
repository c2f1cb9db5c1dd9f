public import AsyncHTTPClient
public import Engine
public import Foundation
public import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
public import NIOSSL
public import Serving
public import Store
import Synchronization

/// A worker in another process, reached over HTTP (``WorkerWire``): what a controller's
/// deployments use in place of the in-process `LocalWorker`, behind the same ``Worker`` protocol.
///
/// Errors come back as the worker's `ServingError`s (the same kind, message and field), so the
/// controller answers a request as `sllm serve` would. A worker that cannot be reached fails the
/// call with `.workerLost` naming it; a stream the worker stops sending (it died, the link broke)
/// ends with that error, never as a normal finish.
public final class RemoteWorker: Worker {
    public let node: NodeID
    public let url: URL
    private let token: String
    private let client: HTTPClient
    private let logger: Logger
    /// The last inventory the worker sent (what `inventory()` answers, marked unreachable,
    /// while it cannot be reached).
    private let lastInventory: Mutex<NodeInventory>
    /// Set when a call could not reach the worker: until then, calls fail at once instead of
    /// each waiting out the connect timeout (placement, stopping the lost instance and the
    /// retried request all ask within that time).
    private let lost = Mutex<(until: ContinuousClock.Instant, reason: String)?>(nil)
    static let lostFor = Duration.seconds(2)
    /// Set once the controller has given the node up (its lease ran out): every call fails
    /// with it, now and from then on.
    private let retired = Mutex<String?>(nil)
    /// Calls in flight, cancelled when the worker is retired (a partitioned host would
    /// otherwise hold them until their timeouts).
    private let inFlight = Mutex<(next: Int, tasks: [Int: @Sendable () -> Void])>((0, [:]))

    /// How long a call that does not stream may take: an inventory is quick (a placement waits
    /// on it, and a vanished host must not hold it), a prefetch reads a whole checkpoint.
    static func timeout(of call: WorkerCall) -> TimeAmount {
        switch call {
        case .inventory: .seconds(5)
        case .modelFacts, .resolve, .stopInstance, .cancel, .snapshot, .detach: .seconds(60)
        case .prefetch, .evict, .verifyCache, .pull, .startInstance, .run, .warm: .minutes(10)
        }
    }

    /// The HTTP client settings a controller's workers share: a host that does not accept a
    /// connection within 1 s is unreachable (the client retries a refused connection within it).
    public static var clientConfiguration: HTTPClient.Configuration { clientConfiguration(tls: nil) }

    /// The same, trusting what `tls` says for `https` workers and controllers (``TLSFiles/client(authorities:)``).
    public static func clientConfiguration(tls: TLSConfiguration?) -> HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .seconds(1)
        if let tls { configuration.tlsConfiguration = tls }
        return configuration
    }
    /// Streams run as long as their work: a generation, a pull of many gigabytes.
    static let streamTimeout = TimeAmount.hours(24)
    /// How long `connect` waits for the worker's first answer.
    static let connectTimeout = TimeAmount.seconds(30)

    /// Connects to the worker at `url` (its inventory names the node) and checks that it speaks
    /// this protocol version and accepts `token`.
    public static func connect(url: URL, token: String, client: HTTPClient, logger: Logger) async throws(ServingError)
        -> RemoteWorker
    {
        let probe = RemoteWorker(
            node: NodeID("?"), url: url, token: token, client: client, logger: logger,
            inventory: NodeInventory(
                node: NodeID("?"), cores: 0, threadsPerInstance: 0, memoryBudgetBytes: 0, reservedBytes: 0,
                dramBudgetBytes: 0, tiers: [], instances: [], runningJobs: 0))
        let inventory: NodeInventory
        do {
            // Once, when the controller starts: a worker still starting (or a loaded host) gets
            // longer than a placement's inventory call.
            inventory = try await probe.call(.inventory, as: NodeInventory.self, timeout: connectTimeout)
        } catch {
            throw ServingError(error)
        }
        return RemoteWorker(
            node: inventory.node, url: url, token: token, client: client, logger: logger, inventory: inventory)
    }

    /// A worker that joined through its lease (``Membership``): its renewal named the node,
    /// its URL and its inventory.
    public static func registered(
        node: NodeID, url: URL, token: String, client: HTTPClient, logger: Logger, inventory: NodeInventory
    ) -> RemoteWorker {
        RemoteWorker(node: node, url: url, token: token, client: client, logger: logger, inventory: inventory)
    }

    /// The inventory a renewal carried: what `inventory()` answers while the worker cannot be reached.
    public func report(_ inventory: NodeInventory) {
        lastInventory.withLock { $0 = inventory }
    }

    /// The node was given up: calls in flight end with `.workerLost` and `reason`, as do all later ones.
    public func retire(_ reason: String) {
        retired.withLock { $0 = reason }
        let cancels = inFlight.withLock { state in
            defer { state.tasks.removeAll() }
            return Array(state.tasks.values)
        }
        for cancel in cancels { cancel() }
    }

    /// Runs `body` as a task that `retire` cancels.
    private func tracked<Value: Sendable>(_ body: @escaping @Sendable () async throws -> Value) async throws -> Value {
        let task = Task { try await body() }
        let key = track { task.cancel() }
        defer { untrack(key) }
        return try await withTaskCancellationHandler {
            try await task.value
        } onCancel: {
            task.cancel()
        }
    }

    /// Registers how to cancel a call in flight (at once when the worker is already retired).
    private func track(_ cancel: @escaping @Sendable () -> Void) -> Int {
        let key = inFlight.withLock { state in
            state.next += 1
            state.tasks[state.next] = cancel
            return state.next
        }
        if retired.withLock({ $0 }) != nil { cancel() }
        return key
    }

    private func untrack(_ key: Int) { inFlight.withLock { _ = $0.tasks.removeValue(forKey: key) } }

    /// The error of every call once the node was given up.
    private var retirement: ServingError? {
        retired.withLock { $0 }.map { ServingError(.workerLost, "worker \(node) (\(url.absoluteString)): \($0)") }
    }

    private init(node: NodeID, url: URL, token: String, client: HTTPClient, logger: Logger, inventory: NodeInventory) {
        self.node = node
        self.url = url
        self.token = token
        self.client = client
        self.logger = logger
        lastInventory = Mutex(inventory)
    }

    // MARK: - Worker

    public var checkpointURL: URL? { url.appendingPathComponent(String(CheckpointRoutes.path.dropFirst())) }

    public func inventory() async -> NodeInventory {
        do {
            let inventory = try await call(.inventory, as: NodeInventory.self)
            lastInventory.withLock { $0 = inventory }
            return inventory
        } catch {
            logger.warning(
                "worker did not answer its inventory; it is passed over until it answers",
                metadata: ["node": "\(node)", "error": "\(error)"])
            var last = lastInventory.withLock { $0 }
            last.unreachable = ServingError(error).message
            return last
        }
    }

    public func modelFacts(_ model: ModelName) async throws -> ModelFacts {
        try await call(.modelFacts(model), as: ModelFacts.self)
    }

    public func resolve(_ source: String) async throws -> SourceResolution {
        try await call(.resolve(source), as: SourceResolution.self)
    }

    public func pull(_ source: String, as name: ModelName) -> AsyncThrowingStream<PullEvent, any Error> {
        stream(.pull(source: source, name: name))
    }

    public func prefetch(_ model: ModelName, into tier: Tier) async throws -> LoadReport {
        try await call(.prefetch(model, tier), as: LoadReport.self)
    }

    public func evict(_ model: ModelName, from tier: Tier) async throws -> Int {
        try await call(.evict(model, tier), as: Int.self)
    }

    public func verifyCache(_ model: ModelName?) async throws -> [DRAMVerification] {
        try await call(.verifyCache(model), as: [DRAMVerification].self)
    }

    public func startInstance(_ spec: InstanceSpec) -> AsyncThrowingStream<StartEvent, any Error> {
        stream(.startInstance(spec))
    }

    public func stopInstance(_ id: String) async {
        // A node given up keeps nothing of this controller's: the returning worker is told then.
        if retirement != nil { return }
        do { _ = try await call(.stopInstance(id), as: WireDone.self) } catch {
            logger.warning(
                "cannot stop an instance", metadata: ["node": "\(node)", "instance": "\(id)", "error": "\(error)"])
        }
    }

    public func run(_ job: GenerationJob, on instance: String) -> AsyncThrowingStream<GenerationEvent, any Error> {
        stream(.run(job, instance: instance))
    }

    public func cancel(job: String, on instance: String) async {
        do { _ = try await call(.cancel(job: job, instance: instance), as: WireDone.self) } catch {
            logger.warning("cannot cancel a job", metadata: ["node": "\(node)", "job": "\(job)", "error": "\(error)"])
        }
    }

    public func snapshot(job: String, on instance: String) async -> SequenceSnapshot? {
        do { return try await call(.snapshot(job: job, instance: instance), as: SequenceSnapshot?.self) } catch {
            logger.warning(
                "cannot snapshot a job", metadata: ["node": "\(node)", "job": "\(job)", "error": "\(error)"])
            return nil
        }
    }

    public func warm(_ tokens: [Int], on instance: String) async throws -> WarmReport {
        try await call(.warm(tokens, instance: instance), as: WarmReport.self)
    }

    public func detach(job: String, on instance: String) async -> Bool {
        do { return try await call(.detach(job: job, instance: instance), as: Bool.self) } catch {
            logger.warning("cannot detach a job", metadata: ["node": "\(node)", "job": "\(job)", "error": "\(error)"])
            return false
        }
    }

    // MARK: - Calls

    /// The epoch of this controller's lead, sent with each call (nil: no leadership, none sent).
    private let leaderEpoch = Mutex<(@Sendable () -> Int64?)?>(nil)

    /// Sends `epoch()` with every call from now on (``WorkerWire/epochHeader``): a worker that
    /// has seen a newer leader's calls refuses this controller's once another took over.
    public func fence(by epoch: @escaping @Sendable () -> Int64?) { leaderEpoch.withLock { $0 = epoch } }

    private func request(_ call: WorkerCall) throws -> HTTPClientRequest {
        var request = try WorkerWire.request(url.absoluteString + WorkerWire.callPath, token: token, body: call)
        if let epoch = leaderEpoch.withLock({ $0 })?() {
            request.headers.add(name: WorkerWire.epochHeader, value: String(epoch))
        }
        return request
    }

    /// Sends `call` and reads its whole answer.
    func call<Value: Codable & Sendable>(_ call: WorkerCall, as type: Value.Type, timeout: TimeAmount? = nil)
        async throws -> Value
    {
        do {
            return try await tracked { try await self.send(call, as: type, timeout: timeout ?? Self.timeout(of: call)) }
        } catch {
            throw retirement ?? error
        }
    }

    private func send<Value: Codable & Sendable>(_ call: WorkerCall, as: Value.Type, timeout: TimeAmount)
        async throws -> Value
    {
        let response: HTTPClientResponse
        response = try await execute(call, timeout: timeout)
        try checkVersion(response)
        let body: ByteBuffer
        do { body = try await response.body.collect(upTo: 1 << 30) } catch { throw unreachable(call, error) }
        let reply: WireReply<Value>
        do { reply = try JSONDecoder.wire.decode(WireReply<Value>.self, from: Data(buffer: body)) } catch {
            throw ServingError(
                .unavailable,
                "worker \(node) (\(url.absoluteString)) answered \(call.name) with HTTP \(response.status.code) and no worker reply"
            )
        }
        return try reply.get()
    }

    /// Sends `call` and yields its events as they arrive. Ending the iteration cancels the
    /// request, and the worker's work with it.
    func stream<Event: Codable & Sendable>(_ call: WorkerCall) -> AsyncThrowingStream<Event, any Error> {
        let (events, continuation) = AsyncThrowingStream.makeStream(of: Event.self)
        let task = Task {
            do {
                let response = try await execute(call, timeout: Self.streamTimeout)
                try checkVersion(response)
                guard response.status == .ok else {
                    let body = try? await response.body.collect(upTo: 1 << 20)
                    if let body,
                        let reply = try? JSONDecoder.wire.decode(WireReply<WireDone>.self, from: Data(buffer: body)),
                        case .error(let error) = reply
                    {
                        throw error.serving
                    }
                    throw ServingError(
                        .unavailable, "worker \(node) answered \(call.name) with HTTP \(response.status.code)")
                }
                var pending = ByteBuffer()
                var ended = false
                do {
                    for try await var chunk in response.body {
                        pending.writeBuffer(&chunk)
                        while let newline = pending.readableBytesView.firstIndex(of: 0x0A) {
                            let length = newline - pending.readerIndex
                            let line = pending.readSlice(length: length)!
                            pending.moveReaderIndex(forwardBy: 1)
                            switch try JSONDecoder.wire.decode(WireLine<Event>.self, from: Data(buffer: line)) {
                            case .event(let event): continuation.yield(event)
                            case .error(let error): throw error.serving
                            case .end: ended = true
                            }
                        }
                        pending.discardReadBytes()
                        guard pending.readableBytes <= WorkerWire.maxCallBytes else {
                            throw ServingError(.unavailable, "worker \(node) sent a line over 32 MiB")
                        }
                    }
                } catch let error as ServingError {
                    throw error
                } catch let error as CancellationError {
                    throw error
                } catch let error as DecodingError {
                    throw ServingError(
                        .unavailable, "worker \(node) sent a line that is not a \(call.name) event: \(error)")
                } catch {
                    throw unreachable(call, error)
                }
                guard ended else {
                    throw ServingError(
                        .workerLost,
                        "worker \(node) (\(url.absoluteString)) stopped sending \(call.name) before its end")
                }
                continuation.finish()
            } catch {
                continuation.finish(throwing: self.retirement ?? error)
            }
        }
        let key = track { task.cancel() }
        continuation.onTermination = { _ in
            task.cancel()
            self.untrack(key)
        }
        return events
    }

    private func checkVersion(_ response: HTTPClientResponse) throws {
        let theirs = response.headers.first(name: WorkerWire.versionHeader)
        guard theirs == String(WorkerWire.version) else {
            throw ServingError(
                .unavailable,
                "\(url.absoluteString) speaks worker protocol \(theirs ?? "(none: not an sllm worker?)"), this controller \(WorkerWire.version): run one sllm version across the cluster"
            )
        }
    }

    /// Sends `call`, unless the worker was found lost moments ago.
    private func execute(_ call: WorkerCall, timeout: TimeAmount) async throws -> HTTPClientResponse {
        if let retirement { throw retirement }
        if let lost = lost.withLock({ $0 }), ContinuousClock.now < lost.until {
            throw ServingError(
                .workerLost, "worker \(node) (\(url.absoluteString)) was lost moments ago (\(lost.reason))")
        }
        do {
            let response = try await client.execute(try request(call), timeout: timeout)
            lost.withLock { $0 = nil }
            return response
        } catch {
            throw unreachable(call, error)
        }
    }

    /// The error of a call that did not reach the worker, or whose answer broke off: the
    /// worker is lost to the instances on it (``ServingError/Kind/workerLost``), and calls in
    /// the next ``lostFor`` fail at once.
    private func unreachable(_ call: WorkerCall, _ error: any Error) -> ServingError {
        if let serving = error as? ServingError { return serving }
        if let retirement { return retirement }
        // A call its caller cancelled (a client that left) says nothing of the worker.
        if Task.isCancelled || error is CancellationError {
            return ServingError(.unavailable, "the call \(call.name) to worker \(node) was cancelled")
        }
        let reason = "\(error)"
        lost.withLock { $0 = (ContinuousClock.now + Self.lostFor, reason) }
        return ServingError(
            .workerLost, "worker \(node) (\(url.absoluteString)) cannot be reached for \(call.name): \(reason)")
    }
}
