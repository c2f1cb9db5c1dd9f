import Foundation
import TestSupport
import Testing

@testable import Checkpoint
@testable import Store

#if canImport(Glibc)
    import Glibc
#endif

/// A DRAM hit is never re-verified on the load path; `verify` is how a flipped bit is found.
@Suite struct DRAMVerifyTests {
    @Test func aFlippedBitIsFoundAndTheCopyDropped() async throws {
        let fixture = try LoaderFixture("dram-verify")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 1 << 20)
        let loader = try fixture.loader()
        _ = try await loader.load(try ModelName("m"))
        let reader = try fixture.store.reader(for: try ModelName("m"))
        let clean = try #require(loader.cache.verify(name: "m", reader: reader))
        #expect(clean.corruptTensor == nil && clean.tensors == reader.index.tensors.count && !clean.evicted)

        // The load's pin is let go with its model; a process that another test spawned at that
        // moment may hold a copy of the lock's descriptor until it execs (a loaded CI machine
        // can take a while), so the test waits until nothing pins the entry.
        let unpinned = ContinuousClock.now + .seconds(10)
        while loader.cache.listEntries().contains(where: { $0.name == "m" && $0.pinned }),
            ContinuousClock.now < unpinned
        {
            try await Task.sleep(for: .milliseconds(20))
        }
        try flipFirstByteOfEverySlab(cacheDirectory: fixture.cacheDirectory)
        let bad = try #require(loader.cache.verify(name: "m", reader: reader))
        #expect(bad.corruptTensor != nil && bad.evicted)
        #expect(loader.cache.verify(name: "m", reader: reader) == nil, "the corrupt copy is gone")
        // The next load reads the SSD and gets the right bytes.
        let again = try await loader.load(try ModelName("m"))
        #expect(again.tier == .ssd)
        try expectTensorsMatchStore(again, fixture.store)
    }

    @Test func aCorruptCopyInUseIsMarkedSoNoLoadUsesItAgain() async throws {
        let fixture = try LoaderFixture("dram-verify-pinned")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 1 << 20)
        let loader = try fixture.loader()
        let held = try await loader.load(try ModelName("m"))
        try flipFirstByteOfEverySlab(cacheDirectory: fixture.cacheDirectory)
        let results = loader.cache.verifyAll(store: fixture.store)
        #expect(results.count == 1 && results.first?.corruptTensor != nil && results.first?.evicted == false)
        let next = try await loader.load(try ModelName("m"))
        #expect(next.tier == .ssd)
        try expectTensorsMatchStore(next, fixture.store)
        _ = held
    }

    @Test func aStoppedCheckReturnsNothing() async throws {
        let fixture = try LoaderFixture("dram-verify-stop")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 1 << 20)
        let loader = try fixture.loader()
        _ = try await loader.load(try ModelName("m"))
        let reader = try fixture.store.reader(for: try ModelName("m"))
        #expect(loader.cache.verify(name: "m", reader: reader, bytesPerSecond: 1, shouldStop: { true }) == nil)
        #expect(loader.cache.verify(name: "m", reader: reader)?.corruptTensor == nil)
    }
}
