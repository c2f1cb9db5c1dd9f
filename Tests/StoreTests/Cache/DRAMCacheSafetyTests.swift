import Foundation
import TestSupport
import Testing

@testable import Checkpoint
@testable import Store

#if canImport(Glibc)
    import Glibc
#endif

/// Who may write the DRAM cache, and caches whose data directory is gone.
@Suite struct DRAMCacheSafetyTests {
    func mode(_ path: String) -> mode_t {
        var info = stat()
        _ = stat(path, &info)
        return info.st_mode & 0o777
    }

    @Test func theCacheDirectoryIsThisUsersAlone() throws {
        let directory = try TemporaryDirectory("cache-mode")
        defer { directory.remove() }
        let fresh = directory.file("fresh")
        _ = try DRAMCache(directory: fresh, budgetBytes: 1 << 20)
        #expect(mode(fresh) == 0o700)
        // A directory others could write is narrowed.
        let open = directory.file("open")
        #expect(mkdir(open, 0o777) == 0 && chmod(open, 0o777) == 0)
        _ = try DRAMCache(directory: open, budgetBytes: 1 << 20)
        #expect(mode(open) == 0o700)
        // A link in its place is refused.
        #expect(symlink(fresh, directory.file("link")) == 0)
        #expect { try DRAMCache(directory: directory.file("link"), budgetBytes: 1 << 20) } throws: { error in
            (error as? StoreError)?.message.contains("not a directory") == true
        }
        // A directory owned by another user is refused (only root can make one to test with).
        if geteuid() == 0 {
            let foreign = directory.file("foreign")
            #expect(mkdir(foreign, 0o700) == 0 && chown(foreign, 12345, 12345) == 0)
            #expect { try DRAMCache(directory: foreign, budgetBytes: 1 << 20) } throws: { error in
                (error as? StoreError)?.message.contains("belongs to uid 12345") == true
            }
        }
    }

    @Test func orphanedCachesGoCachesInUseAndOfLiveDirectoriesStay() async throws {
        let base = try TemporaryDirectory("orphans")
        defer { base.remove() }
        let fixture = try LoaderFixture("orphans-model")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 1 << 20)
        let goneData = base.file("gone-data")
        let liveData = base.file("live-data")
        try FileManager.default.createDirectory(atPath: liveData, withIntermediateDirectories: true)
        // An orphan (its data directory does not exist) with a model in it.
        let orphan = base.file("sllm-orphan")
        let orphanLoader = ModelLoader(
            store: fixture.store, cache: try DRAMCache(directory: orphan, budgetBytes: 1 << 30, owner: goneData))
        _ = try await orphanLoader.load(try ModelName("m"))
        // An orphan still in use (an instance holds its model).
        let busy = base.file("sllm-busy")
        let busyLoader = ModelLoader(
            store: fixture.store, cache: try DRAMCache(directory: busy, budgetBytes: 1 << 30, owner: goneData))
        let held = try await busyLoader.load(try ModelName("m"))
        // A live one, and one without a record.
        _ = try DRAMCache(directory: base.file("sllm-live"), budgetBytes: 1 << 20, owner: liveData)
        _ = try DRAMCache(directory: base.file("sllm-unrecorded"), budgetBytes: 1 << 20)

        let removed = DRAMCache.removeOrphans(in: base.path)
        #expect(removed == [orphan])
        #expect(!FileSystem.exists(orphan))
        #expect(
            FileSystem.exists(busy) && FileSystem.exists(base.file("sllm-live"))
                && FileSystem.exists(base.file("sllm-unrecorded")))
        try expectTensorsMatchStore(held, fixture.store)
    }

    /// A lock let go a moment ago can still be held by a process spawned at that instant: it
    /// shares the lock's open file until its `exec` closes it (a test suite or a server that
    /// spawns processes meets this). A removal that must happen waits that moment out; a damaged
    /// entry that stays held is marked incomplete, so no lookup hits it, and goes once let go.
    @Test func aLockLetGoAMomentAgoDoesNotKeepAnEntry() async throws {
        let fixture = try LoaderFixture("cache-lock-moment")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 1 << 20)
        let loader = try fixture.loader()
        let checksum = try fixture.store.reader(for: try ModelName("m")).indexChecksum
        _ = try await loader.load(try ModelName("m"))
        let cache = loader.cache
        let entry = try #require(cache.listEntries().first)
        let path = cache.entriesDirectory + "/" + entry.key
        // The spawned process's share of a pin: a shared lock through another open file.
        func holdACopy() -> Int32 {
            let copy = open(path + "/lock", O_RDONLY | O_CLOEXEC)
            #expect(copy >= 0 && flock(copy, LOCK_SH) == 0)
            return copy
        }
        let copy = holdACopy()
        #expect(!cache.removeEntry(path), "held, and no patience")
        Thread {
            usleep(20_000)
            close(copy)
        }.start()
        #expect(cache.removeEntry(path, patience: .seconds(30)))
        #expect(cache.listEntries().isEmpty)

        // Cached again; then a lookup finds it damaged (a slab truncated) while a copy of a pin
        // is held past the patience: the entry is marked incomplete, not left for the next hit.
        _ = try await loader.load(try ModelName("m"))
        let meta = try #require(cache.readMeta(path))
        let stuck = holdACopy()
        let slab = try #require(meta.segments.first?.slabs.first)
        #expect(truncate(cache.slabsDirectory + "/" + slab, 4096) == 0)
        #expect(cache.lookup(name: "m", indexChecksum: checksum) == nil)
        #expect(cache.readMeta(path)?.complete == false)
        #expect(cache.lookup(name: "m", indexChecksum: checksum) == nil)
        let again = try await loader.load(try ModelName("m"))
        #expect(again.tier == .ssd && !again.cached, "the held entry is neither hit nor refilled")
        close(stuck)
        let refilled = try await loader.load(try ModelName("m"))
        #expect(refilled.tier == .ssd && refilled.cached)
        try expectTensorsMatchStore(refilled, fixture.store)
        #expect(try await loader.load(try ModelName("m")).tier == .dram)
    }
}
