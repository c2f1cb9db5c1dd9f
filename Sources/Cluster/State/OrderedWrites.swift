import Logging
import Serving

/// Writes to the state database in the order they were asked for, on one task, off the caller's
/// path (a renewal, a placement): at most `limit` wait; beyond that new ones are dropped and
/// logged (the database is down; the next renewal writes again). A failed write is logged.
final class OrderedWrites<Item: Sendable>: Sendable {
    private enum Entry: Sendable {
        case item(Item)
        /// Resumed once the writes before it are done.
        case barrier(CheckedContinuation<Void, Never>)
    }

    private let entries: AsyncStream<Entry>.Continuation
    private let writer: Task<Void, Never>
    private let logger: Logger
    private let what: String

    /// - Parameter what: what a write records, for the log (`a worker's lease`).
    init(_ what: String, limit: Int = 4096, logger: Logger, perform: @escaping @Sendable (Item) async throws -> Void) {
        let (stream, continuation) = AsyncStream.makeStream(of: Entry.self, bufferingPolicy: .bufferingOldest(limit))
        entries = continuation
        self.logger = logger
        self.what = what
        writer = Task {
            for await entry in stream {
                switch entry {
                case .barrier(let continuation): continuation.resume()
                case .item(let item):
                    do { try await perform(item) } catch {
                        logger.warning("cannot record \(what)", metadata: ["error": "\(ServingError(error).message)"])
                    }
                }
            }
        }
    }

    deinit { entries.finish() }

    func submit(_ item: Item) {
        if case .dropped = entries.yield(.item(item)) {
            logger.warning("dropped a record of \(what): too many writes wait for the state database")
        }
    }

    /// Waits for the writes asked so far.
    func flush() async {
        await withCheckedContinuation { continuation in
            switch entries.yield(.barrier(continuation)) {
            case .enqueued: break
            default: continuation.resume()
            }
        }
    }

    /// Waits for the writes asked so far, then ends the writer.
    func close() async {
        entries.finish()
        await writer.value
    }
}
