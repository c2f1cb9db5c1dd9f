import Checkpoint
import Foundation
public import Logging
import PostgresNIO
public import Serving

/// Records workers' leases in the state database's `worker` table, one row per node: who joined
/// (URL, boot, inventory), when it last renewed and when its lease runs out (the database's
/// clock), and how it ended (`lost` with the reason, or `left`). Writes run in order on one task,
/// off the renewals' path; a write that fails is logged, and the next renewal writes again.
public final class PostgresLeaseLog: LeaseLog {
    private enum Write: Sendable {
        case joined(LeaseRequest, Duration)
        case renewed(LeaseRequest, Duration)
        case ended(NodeID, boot: String, LeaseState, String)
    }

    private let writes: OrderedWrites<Write>

    public init(store: PostgresStateStore, logger: Logger) {
        writes = OrderedWrites("a worker's lease", logger: logger) { try await Self.perform($0, on: store) }
    }

    /// Waits for the writes asked so far (tests, and a controller stopping).
    public func flush() async { await writes.flush() }

    public func joined(_ request: LeaseRequest, lease: Duration) { writes.submit(.joined(request, lease)) }
    public func renewed(_ request: LeaseRequest, lease: Duration) { writes.submit(.renewed(request, lease)) }
    public func ended(_ node: NodeID, boot: String, state: LeaseState, reason: String) {
        writes.submit(.ended(node, boot: boot, state, reason))
    }

    private static func perform(_ write: Write, on store: PostgresStateStore) async throws {
        switch write {
        case .joined(let request, let lease):
            let inventory = try inventoryText(request.inventory)
            let seconds = lease.seconds
            try await store.write("record that worker \(request.node) joined", fenced: false) { connection, logger in
                try await connection.query(
                    """
                    INSERT INTO worker (node, url, boot, state, joined_at, renewed_at, expires_at, reason, inventory)
                    VALUES (\(request.node.rawValue), \(request.url), \(request.boot), 'alive', now(), now(),
                            now() + make_interval(secs => \(seconds)), NULL, \(inventory)::jsonb)
                    ON CONFLICT (node) DO UPDATE SET
                        url = excluded.url, boot = excluded.boot, state = 'alive', joined_at = now(),
                        renewed_at = now(), expires_at = excluded.expires_at, reason = NULL,
                        inventory = excluded.inventory
                    """, logger: logger)
            }
        case .renewed(let request, let lease):
            let inventory = try inventoryText(request.inventory)
            let seconds = lease.seconds
            try await store.write("record worker \(request.node)'s renewal", fenced: false) { connection, logger in
                try await connection.query(
                    """
                    UPDATE worker SET renewed_at = now(), expires_at = now() + make_interval(secs => \(seconds)),
                        inventory = \(inventory)::jsonb
                    WHERE node = \(request.node.rawValue) AND boot = \(request.boot) AND state = 'alive'
                    """, logger: logger)
            }
        case .ended(let node, let boot, let state, let reason):
            try await store.write("record that worker \(node)'s lease ended", fenced: false) { connection, logger in
                try await connection.query(
                    """
                    UPDATE worker SET state = \(state.rawValue), reason = \(reason), expires_at = now()
                    WHERE node = \(node.rawValue) AND boot = \(boot)
                    """, logger: logger)
            }
        }
    }

    private static func inventoryText(_ inventory: NodeInventory) throws -> String {
        String(decoding: try JSONEncoder.wire.encode(inventory), as: UTF8.self)
    }
}
