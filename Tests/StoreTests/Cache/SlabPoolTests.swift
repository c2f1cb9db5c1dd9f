import Foundation
import Synchronization
import TestSupport
import Testing

@testable import Checkpoint
@testable import Store

#if canImport(Glibc)
import Glibc
#endif

/// Fresh memory for the DRAM cache: populated beside the reads, kept pooled after an eviction.
@Suite struct SlabPoolTests {
    /// Pages of `byteCount` bytes at `base` the process has mapped and resident.
    func residentPages(_ base: UnsafeMutableRawPointer, _ byteCount: Int) -> Int {
        var vector = [UInt8](repeating: 0, count: (byteCount + 4095) / 4096)
        guard mincore(base, byteCount, &vector) == 0 else { return -1 }
        return vector.filter { $0 & 1 == 1 }.count
    }

    /// Populating makes every page resident, from any number of threads, and never changes a
    /// byte already written (a load may be writing the same slab).
    @Test(arguments: [1, 2, 3])
    func populatingAllocatesEveryPageAndKeepsData(threads: Int) throws {
        let directory = try TemporaryDirectory("populate")
        defer { directory.remove() }
        let byteCount = (20 << 20) + 4096 * 3  // not a multiple of the threads' pieces
        let file = try UnsafeSharedMemoryFile.create(directory.file("slab"), byteCount: byteCount)
        #expect(residentPages(file.base, byteCount) == 0, "a new slab starts without pages")
        // Some pages written before, as a load would have.
        var generator = SeededGenerator(seed: UInt64(threads))
        var written: [(Int, UInt8)] = []
        for _ in 0..<200 {
            let at = Int.random(in: 0..<byteCount, using: &generator)
            let value = UInt8.random(in: 1...255, using: &generator)
            file.base.storeBytes(of: value, toByteOffset: at, as: UInt8.self)
            written.append((at, value))
        }
        MemoryPopulation.populate(file.base, byteCount: byteCount, threads: threads)
        #expect(residentPages(file.base, byteCount) == (byteCount + 4095) / 4096)
        var expected: [Int: UInt8] = [:]
        for (at, value) in written { expected[at] = value }
        for (at, value) in expected { #expect(file.base.load(fromByteOffset: at, as: UInt8.self) == value, "byte \(at)") }
        #expect(file.base.load(fromByteOffset: byteCount - 1, as: UInt8.self) == expected[byteCount - 1] ?? 0)
    }

    /// A load into new slabs has them populated by the time it is done (the population runs
    /// beside the reads), and the bytes are the store's.
    @Test func aColdLoadPopulatesItsNewSlabs() async throws {
        let fixture = try LoaderFixture("populate-load")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 24 << 20)
        let loader = try fixture.loader(chunk: 4 << 20)
        let cache = loader.cache
        let reader = try fixture.store.reader(for: try ModelName("m"))
        let reservation = try #require(try cache.reserve(name: "fresh", indexChecksum: 1, index: reader.index))
        #expect(reservation.slabs.allSatisfy { residentPages($0.base, $0.byteCount) == 0 })
        let task = cache.startPopulating(reservation, threads: 2)
        task.wait()
        #expect(reservation.slabs.allSatisfy { $0.populated.load(ordering: .relaxed) && residentPages($0.base, $0.byteCount) == $0.byteCount / 4096 })
        cache.discard(reservation)
        let model = try await loader.load(try ModelName("m"))
        #expect(model.tier == .ssd && model.cached)
        try expectTensorsMatchStore(model, fixture.store)
    }

    /// Evicting keeps the memory pooled (the next load reuses it, the cache does not grow);
    /// releasing gives it back.
    @Test func evictionPoolsTheSlabsAndReleaseFreesThem() async throws {
        let fixture = try LoaderFixture("pool-evict")
        defer { fixture.remove() }
        try fixture.addSynthetic("a", bytes: 6 << 20, seed: 1)
        try fixture.addSynthetic("b", bytes: 6 << 20, seed: 2)
        let loader = try fixture.loader(chunk: 1 << 20)
        let cache = loader.cache
        _ = try await loader.warm(try ModelName("a"))
        let used = cache.usedBytes
        #expect(used > 0 && cache.pooledBytes == 0)
        let freed = try cache.evict(name: "a")
        #expect(freed > 0 && cache.pooledBytes == used && cache.usedBytes == used, "evicted slabs stay pooled")
        _ = try await loader.warm(try ModelName("b"))
        #expect(cache.usedBytes <= used + (1 << 20), "b reused a's slabs: \(cache.usedBytes) bytes against \(used)")
        do {
            let model = try await loader.load(try ModelName("b"))
            try expectTensorsMatchStore(model, fixture.store)
        }
        #expect(try cache.evict(name: "b", releaseMemory: true) > 0)
        #expect(cache.pooledBytes == 0 && cache.usedBytes == 0, "released: \(cache.usedBytes) bytes left")
    }
}
