import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Scheduling
import Store

/// The web console: its page at `/` (for a browser; other clients get the JSON summary), its
/// script and style, and the state it shows: `GET /admin/console` (one snapshot) and
/// `GET /admin/events` (server-sent events, a snapshot at most once a second, when it changed).
/// Both take any key: the console's pages are read-only; its actions call the admin API, which
/// wants an admin key. `sllm status --watch` reads the same event stream.
struct ConsoleRoutes: Sendable {
    let feed: ConsoleFeed
    let lifecycle: ServerLifecycle
    let keys: KeyRing
    /// Simulator runs shown beside the live figures (`GET /admin/experiments`).
    let experiments: SimulationRuns

    /// How long one event stream lasts before the browser (which reconnects by itself) or
    /// `sllm status --watch` opens the next: no stream runs unbounded.
    static let streamLifetime: Duration = .seconds(3600)
    /// A snapshot goes out at least this often even when nothing changed (the viewer's clock
    /// check and a keep-alive for proxies).
    static let heartbeat: Duration = .seconds(15)

    func register(on routes: Routes) {
        routes.add(.get, "console/app.js", .open) { _, _ in
            Self.asset(ConsoleAssets.script, type: "text/javascript; charset=utf-8")
        }
        routes.add(.get, "console/style.css", .open) { _, _ in
            Self.asset(ConsoleAssets.style, type: "text/css; charset=utf-8")
        }
        routes.add(.get, "admin/console", .user) { request, _ in
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            headers[.cacheControl] = "no-store"
            let access = access(of: request)
            return Response(
                status: .ok, headers: headers,
                body: .init(
                    byteBuffer: ByteBuffer(
                        bytes: try feed.wrap(try await feed.snapshot(), serverTime: Date(), access: access))))
        }
        routes.add(.get, "admin/experiments", .user) { _, _ in
            let experiments = experiments
            let runs = try await runBlocking { experiments.list() }
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            headers[.cacheControl] = "no-store"
            return Response(
                status: .ok, headers: headers,
                body: .init(
                    byteBuffer: ByteBuffer(
                        bytes: try JSONEncoder.iso.encode(
                            ExperimentsReport(directory: experiments.directory, runs: runs)))))
        }
        routes.add(.get, "admin/events", .user, streams: true) { request, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/event-stream"
            headers[.cacheControl] = "no-store"
            let (feed, lifecycle) = (feed, lifecycle)
            let (id, events) = try await feed.subscribe(access: access(of: request))
            return Response(
                status: .ok, headers: headers,
                body: ResponseBody { writer in
                    let end = ContinuousClock.now + Self.streamLifetime
                    // The browser waits this long before reconnecting once the stream ends.
                    try await writer.write(ByteBuffer(string: "retry: 2000\n\n"))
                    for await event in events {
                        try await writer.write(event)
                        if lifecycle.isShuttingDown || ContinuousClock.now >= end { break }
                    }
                    await feed.unsubscribe(id)
                    try await writer.finish(nil)
                })
        }
    }

    /// What the caller's key may do, as the console shows it: `admin` (acts), `user` (looks).
    /// Without required keys, everyone is an admin, as for the admin API.
    private func access(of request: Request) -> String {
        guard keys.required else { return "admin" }
        return keys.access(for: KeyRing.bearer(request)) == .admin ? "admin" : "user"
    }

    /// The page for a browser (`Accept: text/html`), nil for other clients. It says whether the
    /// server wants keys, so that the page asks for one before it calls anything.
    static func page(for request: Request, keysRequired: Bool) -> Response? {
        guard request.headers[.accept]?.contains("text/html") == true else { return nil }
        let page = ConsoleAssets.page.replacingOccurrences(
            of: "data-keys=\"\"", with: "data-keys=\"\(keysRequired ? "required" : "none")\"")
        return asset(page, type: "text/html; charset=utf-8")
    }

    private static func asset(_ text: String, type: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = type
        headers[.cacheControl] = "no-cache"
        // The page runs only its own script and style, and is never framed.
        headers[HTTPField.Name("Content-Security-Policy")!] =
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

/// Builds the console's snapshot at most once a second, however many viewers ask, and sends it
/// to every event stream from one loop (running while a stream is open): 20 open tabs cost one
/// snapshot a second and a write each when it changed.
actor ConsoleFeed {
    private let registry: DeploymentRegistry
    private let activity: ConsoleActivity
    private let lifecycle: ServerLifecycle
    private var cached: (at: ContinuousClock.Instant, bytes: [UInt8])?
    /// The open event streams, with the access their key has.
    private var subscribers: [Int: (access: String, continuation: AsyncStream<ByteBuffer>.Continuation)] = [:]
    private var nextSubscriber = 0
    private var pump: Task<Void, Never>?
    /// Which pump is the current one (an old one ending late leaves a newer one alone).
    private var pumpGeneration = 0
    /// Windows the overview offers, seconds.
    static let windows = [60, 300, 900, 3600]
    /// Rows of each list the snapshot carries (newest first).
    static let rows = 50

    init(registry: DeploymentRegistry, activity: ConsoleActivity, lifecycle: ServerLifecycle) {
        self.registry = registry
        self.activity = activity
        self.lifecycle = lifecycle
    }

    /// The current snapshot's JSON (cached for just under a second).
    func snapshot() async throws -> [UInt8] {
        let now = ContinuousClock.now
        if let cached, now - cached.at < .milliseconds(900) { return cached.bytes }
        let snapshot = ConsoleSnapshot(
            version: Server.version,
            nodes: await registry.nodeReports(),
            deployments: await registry.statuses(),
            decisions: Array(await registry.pool.decisions.suffix(Self.rows).reversed()),
            coldStarts: Array(activity.recentColdStarts.suffix(Self.rows).reversed()),
            migrations: Array(activity.recentMigrations.suffix(Self.rows).reversed()),
            windows: Self.windows.map { activity.window($0) })
        let bytes = Array(try JSONEncoder.iso.encode(snapshot))
        cached = (now, bytes)
        return bytes
    }

    /// `{"access": ..., "server_time": ..., "snapshot": ...}` around a snapshot's JSON.
    nonisolated func wrap(_ snapshot: [UInt8], serverTime: Date, access: String) throws -> [UInt8] {
        let time = String(decoding: try JSONEncoder.iso.encode(serverTime), as: UTF8.self)
        return Array("{\"access\":\"\(access)\",\"server_time\":\(time),\"snapshot\":".utf8) + snapshot
            + Array("}".utf8)
    }

    /// A new event stream: the current snapshot at once, then every change (and a heartbeat).
    func subscribe(access: String) async throws -> (Int, AsyncStream<ByteBuffer>) {
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream(bufferingPolicy: .bufferingNewest(2))
        nextSubscriber += 1
        let id = nextSubscriber
        continuation.yield(Self.event(try wrap(try await snapshot(), serverTime: Date(), access: access)))
        // However the stream ends (the client left, the response was dropped), it is let go.
        continuation.onTermination = { _ in Task { await self.unsubscribe(id) } }
        subscribers[id] = (access, continuation)
        if pump == nil {
            pumpGeneration += 1
            let generation = pumpGeneration
            pump = Task { await self.run(generation) }
        }
        return (id, stream)
    }

    func unsubscribe(_ id: Int) {
        subscribers.removeValue(forKey: id)?.continuation.finish()
        if subscribers.isEmpty {
            pump?.cancel()
            pump = nil
        }
    }

    /// Once a second while streams are open: a snapshot that changed (or the heartbeat) goes to
    /// each, built once per access level; at shutdown every stream ends.
    private func run(_ generation: Int) async {
        var last: [UInt8] = []
        var lastSent = ContinuousClock.now
        while !Task.isCancelled, !subscribers.isEmpty {
            try? await Task.sleep(for: .seconds(1))
            if lifecycle.isShuttingDown {
                for (_, subscriber) in subscribers { subscriber.continuation.finish() }
                subscribers.removeAll()
                break
            }
            guard let snapshot = try? await snapshot() else { continue }
            if last.isEmpty { last = snapshot }
            guard snapshot != last || ContinuousClock.now - lastSent >= ConsoleRoutes.heartbeat else { continue }
            last = snapshot
            lastSent = ContinuousClock.now
            let now = Date()
            var events: [String: ByteBuffer] = [:]
            for (_, subscriber) in subscribers {
                if events[subscriber.access] == nil {
                    guard let bytes = try? wrap(snapshot, serverTime: now, access: subscriber.access) else { continue }
                    events[subscriber.access] = Self.event(bytes)
                }
                subscriber.continuation.yield(events[subscriber.access]!)
            }
        }
        if pumpGeneration == generation { pump = nil }
    }

    private static func event(_ json: [UInt8]) -> ByteBuffer {
        var event = ByteBuffer(string: "event: snapshot\ndata: ")
        event.writeBytes(json)
        event.writeString("\n\n")
        return event
    }
}

/// What the console shows, as one JSON object (snake_case keys, ISO 8601 times).
struct ConsoleSnapshot: Codable {
    var version: String
    var nodes: [NodeReport]
    var deployments: [DeploymentReport]
    /// The scheduler's latest placements, newest first: node, tier, estimate terms, outcome.
    var decisions: [PlacementRecord]
    var coldStarts: [ConsoleActivity.ColdStart]
    var migrations: [ConsoleActivity.Migration]
    /// Requests over the last minute, 5 minutes, 15 minutes and hour.
    var windows: [WindowStats]
}

/// `GET /admin/experiments`: where the runs are read from, and each run.
struct ExperimentsReport: Codable {
    var directory: String
    var runs: [SimulationRuns.Run]
}
