public import Checkpoint
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// The outcome of re-hashing one model's DRAM copy.
public struct DRAMVerification: Sendable, Codable {
    public var model: String
    public var tensors: Int
    public var bytes: Int
    /// The first tensor whose bytes fail their checksum; nil when every tensor passes.
    public var corruptTensor: String?
    /// Whether a corrupt entry was removed. One in use stays mapped by its instance but is marked
    /// incomplete, so no later load uses it; it goes once released.
    public var evicted: Bool
}

extension DRAMCache {
    /// Re-hashes the cached copy of `name` against the checksums of `reader`'s index (the store's
    /// checkpoint) and drops the entry when a tensor fails. A DRAM hit is never re-verified on
    /// the load path (that is its speed); this is how a flipped bit in shared memory is found.
    ///
    /// - Parameters:
    ///   - bytesPerSecond: at most this many bytes hashed per second (nil: as fast as it goes),
    ///     so a background scrub takes a bounded share of memory bandwidth.
    ///   - shouldStop: checked between tensors; a stopped verification returns nil.
    /// - Returns: nil when the cache holds no complete entry for this checkpoint.
    public func verify(
        name: String, reader: CheckpointReader, bytesPerSecond: Int? = nil,
        shouldStop: () -> Bool = { false }
    ) -> DRAMVerification? {
        let path = entriesDirectory + "/" + Self.key(name: name, indexChecksum: reader.indexChecksum)
        guard readMeta(path)?.complete == true, let lock = sharedLock(path) else { return nil }
        // Read under the lock: the entry may have been replaced since.
        guard let meta = readMeta(path), meta.complete else {
            close(lock)
            return nil
        }
        var result = DRAMVerification(model: name, tensors: 0, bytes: 0, corruptTensor: nil, evicted: false)
        let start = ContinuousClock.now
        do {
            let slabs = try meta.segments.map { try mapCheckedSegment($0) }
            for tensor in reader.index.tensors {
                if shouldStop() {
                    close(lock)
                    return nil
                }
                guard let index = meta.segments.firstIndex(where: { $0.holds(tensor) }) else {
                    result.corruptTensor = tensor.name + " (not in the entry)"
                    break
                }
                let segment = meta.segments[index]
                let bytes = UnsafeRawBufferPointer(
                    start: slabs[index].base + (tensor.offset - segment.offset), count: tensor.byteCount)
                guard CRC32C.checksum(bytes) == tensor.crc32c else {
                    result.corruptTensor = tensor.name
                    break
                }
                result.tensors += 1
                result.bytes += tensor.byteCount
                if let bytesPerSecond, bytesPerSecond > 0 {
                    // Sleep off whatever the hashing ran ahead of the budget.
                    let due = Double(result.bytes) / Double(bytesPerSecond)
                    let ahead = due - seconds(since: start)
                    if ahead > 0.001 { Thread.sleep(forTimeInterval: min(ahead, 1)) }
                }
            }
        } catch {
            result.corruptTensor = "(slabs: \(error))"
        }
        close(lock)
        if let bad = result.corruptTensor {
            logger.error("the DRAM copy is corrupt; dropping it", metadata: ["model": "\(name)", "tensor": "\(bad)"])
            result.evicted = drop(path, meta)
        }
        return result
    }

    /// Verifies every complete entry whose checkpoint is in `store` (entries of other index
    /// versions are unreachable and skipped).
    public func verifyAll(store: ModelStore, bytesPerSecond: Int? = nil, shouldStop: () -> Bool = { false })
        -> [DRAMVerification]
    {
        var results: [DRAMVerification] = []
        for entry in listEntries() where entry.complete {
            guard !shouldStop() else { break }
            guard let name = try? ModelName(entry.name), let reader = try? store.reader(for: name),
                entry.key == Self.key(name: entry.name, indexChecksum: reader.indexChecksum)
            else { continue }
            if let result = verify(
                name: entry.name, reader: reader, bytesPerSecond: bytesPerSecond, shouldStop: shouldStop)
            {
                results.append(result)
            }
        }
        return results
    }
}
