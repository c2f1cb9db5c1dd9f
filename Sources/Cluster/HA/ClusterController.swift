public import AsyncHTTPClient
import Checkpoint
import Foundation
import Hummingbird
public import Logging
import NIOCore
import PostgresNIO
public import Scheduling
import ServiceLifecycle
public import Serving

/// A cluster controller put together: the server (APIs, deployments, placement) over the
/// workers that join its ``Membership``, and, when the state is in PostgreSQL, a
/// ``Leadership`` campaign among the controllers sharing it.
///
/// Only the leader acts: it takes worker leases, places instances and serves requests. A
/// follower restores nothing; it forwards requests to the leader (``LeaderForwarding``) and
/// tells workers where the leader is. A controller that comes to lead waits until the workers
/// recorded alive have joined it (at most one worker lease), then restores the deployments and
/// adopts the instances the workers report, so none is started twice.
public final class ClusterController: Sendable {
    public let server: Server
    public let membership: Membership
    public let leadership: Leadership?
    public let leaseLog: PostgresLeaseLog?
    public let placementLog: PostgresPlacementLog?

    /// - Parameters:
    ///   - workers: workers used without a lease (`--worker`).
    ///   - database: the shared state, when in PostgreSQL (then several controllers may run).
    ///   - advertise: this controller's URL for the others and the workers (called once bound).
    public init(
        configuration: ServeConfiguration, workers: [any Worker], state: any StateStore,
        database: PostgresStateStore?, token: String, client: HTTPClient, workerLease: Duration,
        policy: PlacementPolicy = .locality, advertise: @escaping @Sendable () async -> String, logger: Logger
    ) async throws {
        let decisions = database.map { PostgresPlacementLog(store: $0, logger: logger) }
        let server = try await Server(
            configuration: configuration, workers: workers, placement: policy.placement(), state: state,
            standby: database != nil, placementLog: decisions, logger: logger)
        let log = database.map { PostgresLeaseLog(store: $0, logger: logger) }
        var leadership: Leadership?
        let membershipBox = MembershipBox()
        if let database {
            leadership = Leadership(
                store: database, url: advertise, lease: workerLease, logger: logger,
                onLead: {
                    guard let membership = await membershipBox.membership else { return }
                    await Self.awaitWorkers(membership, database: database, within: workerLease, logger: logger)
                    server.activate()
                },
                onDeposed: { _ in await server.shutdown() })
            // Workers named with --worker carry the lead's epoch too, as those that join do.
            for case let remote as RemoteWorker in workers { remote.fence(by: { [leadership] in leadership?.epoch }) }
        }
        let membership = Membership(
            server: server, token: token, client: client, lease: workerLease, log: log, leadership: leadership,
            logger: logger)
        await membershipBox.set(membership)
        server.mount(
            try MembershipRoutes(
                membership: membership, token: token, leadership: leadership, client: client,
                maxBodyBytes: configuration.maxBodyBytes, logger: logger))
        self.server = server
        self.membership = membership
        self.leadership = leadership
        leaseLog = log
        placementLog = decisions
    }

    /// Waits until the workers the database records alive have joined `membership`, or `within` passed.
    static func awaitWorkers(
        _ membership: Membership, database: PostgresStateStore, within: Duration, logger: Logger
    ) async {
        let seconds = (within * 2).seconds
        let expected: Set<NodeID> =
            (try? await database.run("read the workers recorded alive") { client, logger in
                var nodes: Set<NodeID> = []
                let rows = try await client.query(
                    """
                    SELECT node FROM worker
                    WHERE state = 'alive' AND expires_at > now() - make_interval(secs => \(seconds))
                    """, logger: logger)
                for try await node in rows.decode(String.self) { nodes.insert(NodeID(node)) }
                return nodes
            }) ?? []
        let deadline = ContinuousClock.now + within
        while ContinuousClock.now < deadline {
            if expected.isSubset(of: Set(await membership.nodes)) { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        let joined = Set(await membership.nodes)
        logger.info(
            "taking over",
            metadata: [
                "workers": "\(joined.map(\.rawValue).sorted().joined(separator: ","))",
                "missing": "\(expected.subtracting(joined).map(\.rawValue).sorted().joined(separator: ","))",
            ])
    }
}

/// The membership, set once made (the leadership's callback is made before it).
private actor MembershipBox {
    var membership: Membership?
    func set(_ membership: Membership) { self.membership = membership }
}
