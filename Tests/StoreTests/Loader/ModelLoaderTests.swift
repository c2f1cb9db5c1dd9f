import Foundation
import Synchronization
import TestSupport
import Testing

@testable import Checkpoint
@testable import Store

/// A store with models converted from the tiny GGUF (and the real one where it matters), and a
/// DRAM cache in a directory of its own.
struct LoaderFixture {
    let directory: TemporaryDirectory
    let store: ModelStore
    let cacheDirectory: String

    init(_ label: String) throws {
        directory = try TemporaryDirectory(label)
        store = ModelStore(root: directory.file("home"))
        cacheDirectory = directory.file("cache")
    }

    /// Converts a synthetic Llama of about `bytes` into the store as `name`.
    func addSynthetic(_ name: String, bytes: Int = 0, seed: UInt64 = 1) throws {
        let source = directory.file("src-\(name)")
        var shape = SyntheticModel.Shape.tiny
        if bytes > 0 {
            shape.hiddenSize = 256
            shape.intermediateSize = 512
            shape.vocabularySize = 1024
            shape.heads = 4
            shape.kvHeads = 2
            shape.layers = max(1, bytes / (2 * (2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 512)))
        }
        try SyntheticModel.writeHuggingFaceDirectory(source, shape: shape, seed: seed)
        try Converter.convert(
            source, to: store.directory(for: try ModelName(name)), options: .init(checksumBlockSize: 64 << 10))
        FileSystem.removeTree(source)
    }

    func loader(budget: Int = 1 << 30, threads: Int = 2, chunk: Int = 256 << 10, remotes: [URL] = []) throws
        -> ModelLoader
    {
        ModelLoader(
            store: store, cache: try DRAMCache(directory: cacheDirectory, budgetBytes: budget, slabBytes: chunk),
            configuration: .init(threads: threads, remotes: remotes))
    }

    func remove() { directory.remove() }
}

/// Every tensor of `model` equals the bytes in the store.
func expectTensorsMatchStore(
    _ model: LoadedModel, _ store: ModelStore, sourceLocation: SourceLocation = #_sourceLocation
) throws {
    let reader = try store.reader(for: try ModelName(model.name))
    for tensor in model.tensors {
        #expect(
            Array(tensor.bytes) == (try reader.tensorBytes(tensor.name)), "\(tensor.name)",
            sourceLocation: sourceLocation)
    }
}

@Suite struct ModelLoaderTests {
    @Test func aColdLoadReadsTheSSDAndTheNextIsADRAMHit() async throws {
        let fixture = try LoaderFixture("loader")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 4 << 20)
        let loader = try fixture.loader()
        let cold = try await loader.load(try ModelName("m"))
        #expect(cold.tier == .ssd)
        #expect(cold.cached)
        try expectTensorsMatchStore(cold, fixture.store)
        let warm = try await loader.load(try ModelName("m"))
        #expect(warm.tier == .dram)
        try expectTensorsMatchStore(warm, fixture.store)
        #expect(try warm.fileContents("tokenizer.json") == cold.fileContents("tokenizer.json"))
        #expect(fixture.store.contains(try ModelName("m")))
    }

    /// Whether pages of temporary files can leave the page cache at all (not on tmpfs).
    static var pageCacheDroppable: Bool {
        guard let directory = try? TemporaryDirectory("page-cache-probe") else { return false }
        defer { directory.remove() }
        let path = directory.file("probe")
        guard FileManager.default.createFile(atPath: path, contents: Data(count: 1 << 20)) else { return false }
        _ = try? readFile(path)
        PageCache.evict(path)
        return PageCache.residentFraction(path) == 0
    }

    @Test(.enabled(if: pageCacheDroppable, "temporary files live on tmpfs, whose pages never leave the page cache"))
    func bufferedReadsDropTheirPageCacheCopy() async throws {
        let fixture = try LoaderFixture("loader-page-cache")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 4 << 20)
        let reader = try fixture.store.reader(for: try ModelName("m"))
        let partitions = reader.index.partitions.map { reader.directory + "/" + $0.file }
        for path in partitions {
            _ = try readFile(path)
            #expect(PageCache.residentFraction(path) > 0.9)
        }
        let buffered = try await fixture.loader().load(try ModelName("m"))
        #expect(try !fixture.loader().configuration.directIO)
        #expect(buffered.tier == .ssd)
        // The DRAM cache holds the bytes now; the page cache keeps no second copy (checked
        // before the comparison below reads the files again).
        for path in partitions { #expect(PageCache.residentFraction(path) == 0) }
        try expectTensorsMatchStore(buffered, fixture.store)
    }

    @Test func bufferedAndDirectReadsLoadTheSameBytes() async throws {
        let fixture = try LoaderFixture("loader-direct")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 4 << 20)
        do {
            let buffered = try await fixture.loader().load(try ModelName("m"))
            #expect(buffered.tier == .ssd)
            try expectTensorsMatchStore(buffered, fixture.store)
        }
        // The entry's shared lock goes with the last copy of its descriptor: a process another
        // test forks at that moment holds one until it execs, so the eviction may need a retry.
        let cache = try DRAMCache(directory: fixture.cacheDirectory, budgetBytes: 1 << 30, slabBytes: 256 << 10)
        for attempt in 1...100 {
            do {
                _ = try cache.evict(name: "m")
                break
            } catch  where attempt < 100 {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        let direct = try await ModelLoader(
            store: fixture.store,
            cache: try DRAMCache(directory: fixture.cacheDirectory, budgetBytes: 1 << 30, slabBytes: 256 << 10),
            configuration: .init(threads: 2, directIO: true)
        ).load(try ModelName("m"))
        #expect(direct.tier == .ssd)
        try expectTensorsMatchStore(direct, fixture.store)
    }

    @Test func theRealModelLoadsIntoViewsOfItsBytes() async throws {
        let fixture = try LoaderFixture("loader-real")
        defer { fixture.remove() }
        try Converter.convert(try RealModel.ggufPath(), to: fixture.store.directory(for: try ModelName("smol")))
        let progress = Mutex<[Int64]>([])
        let model = try await fixture.loader(chunk: 4 << 20).load(try ModelName("smol")) { event in
            progress.withLock { $0.append(event.completedBytes) }
        }
        #expect(model.tensors.count == 272)
        #expect(model.tensor("token_embd.weight")?.dtype == .q8_0)
        try expectTensorsMatchStore(model, fixture.store)
        let reported = progress.withLock { $0 }
        #expect(reported == reported.sorted())
        #expect(reported.last == Int64(model.byteCount))
    }

    @Test func aCorruptByteFailsTheLoadWithTheTensorsNameAndCachesNothing() async throws {
        let fixture = try LoaderFixture("loader-corrupt")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 2 << 20)
        let reader = try fixture.store.reader(for: try ModelName("m"))
        let victim = reader.index.tensors[reader.index.tensors.count / 2]
        try corruptByte(
            of: reader.directory + "/" + reader.index.partitions[victim.partition].file, at: victim.offset + 17)
        let loader = try fixture.loader()
        let error = await #expect(throws: CheckpointError.self) { try await loader.load(try ModelName("m")) }
        #expect(error?.code == .corrupt)
        #expect(error?.description.contains(victim.name) == true)
        #expect(loader.cache.listEntries().isEmpty)
        // Still failing the second time: nothing unverified was kept.
        await #expect(throws: CheckpointError.self) { try await loader.load(try ModelName("m")) }
    }

    @Test func aTruncatedOrMissingPartitionFailsCleanly() async throws {
        let fixture = try LoaderFixture("loader-trunc")
        defer { fixture.remove() }
        try fixture.addSynthetic("m")
        let path = fixture.store.directory(for: try ModelName("m")) + "/data-0000"
        #expect(truncate(path, 4096) == 0)
        let loader = try fixture.loader()
        await #expect(throws: CheckpointError.self) { try await loader.load(try ModelName("m")) }
        try FileManager.default.removeItem(atPath: path)
        await #expect(throws: CheckpointError.self) { try await loader.load(try ModelName("m")) }
        #expect(loader.cache.listEntries().isEmpty)
        await #expect(throws: StoreError.self) { try await loader.load(try ModelName("absent")) }
    }

    @Test func aModelLargerThanTheBudgetStreamsWithoutCaching() async throws {
        let fixture = try LoaderFixture("loader-budget")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 2 << 20)
        let loader = try fixture.loader(budget: 1 << 20)
        let model = try await loader.load(try ModelName("m"))
        #expect(!model.cached)
        try expectTensorsMatchStore(model, fixture.store)
        #expect(loader.cache.listEntries().isEmpty)
    }

    @Test func leastRecentlyUsedUnpinnedModelsAreEvicted() async throws {
        let fixture = try LoaderFixture("loader-lru")
        defer { fixture.remove() }
        for name in ["a", "b", "c"] {
            try fixture.addSynthetic(name, bytes: 1 << 20, seed: UInt64(name.unicodeScalars.first!.value))
        }
        let size = try fixture.loader().cache.footprint(of: fixture.store.reader(for: try ModelName("a")).index)
        let loader = try fixture.loader(budget: 2 * size)
        do {
            _ = try await loader.load(try ModelName("a"))
            try await Task.sleep(for: .milliseconds(20))
            _ = try await loader.load(try ModelName("b"))
        }
        _ = try await loader.load(try ModelName("c"))
        #expect(Set(loader.cache.listEntries().map(\.name)) == ["b", "c"])

        // A pinned model survives: hold b, load a again; c (unpinned, older than a) goes.
        let b = try await loader.load(try ModelName("b"))
        #expect(b.tier == .dram)
        let a = try await loader.load(try ModelName("a"))
        #expect(a.cached)
        #expect(Set(loader.cache.listEntries().map(\.name)) == ["a", "b"])
        #expect(throws: StoreError.self) { try loader.cache.evict(name: "b") }
        try expectTensorsMatchStore(b, fixture.store)
    }

    @Test func concurrentLoadsOfOneModelShareOneRead() async throws {
        let fixture = try LoaderFixture("loader-coalesce")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 8 << 20)
        let loader = try fixture.loader(threads: 1, chunk: 64 << 10)
        let models = try await withThrowingTaskGroup(of: LoadedModel.self) { group in
            for _ in 0..<8 { group.addTask { try await loader.load(try ModelName("m")) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(models.count == 8)
        #expect(models.allSatisfy { $0 === models[0] })
        #expect(models[0].tier == .ssd)
        #expect(loader.cache.hitsAndMisses.misses == 1)
    }

    @Test func hitCountersAreSharedByEveryCacheOnTheDirectory() async throws {
        let fixture = try LoaderFixture("loader-counters")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 1 << 20)
        let first = try fixture.loader()
        _ = try await first.load(try ModelName("m"))  // miss
        _ = try await first.load(try ModelName("m"))  // hit
        // Another cache on the same directory (another process) adds to the same counters.
        let second = try fixture.loader()
        _ = try await second.load(try ModelName("m"))  // hit
        #expect(first.cache.hitsAndMisses == (hits: 1, misses: 1))
        #expect(second.cache.hitsAndMisses == (hits: 1, misses: 0))
        #expect(first.cache.sharedHitsAndMisses == (hits: 2, misses: 1))
        #expect(second.cache.sharedHitsAndMisses == (hits: 2, misses: 1))
    }

    @Test func cancellingTheOnlyCallerStopsTheLoadAndFreesItsMemory() async throws {
        let fixture = try LoaderFixture("loader-cancel")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 32 << 20)
        let loader = try fixture.loader(threads: 1, chunk: 64 << 10)
        // The first hand-out (on a verifier thread) waits until the caller has cancelled, so the
        // load cannot finish first however fast the machine reads.
        let started = Mutex(false)
        let cancelled = DispatchSemaphore(value: 0)
        let task = Task {
            try await loader.load(try ModelName("m")) { _ in
                if started.withLock({ first in
                    defer { first = true }; return !first
                }) {
                    cancelled.wait()
                }
            }
        }
        while !started.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(1)) }
        task.cancel()
        cancelled.signal()
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(loader.cache.listEntries().isEmpty)
        // The next load starts afresh and succeeds.
        let model = try await loader.load(try ModelName("m"))
        #expect(model.tier == .ssd)
    }

    @Test func aRestartedProcessReadoptsTheWarmCache() async throws {
        let fixture = try LoaderFixture("loader-restart")
        defer { fixture.remove() }
        try fixture.addSynthetic("m")
        _ = try await fixture.loader().load(try ModelName("m"))
        // A new cache and loader over the same directory, as after a restart.
        let model = try await fixture.loader().load(try ModelName("m"))
        #expect(model.tier == .dram)
        try expectTensorsMatchStore(model, fixture.store)
        // A re-converted model (new index) does not hit the stale entry.
        FileSystem.removeTree(fixture.store.directory(for: try ModelName("m")))
        try fixture.addSynthetic("m", seed: 99)
        let fresh = try await fixture.loader().load(try ModelName("m"))
        #expect(fresh.tier == .ssd)
        try expectTensorsMatchStore(fresh, fixture.store)
    }

    /// A slab shorter than its entry says (truncated by another process, a full disk) must not
    /// be mapped and touched (SIGBUS): the lookup is a miss, the entry goes, the SSD serves.
    @Test(arguments: [false, true])
    func aTruncatedSlabIsAMissNotACrash(restart: Bool) async throws {
        let fixture = try LoaderFixture("loader-truncated-slab")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 1 << 20)
        let loader = try fixture.loader()
        do {
            let first = try await loader.load(try ModelName("m"))
            #expect(first.cached)
        }
        let slabs = try FileSystem.listDirectory(fixture.cacheDirectory + "/slabs").filter { !$0.hasPrefix(".") }
        #expect(!slabs.isEmpty)
        for slab in slabs { #expect(truncate(fixture.cacheDirectory + "/slabs/" + slab, 4096) == 0) }
        // The same process (its mapping predates the truncation) or a restarted one.
        let again = try await (restart ? fixture.loader() : loader).load(try ModelName("m"))
        #expect(again.tier == .ssd && again.cached, "the damaged entry made way for a new one")
        try expectTensorsMatchStore(again, fixture.store)
        let third = try await (restart ? fixture.loader() : loader).load(try ModelName("m"))
        #expect(third.tier == .dram)
        try expectTensorsMatchStore(third, fixture.store)
    }

    @Test func evictionNeverFreesMemoryInUseUnderConcurrentLoads() async throws {
        let fixture = try LoaderFixture("loader-stress")
        defer { fixture.remove() }
        let names = ["a", "b", "c", "d"]
        for (i, name) in names.enumerated() { try fixture.addSynthetic(name, bytes: 1 << 20, seed: UInt64(i + 1)) }
        let size = try fixture.loader().cache.footprint(of: fixture.store.reader(for: try ModelName("a")).index)
        let loader = try fixture.loader(budget: 2 * size)
        let expected = try Dictionary(
            uniqueKeysWithValues: names.map { name in
                (name, try fixture.store.reader(for: try ModelName(name)).index.tensors.map(\.crc32c))
            })
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<6 {
                group.addTask {
                    var generator = SystemRandomNumberGenerator()
                    for step in 0..<25 {
                        let name = names[(worker + step * 3) % names.count]
                        if step % 5 == 4 {
                            _ = try? loader.cache.evict(name: name)
                            continue
                        }
                        let model = try await loader.load(try ModelName(name))
                        try await Task.sleep(for: .microseconds(Int.random(in: 0...500, using: &generator)))
                        // Held across other loads and evictions, the bytes stay intact.
                        #expect(model.tensors.map { CRC32C.checksum($0.bytes) } == expected[name])
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(loader.cache.usedBytes <= 2 * size)
    }
}

@Suite struct SSDTierTests {
    @Test func theDiskBudgetRemovesLeastRecentlyUsedModelsNotInUse() async throws {
        let fixture = try LoaderFixture("ssd-budget")
        defer { fixture.remove() }
        for name in ["a", "b", "c"] {
            try fixture.addSynthetic(name, bytes: 1 << 20, seed: UInt64(name.unicodeScalars.first!.value))
            try await Task.sleep(for: .milliseconds(20))
        }
        let each = try fixture.store.list()[0].diskByteCount
        // a is in use (protected), b is the oldest of the rest.
        let removed = try fixture.store.evictLeastRecentlyUsed(toFit: Int(each * 2), protecting: ["a"])
        #expect(removed == ["b"])
        #expect(try fixture.store.list().map(\.name) == ["a", "c"])
        // Loading touches a model: c becomes the most recent, a the oldest unprotected.
        _ = try await fixture.loader().load(try ModelName("c"))
        #expect(try fixture.store.evictLeastRecentlyUsed(toFit: Int(each), protecting: []) == ["a"])
    }
}
