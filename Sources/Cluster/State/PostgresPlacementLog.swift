import Foundation
public import Logging
import PostgresNIO
import Scheduling
public import Serving

/// Writes the scheduler's decisions, each once its start ended, to `placement_decision`: the
/// node, policy, estimate and actual time as columns (for SQL), the whole record with every
/// candidate's terms as JSON. In order, off the placement's path; a failed write is logged.
public final class PostgresPlacementLog: PlacementLog {
    private let writes: OrderedWrites<PlacementRecord>

    public init(store: PostgresStateStore, logger: Logger) {
        writes = OrderedWrites("a placement decision", logger: logger) { try await Self.write($0, to: store) }
    }

    public func record(_ decision: PlacementRecord) { writes.submit(decision) }

    /// Ends the writer once the decisions asked so far are written.
    public func close() async { await writes.close() }

    private static func write(_ record: PlacementRecord, to store: PostgresStateStore) async throws {
        let json = String(decoding: try JSONEncoder.wire.encode(record), as: UTF8.self)
        try await store.write("record placement decision \(record.id)", fenced: false) { connection, logger in
            try await connection.query(
                """
                INSERT INTO placement_decision (decided_at, deployment, instance, policy, node, tier,
                    estimated_seconds, actual_seconds, outcome, record)
                VALUES (\(record.at), \(record.deployment), \(record.instance), \(record.policy), \(record.node),
                    \(record.tier.rawValue), \(record.estimatedSeconds), \(record.actualSeconds), \(record.outcome),
                    \(json)::jsonb)
                """, logger: logger)
        }
    }
}
