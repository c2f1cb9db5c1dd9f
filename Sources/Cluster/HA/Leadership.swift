import Checkpoint
import Foundation
public import Logging
import PostgresNIO
public import ServiceLifecycle
import Serving
import Synchronization

/// Which of several controllers sharing one state database leads: the one holding the lease row
/// in `leader` (``PostgresSchema`` v3), taken and renewed with the database's clock.
///
/// The leader renews every third of the lease. A follower checks twice as often and takes the
/// row once its lease has run out, bumping the epoch. A leader that cannot renew before its own
/// lease would run out (counted from when it sent the last renewal that succeeded, so never
/// later than the database's expiry) stops leading and exits: a supervisor (Kubernetes) starts
/// it again as a follower. No two controllers act as leader at once, as long as their clocks
/// run at the same rate; and the database fences their writes besides (``PostgresStateStore/Writer``):
/// each of the leader's writes checks, in its transaction, that the lease row still names it
/// with its epoch, so a controller paused past its lease (a stopped process, a VM migration)
/// cannot write once another has taken over. A follower writes nothing. Its calls to workers
/// carry the epoch too, and a worker refuses those of an epoch older than one it has seen.
public final class Leadership: Sendable {
    public enum Role: Sendable, Equatable {
        /// Leading since the epoch.
        case leader(epoch: Int64)
        /// Following the controller at `leader` (nil while none is known).
        case follower(leader: String?)
    }

    /// This controller's id in the lease row (one per process run).
    public let id: String
    /// Where other controllers and workers reach this one (known once the server is bound).
    public var url: String { address.withLock { $0 } ?? "" }
    private let address = Mutex<String?>(nil)
    private let resolveURL: @Sendable () async -> String
    public let lease: Duration
    private let store: PostgresStateStore
    private let logger: Logger
    private let state = Mutex<Role>(.follower(leader: nil))
    private let deposed = Mutex<String?>(nil)

    /// Why this controller stopped leading, once it has (it then shuts down).
    public var deposedReason: String? { deposed.withLock { $0 } }
    /// Called once, when this controller first leads.
    private let onLead: @Sendable () async -> Void
    /// Called when it stops leading (it must exit: what it did as leader is not undone).
    private let onDeposed: @Sendable (String) async -> Void

    public init(
        store: PostgresStateStore, url: @escaping @Sendable () async -> String, lease: Duration = .seconds(3),
        logger: Logger,
        onLead: @escaping @Sendable () async -> Void, onDeposed: @escaping @Sendable (String) async -> Void
    ) {
        id = UUID().uuidString
        resolveURL = url
        self.lease = lease
        self.store = store
        self.logger = logger
        self.onLead = onLead
        self.onDeposed = onDeposed
        store.writeAs(.nobody)
    }

    public var role: Role { state.withLock { $0 } }

    /// The epoch of this controller's lead, once it has led (kept after it stops: its calls to
    /// workers still carry it, so a worker that has seen a newer leader refuses them).
    public var epoch: Int64? { lastEpoch.withLock { $0 } }
    private let lastEpoch = Mutex<Int64?>(nil)

    public var isLeader: Bool {
        if case .leader = role { return true }
        return false
    }

    /// The leader's URL: this controller's when it leads.
    public var leaderURL: String? {
        switch role {
        case .leader: url
        case .follower(let leader): leader
        }
    }

    /// Campaigns until cancelled: takes the lease when it is free, renews it while leading.
    public func run() async {
        let resolved = await resolveURL()
        address.withLock { $0 = resolved }
        var validUntil = ContinuousClock.now
        while !Task.isCancelled {
            let sent = ContinuousClock.now
            let leading = isLeader
            do {
                switch try await attempt() {
                case .leader(let epoch):
                    validUntil = sent + lease
                    if !leading {
                        store.writeAs(.leader(holder: id, epoch: epoch))
                        lastEpoch.withLock { $0 = epoch }
                        state.withLock { $0 = .leader(epoch: epoch) }
                        logger.notice("leading the cluster", metadata: ["epoch": "\(epoch)", "url": "\(url)"])
                        let onLead = onLead
                        Task { await onLead() }
                    }
                case .follower(let leader):
                    if leading {
                        await depose("another controller (\(leader ?? "?")) holds the lease")
                        return
                    }
                    if role != .follower(leader: leader) {
                        state.withLock { $0 = .follower(leader: leader) }
                        logger.info("following", metadata: ["leader": "\(leader ?? "none yet")"])
                    }
                }
            } catch {
                logger.warning(
                    "cannot reach the state database for the leader's lease",
                    metadata: ["error": "\(ServingError(error).message)"])
                if leading, ContinuousClock.now >= validUntil - lease / 6 {
                    await depose("its lease could not be renewed in time: \(ServingError(error).message)")
                    return
                }
            }
            let pause = isLeader ? lease / 3 : lease / 6
            try? await Task.sleep(for: pause)
        }
    }

    /// Gives the lease up (a leader stopping): another controller takes it at its next check.
    public func resign() async {
        guard isLeader else { return }
        state.withLock { $0 = .follower(leader: nil) }
        store.writeAs(.nobody)
        let id = id
        _ = try? await store.run("give up the leader's lease") { client, logger in
            try await client.query(
                "UPDATE leader SET expires_at = now() - interval '1 second' WHERE id = 1 AND holder = \(id)",
                logger: logger)
        }
        logger.info("gave up the lead")
    }

    private func depose(_ reason: String) async {
        state.withLock { $0 = .follower(leader: nil) }
        store.writeAs(.nobody)
        deposed.withLock { $0 = reason }
        logger.critical("no longer leading: \(reason)")
        await onDeposed(reason)
    }

    /// One round: renew or take the lease; the role it gives.
    private func attempt() async throws -> Role {
        let (id, url, seconds) = (id, url, lease.seconds)
        return try await store.run("renew the leader's lease") { client, logger in
            let rows = try await client.query(
                """
                INSERT INTO leader AS l (id, holder, url, epoch, renewed_at, expires_at)
                VALUES (1, \(id), \(url), 1, now(), now() + make_interval(secs => \(seconds)))
                ON CONFLICT (id) DO UPDATE SET
                    holder = excluded.holder, url = excluded.url,
                    epoch = CASE WHEN l.holder = excluded.holder THEN l.epoch ELSE l.epoch + 1 END,
                    renewed_at = now(), expires_at = excluded.expires_at
                WHERE l.holder = excluded.holder OR l.expires_at < now()
                RETURNING epoch
                """, logger: logger)
            for try await epoch in rows.decode(Int64.self) { return Role.leader(epoch: epoch) }
            let current = try await client.query(
                "SELECT url FROM leader WHERE id = 1 AND expires_at >= now()", logger: logger)
            for try await leader in current.decode(String.self) { return Role.follower(leader: leader) }
            return Role.follower(leader: nil)
        }
    }
}

/// Runs a controller's campaign beside its server.
public struct LeadershipService: Service {
    let leadership: Leadership

    public init(_ leadership: Leadership) { self.leadership = leadership }

    public func run() async throws {
        await cancelWhenGracefulShutdown { await leadership.run() }
        await leadership.resign()
    }
}
