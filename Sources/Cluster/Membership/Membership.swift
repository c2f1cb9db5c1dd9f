public import AsyncHTTPClient
import Checkpoint
import Foundation
public import Logging
public import Serving

/// The workers that joined a controller, each holding a lease it renews (``LeaseRequest``).
///
/// A first renewal makes the node a member: a ``RemoteWorker`` for its URL joins the server's
/// node pool, and instances the worker runs that the controller did not place (left from before
/// it was lost, or from before this controller started) are stopped. Each renewal moves the
/// node's deadline; a node whose deadline passes without one is lost: its worker client fails
/// every call in flight with `worker_lost`, and the server drops its instances and places their
/// work again. No polling: one sleeping task per node wakes at its deadline.
///
/// A renewal with a new `boot` (the worker restarted) or a new URL ends the old membership first.
public actor Membership {
    struct Member {
        var worker: RemoteWorker
        var boot: String
        var url: String
        var deadline: ContinuousClock.Instant
        var watch: Task<Void, Never>?
    }

    private let server: Server
    private let token: String
    private let client: HTTPClient
    private let logger: Logger
    /// How long a lease lasts after each renewal (a node silent this long is lost).
    public nonisolated let lease: Duration
    private let log: (any LeaseLog)?
    /// Who leads, when several controllers share the state (nil: this one alone, always leading).
    private let leadership: Leadership?
    private var members: [NodeID: Member] = [:]
    /// Nodes joining or being dropped: a renewal arriving meanwhile is granted and does nothing
    /// (the next one joins), so a join and a drop of one node never interleave.
    private var busy: Set<NodeID> = []

    /// - Parameters:
    ///   - lease: how long a worker stays a member without renewing (it renews three times in it).
    ///   - log: where leases are recorded for operators and other controllers (PostgreSQL), if anywhere.
    public init(
        server: Server, token: String, client: HTTPClient, lease: Duration = .seconds(3), log: (any LeaseLog)? = nil,
        leadership: Leadership? = nil, logger: Logger
    ) {
        self.leadership = leadership
        self.server = server
        self.token = token
        self.client = client
        self.lease = lease
        self.log = log
        self.logger = logger
    }

    /// The grant every renewal gets: renew three times per lease.
    nonisolated var grant: LeaseGrant {
        LeaseGrant(leaseSeconds: lease.seconds, renewSeconds: lease.seconds / 3)
    }

    /// The current members.
    public var nodes: [NodeID] { members.keys.sorted { $0.rawValue < $1.rawValue } }

    /// A worker's renewal (its first one makes it a member).
    public func renew(_ request: LeaseRequest) async throws(ServingError) -> LeaseGrant {
        if let problem = request.problem() { throw ServingError(.invalidRequest, "not a lease: \(problem)") }
        if let leadership, !leadership.isLeader {
            return LeaseGrant(leaseSeconds: 0, renewSeconds: 0, leader: leadership.leaderURL)
        }
        let node = request.node
        if var member = members[node], member.boot == request.boot, member.url == request.url {
            member.deadline = .now + lease
            members[node] = member
            member.worker.report(request.inventory)
            log?.renewed(request, lease: lease)
            return grant
        }
        guard !busy.contains(node) else { return grant }
        busy.insert(node)
        defer { busy.remove(node) }
        if let old = members[node] {
            let why = old.boot != request.boot ? "it restarted" : "it moved to \(request.url)"
            await drop(node, reason: why, state: .lost)
        }
        let worker = RemoteWorker.registered(
            node: node, url: LeaseRequest.checkedURL(request.url)!, token: token, client: client, logger: logger,
            inventory: request.inventory)
        if let leadership { worker.fence(by: { leadership.epoch }) }
        members[node] = Member(worker: worker, boot: request.boot, url: request.url, deadline: .now + lease)
        members[node]?.watch = Task { await self.watch(node, boot: request.boot) }
        log?.joined(request, lease: lease)
        logger.info(
            "worker joined",
            metadata: ["node": "\(node)", "url": "\(request.url)", "cores": "\(request.inventory.cores)"])
        await server.join(worker, running: request.inventory.running)
        return grant
    }

    /// A worker leaving: first its requests move to other nodes (live migration of every
    /// instance with requests running: a scale-in or a pod's termination loses none), then its
    /// membership ends (when `boot` is the member's).
    public func leave(_ request: LeaveRequest) async {
        guard let member = members[request.node], member.boot == request.boot, !busy.contains(request.node) else {
            return
        }
        busy.insert(request.node)
        defer { busy.remove(request.node) }
        let moved = await server.drain(request.node)
        if !moved.isEmpty {
            logger.info(
                "worker drained before leaving",
                metadata: [
                    "node": "\(request.node)", "migrated": "\(moved.filter(\.succeeded).count) of \(moved.count)",
                ])
        }
        await drop(request.node, reason: "it left", state: .left)
    }

    /// Ends every membership (the controller stops); the workers' leases are left to run out.
    public func close() {
        for member in members.values { member.watch?.cancel() }
    }

    /// Sleeps until the node's deadline, again while renewals move it, and drops the node once
    /// it passes.
    private func watch(_ node: NodeID, boot: String) async {
        while let member = members[node], member.boot == boot {
            if ContinuousClock.now >= member.deadline, !busy.contains(node) {
                busy.insert(node)
                defer { busy.remove(node) }
                await drop(node, reason: "no lease renewal for \(lease)", state: .lost)
                return
            }
            let wake = max(member.deadline, .now + .milliseconds(50))
            do { try await Task.sleep(until: wake, clock: .continuous) } catch { return }
        }
    }

    /// Ends a membership (the caller holds `busy` for the node).
    private func drop(_ node: NodeID, reason: String, state: LeaseState) async {
        guard let member = members.removeValue(forKey: node) else { return }
        member.watch?.cancel()
        member.worker.retire("node \(node) was lost: \(reason)")
        log?.ended(node, boot: member.boot, state: state, reason: reason)
        logger.warning(
            "worker \(state == .left ? "left" : "lost")", metadata: ["node": "\(node)", "reason": "\(reason)"])
        await server.leave(node, reason: reason, left: state == .left)
    }
}

/// How a lease ended.
public enum LeaseState: String, Sendable, Codable {
    case alive, lost, left
}

/// Where a controller records its members' leases (PostgreSQL's `worker` table), for operators
/// and for the controller that leads next. Writes happen in order, off the renewal's path.
public protocol LeaseLog: Sendable {
    func joined(_ request: LeaseRequest, lease: Duration)
    func renewed(_ request: LeaseRequest, lease: Duration)
    func ended(_ node: NodeID, boot: String, state: LeaseState, reason: String)
}
