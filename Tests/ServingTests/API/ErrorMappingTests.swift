import Checkpoint
import Engine
import Foundation
import Scheduling
import Store
import Testing
import Tokenizers

@testable import Serving

/// Every layer's errors reach a route with the right HTTP status: a missing model is 404, a full
/// disk 507, missing memory 503, a bad setting 400, and only what nobody foresaw is 500.
@Suite struct ErrorMappingTests {
    static let cases: [(any Error & Sendable, Int)] = [
        (StoreError(.notFound, "model `x` is not in the store"), 404),
        (StoreError(.invalidName, "bad name"), 400),
        (StoreError(.invalidSource, "bad source"), 400),
        (StoreError(.alreadyExists, "exists"), 409),
        (StoreError(.download, "the remote said 502"), 503),
        (StoreError(.checksumMismatch, "sha256 differs"), 503),
        (StoreError(.io, "write failed", cause: Errno(ENOSPC, operation: "write")), 507),
        (StoreError(.io, "quota", cause: Errno(EDQUOT, operation: "write")), 507),
        (StoreError(.io, "mmap failed", cause: Errno(ENOMEM, operation: "mmap")), 503),
        (StoreError(.io, "something odd", cause: Errno(EBADF, operation: "read")), 500),
        (StoreError(.io, "no cause"), 500),
        (CheckpointError(.notFound, "no such tensor"), 404),
        (CheckpointError(.corrupt, "checksum of blk.0 fails"), 503),
        (CheckpointError(.io, "fsync", cause: Errno(ENOSPC, operation: "fsync")), 507),
        (CheckpointError(.invalidArgument, "bad option"), 400),
        (EngineError(.contextOverflow, "too long"), 400),
        (EngineError(.outOfMemory, "KV budget"), 503),
        (EngineError(.weightsUnavailable, "the weights of m did not load: tensor `blk.3` is corrupt"), 503),
        (ServingError(.workerLost, "worker node-b cannot be reached for run"), 503),
        (SchedulingError(.invalidSetting, "keep_alive `soon`", field: "keep_alive"), 400),
        (TokenizerError(.malformed, "the template failed on message 2"), 400),
        (Errno(ENOSPC, operation: "write"), 507),
        (CancellationError(), 500),
    ]

    @Test func eachErrorGetsItsStatus() {
        for (error, status) in Self.cases {
            let mapped = ServingError(error)
            #expect(mapped.statusCode == status, "\(error) -> \(mapped.kind)")
            #expect(!mapped.message.isEmpty)
        }
    }

    @Test func aFullDiskSaysSoOnTheWire() throws {
        let mapped = ServingError(StoreError(.io, "cannot write", cause: Errno(ENOSPC, operation: "write")))
        let body = try #require(try JSONSerialization.jsonObject(with: mapped.json) as? [String: [String: Any]])
        #expect(
            body["error"]?["code"] as? String == "insufficient_storage"
                && body["error"]?["type"] as? String == "server_error")
        #expect(ServingError(SchedulingError(.invalidSetting, "x", field: "queue_limit")).param == "queue_limit")
    }
}
