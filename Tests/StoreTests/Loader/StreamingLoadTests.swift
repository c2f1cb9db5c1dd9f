import Foundation
import Synchronization
import TestSupport
import Testing

@testable import Checkpoint
@testable import Store

/// Serve while loading: a streaming load hands its model out before the bytes arrive, and each
/// tensor once it is read and verified.
@Suite struct StreamingLoadTests {
    @Test func aStreamedModelIsHandedOutBeforeItsBytesAndEachTensorOnceVerified() async throws {
        let fixture = try LoaderFixture("stream")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 8 << 20)
        let loader = try fixture.loader(threads: 1, chunk: 4 << 20)
        let gate = FirstCallGate()
        let model = try await loader.load(try ModelName("m"), streaming: true) { _ in gate.hold() }
        #expect(model.tier == .ssd)
        #expect(!model.isComplete)
        #expect(model.completion != nil)
        // The layout is the order a forward pass waits in: the layers in order, then the output,
        // then the token embeddings (a pass reads its prompt's rows of them on their own).
        let names = model.index.tensors.map(\.name)
        #expect(names.first == "blk.0.attn_norm.weight" || names.first == "blk.0.attn_q.weight")
        #expect(names.last == "token_embd.weight")
        #expect(!model.hasArrived(["token_embd.weight"]))
        let row = try #require(model.unverifiedBytes(of: "token_embd.weight", ranges: [4096..<4100, 0..<8]))
        let stored = try fixture.store.reader(for: try ModelName("m")).tensorBytes("token_embd.weight")
        #expect(row == [Array(stored[4096..<4100]), Array(stored[0..<8])])
        #expect(model.unverifiedBytes(of: "token_embd.weight", ranges: [0..<(stored.count + 1)]) == nil)
        #expect(model.unverifiedBytes(of: "no.such.tensor", ranges: [0..<1]) == nil)
        let layers = names.compactMap { name -> Int? in
            guard name.hasPrefix("blk.") else { return nil }
            return Int(name.dropFirst(4).prefix { $0 != "." })
        }
        #expect(layers == layers.sorted())
        // The gate holds the first hand-out while the reader goes on: the embeddings are read,
        // and a pass may compute on them, before they are verified.
        let embedding = try #require(model.tensor("token_embd.weight"))
        #expect(try model.waitForReadBytes(of: "token_embd.weight", count: embedding.bytes.count))
        #expect(!model.hasArrived(["token_embd.weight"]))
        #expect(Array(embedding.bytes) == Array(stored))
        #expect(try !model.waitForReadBytes(of: "no.such.tensor", count: 1))
        gate.release()
        try model.waitForTensors(["blk.0.attn_q.weight"])
        let last = try #require(names.last)
        try model.waitForTensors([last])
        try model.waitUntilComplete()
        #expect(model.isComplete)
        #expect(model.completion == nil)
        #expect(model.timings.total >= model.timings.queue)
        #expect(model.timings.read > 0)
        try expectTensorsMatchStore(model, fixture.store)
        // It went into the DRAM cache as a load that does not stream would: another process
        // (another loader on the cache) maps it.
        let again = try await fixture.loader(threads: 1, chunk: 4 << 20).load(try ModelName("m"), streaming: true)
        #expect(again.tier == .dram)
        #expect(again.isComplete)
        try expectTensorsMatchStore(again, fixture.store)
    }

    @Test func aCorruptTensorFailsTheWaitsForItAndCachesNothing() async throws {
        let fixture = try LoaderFixture("stream-corrupt")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 12 << 20)
        let reader = try fixture.store.reader(for: try ModelName("m"))
        let victim = try #require(reader.index.tensors.last { $0.name.hasPrefix("blk.") && $0.byteCount > 4096 })
        try corruptByte(
            of: reader.directory + "/" + reader.index.partitions[victim.partition].file, at: victim.offset + 5)
        // One reader and one verifier hand out in order, so what precedes the victim arrives.
        let loader = try fixture.loader(threads: 1, chunk: 4 << 20)
        let model = try await loader.load(try ModelName("m"), streaming: true)
        try model.waitForTensors(["blk.0.attn_q.weight"])
        // Its bytes were read (a pass may have computed on them), but it never arrives.
        #expect(try model.waitForReadBytes(of: victim.name, count: victim.byteCount))
        let error = #expect(throws: CheckpointError.self) { try model.waitForTensors([victim.name]) }
        #expect(error?.code == .corrupt)
        #expect(error?.description.contains(victim.name) == true)
        #expect(throws: CheckpointError.self) { try model.waitUntilComplete() }
        #expect(!model.isComplete)
        let completion = try #require(model.completion)
        #expect(throws: CheckpointError.self) { try completion.wait() }
        #expect(loader.cache.listEntries().isEmpty)
        // Nothing unverified was kept: a load that does not stream fails too.
        await #expect(throws: CheckpointError.self) { try await loader.load(try ModelName("m")) }
    }

    @Test func droppingAStreamedModelStopsItsLoadAndFreesItsMemory() async throws {
        let fixture = try LoaderFixture("stream-drop")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 16 << 20)
        let loader = try fixture.loader(threads: 1, chunk: 1 << 20)
        let gate = FirstCallGate()
        var model: LoadedModel? = try await loader.load(try ModelName("m"), streaming: true) { _ in gate.hold() }
        let completion = try #require(model?.completion)
        #expect(model?.isComplete == false)
        model = nil
        gate.release()
        #expect(throws: CancellationError.self) { try completion.wait() }
        // The reservation is discarded once the pipeline has stopped.
        let deadline = ContinuousClock.now + .seconds(30)
        while !loader.cache.listEntries().isEmpty && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(loader.cache.listEntries().isEmpty)
        let fresh = try await loader.load(try ModelName("m"))
        #expect(fresh.tier == .ssd)
        try expectTensorsMatchStore(fresh, fixture.store)
    }

    @Test func aLoadJoiningAStreamedOneGetsTheSameModelOnceComplete() async throws {
        let fixture = try LoaderFixture("stream-join")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 8 << 20)
        let loader = try fixture.loader(threads: 1, chunk: 4 << 20)
        let gate = FirstCallGate()
        let streamed = try await loader.load(try ModelName("m"), streaming: true) { _ in gate.hold() }
        let joining = Task { try await loader.load(try ModelName("m")) }
        let sameStream = try await loader.load(try ModelName("m"), streaming: true)
        #expect(sameStream === streamed)
        gate.release()
        let whole = try await joining.value
        #expect(whole === streamed)
        #expect(whole.isComplete)
        try expectTensorsMatchStore(whole, fixture.store)
    }

    @Test func streamingChunksHoldWholeTensorsUpToTheirBoundAndCoverEverySegment() throws {
        let fixture = try LoaderFixture("stream-chunks")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 8 << 20)
        let reader = try fixture.store.reader(for: try ModelName("m"))
        let index = reader.index
        let segments = DRAMCache.plan(index, slabBytes: 4 << 20)
        let total = segments.reduce(0) { $0 + $1.byteCount }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: total, alignment: 4096)
        defer { buffer.deallocate() }
        var position = 0
        let bases = segments.map { segment in
            defer { position += segment.byteCount }
            return buffer + position
        }
        for bound in [64 << 10, 1 << 20, Int.max] {
            let chunks = ChunkPipeline.chunks(index: index, segments: segments, bases: bases, maxChunkBytes: bound)
            // Every tensor in exactly one chunk, chunks in file order, tiling each segment.
            #expect(chunks.flatMap { $0.tensors.map(\.record.name) }.sorted() == index.tensors.map(\.name).sorted())
            #expect(chunks.reduce(0) { $0 + $1.length } == total)
            for chunk in chunks {
                #expect(chunk.offset % 4096 == 0 && chunk.length % 4096 == 0)
                let bytes = chunk.tensors.map { $0.offsetInChunk + $0.record.byteCount }.max() ?? 0
                #expect(chunk.tensors.count == 1 || bytes <= bound, "\(chunk.tensors.map(\.record.name))")
                for (record, offset) in chunk.tensors {
                    #expect(record.offset == chunk.offset + offset)
                }
            }
            if bound == .max { #expect(chunks.count == segments.count) }
        }
    }
}
