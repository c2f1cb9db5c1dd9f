import Foundation
import Synchronization
import TestSupport
import Testing

@testable import Checkpoint
@testable import Store

#if canImport(Glibc)
    import Glibc
#endif

/// A flag shared with a closure.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .relaxed) }
    func set(_ on: Bool) { value.store(on, ordering: .relaxed) }
}

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
        for (at, value) in expected {
            #expect(file.base.load(fromByteOffset: at, as: UInt8.self) == value, "byte \(at)")
        }
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
        #expect(
            reservation.slabs.allSatisfy {
                $0.populated.load(ordering: .relaxed) && residentPages($0.base, $0.byteCount) == $0.byteCount / 4096
            })
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

    /// A tensor larger than a slab lies in several standard slabs mapped one after another:
    /// every slab file has the one size, a new process (a new cache object) maps the entry and
    /// reads the same bytes, the DRAM check passes, and another model reuses the slabs.
    @Test func tensorsLargerThanASlabSpanStandardSlabs() async throws {
        let fixture = try LoaderFixture("pool-span")
        defer { fixture.remove() }
        try fixture.addSynthetic("a", bytes: 6 << 20, seed: 1)
        try fixture.addSynthetic("b", bytes: 6 << 20, seed: 2)
        let chunk = 128 << 10  // the 512 KiB embedding table takes four slabs
        let loader = try fixture.loader(chunk: chunk)
        let cache = loader.cache
        let reader = try fixture.store.reader(for: try ModelName("a"))
        let segments = DRAMCache.plan(reader.index, slabBytes: chunk)
        #expect(
            segments.contains { cache.slabCount(for: $0.byteCount) > 1 },
            "the fixture needs a tensor larger than a slab")
        do {
            let model = try await loader.load(try ModelName("a"))
            try expectTensorsMatchStore(model, fixture.store)
        }
        let slabs = try FileManager.default.contentsOfDirectory(atPath: fixture.cacheDirectory + "/slabs")
        #expect(
            !slabs.isEmpty
                && slabs.allSatisfy { FileSystem.fileSize(fixture.cacheDirectory + "/slabs/" + $0) == Int64(chunk) })
        #expect(cache.usedBytes == cache.footprint(of: reader.index))
        // Another process: nothing mapped yet.
        let other = ModelLoader(
            store: fixture.store,
            cache: try DRAMCache(directory: fixture.cacheDirectory, budgetBytes: 1 << 30, slabBytes: chunk))
        do {
            let model = try await other.load(try ModelName("a"))
            #expect(model.tier == .dram)
            try expectTensorsMatchStore(model, fixture.store)
        }
        #expect(other.cache.verify(name: "a", reader: reader)?.corruptTensor == nil)
        let used = cache.usedBytes
        try cache.evict(name: "a")
        #expect(cache.usage() == DRAMCache.Usage(entryBytes: 0, pooledBytes: used, orphanBytes: 0))
        do {
            let model = try await other.load(try ModelName("b"))
            #expect(model.tier == .ssd)
            try expectTensorsMatchStore(model, fixture.store)
        }
        #expect(cache.usedBytes == used, "b took a's slabs, spans included")
        // The first process loads a again into what b left in the pool... after b is gone.
        try cache.evict(name: "b")
        do {
            let model = try await loader.load(try ModelName("a"))
            try expectTensorsMatchStore(model, fixture.store)
        }
        #expect(cache.usedBytes == used)
    }

    /// Slabs of another size (an older cache, another --chunk-size) are orphans: counted as such
    /// and deleted when a load needs room or at reclaim.
    @Test func slabsOfAnotherSizeAreOrphansAndReclaimed() async throws {
        let fixture = try LoaderFixture("pool-odd")
        defer { fixture.remove() }
        try fixture.addSynthetic("a", bytes: 2 << 20)
        let loader = try fixture.loader(chunk: 256 << 10)
        let cache = loader.cache
        let odd = try UnsafeSharedMemoryFile.create(fixture.cacheDirectory + "/slabs/s999-old", byteCount: 3 << 20)
        _ = odd
        #expect(cache.usage() == DRAMCache.Usage(entryBytes: 0, pooledBytes: 0, orphanBytes: 3 << 20))
        _ = try await loader.warm(try ModelName("a"))
        #expect(cache.usage().orphanBytes == 0, "a load deletes slabs it cannot use")
        #expect(!FileSystem.exists(fixture.cacheDirectory + "/slabs/s999-old"))
    }

    /// A reservation knows pooled slabs by name without reading their sizes; a slab file that
    /// is not the size its name says (a crash of a build that named slabs before sizing them)
    /// is replaced when a load takes it, and the load goes on.
    @Test func aPooledSlabOfTheWrongSizeIsReplaced() async throws {
        let fixture = try LoaderFixture("pool-short")
        defer { fixture.remove() }
        try fixture.addSynthetic("a", bytes: 200 << 10)
        let loader = try fixture.loader(chunk: 256 << 10)
        let short = fixture.cacheDirectory + "/slabs/s64-0000000000000000"
        #expect(FileManager.default.createFile(atPath: short, contents: Data()))
        let model = try await loader.load(try ModelName("a"))
        try expectTensorsMatchStore(model, fixture.store)
        #expect(!FileSystem.exists(short))
        for name in try FileManager.default.contentsOfDirectory(atPath: fixture.cacheDirectory + "/slabs") {
            #expect(name.hasPrefix("s64-"), "a slab of 256 KiB is named for its 64 pages: \(name)")
            #expect(FileSystem.fileSize(fixture.cacheDirectory + "/slabs/" + name) == 256 << 10)
        }
    }

    /// A loader that dies mid-load leaves an incomplete entry nobody locks: its slabs count as
    /// orphaned until `reclaim()` returns them to the pool.
    @Test func aDeadLoadersSlabsAreOrphansUntilReclaimed() throws {
        let fixture = try LoaderFixture("pool-dead")
        defer { fixture.remove() }
        try fixture.addSynthetic("a", bytes: 2 << 20)
        let cache = try fixture.loader(chunk: 256 << 10).cache
        let reader = try fixture.store.reader(for: try ModelName("a"))
        let reservation = try #require(
            try cache.reserve(name: "a", indexChecksum: reader.indexChecksum, index: reader.index))
        let bytes = cache.footprint(of: reader.index)
        #expect(
            cache.usage() == DRAMCache.Usage(entryBytes: bytes, pooledBytes: 0, orphanBytes: 0),
            "a live load holds its slabs")
        close(reservation.lockDescriptor)  // the loader's process died: the kernel drops its lock
        #expect(cache.usage() == DRAMCache.Usage(entryBytes: 0, pooledBytes: 0, orphanBytes: bytes))
        #expect(cache.listEntries().map(\.complete) == [false])
        #expect(cache.reclaim() == bytes)
        #expect(cache.usage() == DRAMCache.Usage(entryBytes: 0, pooledBytes: bytes, orphanBytes: 0))
        #expect(cache.listEntries().isEmpty)
    }

    /// The background fill adds populated slabs up to the budget, stands aside while a load
    /// reads or requests generate, and the next load takes the pooled slabs instead of new ones.
    @Test func theFillerFillsThePoolToTheBudgetAndStandsAsideForLoads() async throws {
        let fixture = try LoaderFixture("pool-fill")
        defer { fixture.remove() }
        try fixture.addSynthetic("a", bytes: 2 << 20)
        let loader = try fixture.loader(budget: 24 << 20, chunk: 1 << 20)
        let cache = loader.cache
        var settings = PoolFiller.Settings()
        settings.fillFloor = 0
        settings.releaseFloor = 0
        settings.interval = 0.05
        let requests = Flag()
        let filler = PoolFiller(cache: cache, settings: settings, busy: { requests.isSet })
        cache.loadsInFlight.store(1, ordering: .relaxed)  // a load is reading
        filler.start()
        defer { filler.stop() }
        try await Task.sleep(for: .milliseconds(300))
        #expect(cache.usage().pooledBytes == 0, "the fill waits while a load reads")
        requests.set(true)  // requests generate
        cache.loadsInFlight.store(0, ordering: .relaxed)
        try await Task.sleep(for: .milliseconds(300))
        #expect(cache.usage().pooledBytes == 0, "the fill waits while requests generate")
        requests.set(false)
        let report = try #require(filler.waitUntilFilled(timeout: 60))
        #expect(report.addedBytes == 24 << 20 && !report.limitedByMemory && report.pausedSeconds > 0)
        #expect(cache.usage() == DRAMCache.Usage(entryBytes: 0, pooledBytes: 24 << 20, orphanBytes: 0))
        let slabs = try FileManager.default.contentsOfDirectory(atPath: fixture.cacheDirectory + "/slabs")
        _ = try await loader.warm(try ModelName("a"))
        #expect(cache.usedBytes == 24 << 20, "the load took pooled slabs")
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: fixture.cacheDirectory + "/slabs").sorted()
                == slabs.sorted())
    }

    /// Under memory pressure the pool goes back to the kernel, and the fill adds nothing.
    @Test func memoryPressureGivesThePoolBack() async throws {
        let fixture = try LoaderFixture("pool-pressure")
        defer { fixture.remove() }
        let cache = try fixture.loader(budget: 16 << 20, chunk: 1 << 20).cache
        var settings = PoolFiller.Settings()
        settings.fillFloor = 0
        settings.releaseFloor = 0
        let filler = PoolFiller(cache: cache, settings: settings)
        filler.start()
        #expect(filler.waitUntilFilled(timeout: 60)?.addedBytes == 16 << 20)
        filler.stop()
        // The machine now has 100 MiB available: below the release floor of 200 MiB.
        settings.fillFloor = 300 << 20
        settings.releaseFloor = 200 << 20
        let pressed = PoolFiller(
            cache: cache, settings: settings, memory: { MemoryStatus(availableBytes: 100 << 20, limitBytes: 1 << 30) })
        pressed.start()
        defer { pressed.stop() }
        let report = try #require(pressed.waitUntilFilled(timeout: 60))
        #expect(report.limitedByMemory && report.addedBytes == 0)
        #expect(cache.usage().pooledBytes == 0, "the pool went back to the kernel")
    }

    /// The machine's memory as the fill sees it.
    @Test func memoryStatusReadsThisMachine() throws {
        let status = try #require(MemoryStatus.current())
        #expect(status.limitBytes > 0 && status.availableBytes > 0 && status.availableBytes <= status.limitBytes)
    }
}
