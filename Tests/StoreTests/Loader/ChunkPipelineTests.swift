import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

@testable import Checkpoint
@testable import Store

/// Records what a device-style consumer would copy, in the order it is handed chunks.
final class RecordingConsumer: LoadConsumer {
    let chunks = Mutex<[(partition: Int, offset: Int, bytes: [UInt8])]>([])
    func consume(_ chunk: LoadedChunk) throws {
        chunks.withLock { $0.append((chunk.partition, chunk.offset, Array(chunk.bytes))) }
    }
}

@Suite struct ChunkPipelineTests {
    /// The model's segments for slabs of `slab` bytes, laid out one after another in fresh memory
    /// (alive as long as the returned value), and its chunks there.
    static func plan(_ reader: CheckpointReader, slab: Int) throws
        -> (memory: UnsafeAnonymousMemory, segments: [DRAMCache.Segment], chunks: [ChunkPipeline.Chunk])
    {
        let segments = DRAMCache.plan(reader.index, slabBytes: slab)
        let memory = try UnsafeAnonymousMemory(byteCount: segments.reduce(0) { $0 + $1.byteCount })
        var position = 0
        let bases = segments.map { segment in
            defer { position += segment.byteCount }
            return memory.base + position
        }
        return (memory, segments, ChunkPipeline.chunks(index: reader.index, segments: segments, bases: bases))
    }

    @Test(arguments: [1, 2, 4])
    func aConsumerGetsEveryVerifiedChunkInFileOrder(readers: Int) throws {
        let fixture = try LoaderFixture("pipeline")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 4 << 20)
        let reader = try fixture.store.reader(for: try ModelName("m"))
        let (memory, segments, chunks) = try Self.plan(reader, slab: 256 << 10)
        defer { withExtendedLifetime(memory) {} }
        let source = try LocalChunkSource(
            directory: reader.directory, index: reader.index, directIO: true, logger: Logger(label: "test"))
        let consumer = RecordingConsumer()
        _ = try ChunkPipeline(threads: readers, verifiers: 2).run(
            chunks, source: source, partitionFiles: reader.index.partitions.map(\.file), consumer: consumer,
            isCancelled: { false }, progress: nil)
        let received = consumer.chunks.withLock { $0 }
        #expect(received.map(\.offset) == segments.map(\.offset))
        let partition = try readFile(reader.directory + "/data-0000")
        for chunk in received {
            #expect(chunk.bytes == Array(partition[chunk.offset..<(chunk.offset + chunk.bytes.count)]))
        }
    }

    /// A chunk larger than a piece is read piece by piece, each piece's end reported (whole
    /// pages, increasing, the last at the chunk's end) before the chunk is verified; a chunk no
    /// larger is reported once, whole. What a report covers is in memory.
    @Test(arguments: [300 << 10, 2 << 20])
    func largeChunksAreReadPieceByPieceAndEachPieceReported(piece: Int) throws {
        let fixture = try LoaderFixture("pipeline-pieces")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 4 << 20)
        let reader = try fixture.store.reader(for: try ModelName("m"))
        // Chunks of 0.75-1 MiB: each is read in pieces of 300 KiB, and whole with 2 MiB pieces.
        let (memory, _, chunks) = try Self.plan(reader, slab: 1 << 20)
        defer { withExtendedLifetime(memory) {} }
        #expect(chunks.allSatisfy { $0.length > 2 * (300 << 10) && $0.length <= 2 << 20 }, "\(chunks.map(\.length))")
        let partition = try readFile(reader.directory + "/data-0000")
        let boxed = UncheckedSendable(chunks)
        // Each report's bytes are checked against the file when it is made.
        let reports = Mutex<[Int: [Int]]>([:])
        let wrong = Mutex<[String]>([])
        let source = try LocalChunkSource(
            directory: reader.directory, index: reader.index, directIO: false, logger: Logger(label: "test"))
        _ = try ChunkPipeline(threads: 2, verifiers: 1).run(
            chunks, source: source, partitionFiles: reader.index.partitions.map(\.file), consumer: InPlaceConsumer(),
            isCancelled: { false }, progress: nil,
            readProgress: { k, bytes in
                let chunk = boxed.value[k]
                let read = Array(UnsafeRawBufferPointer(start: chunk.destination, count: bytes))
                if read != Array(partition[chunk.offset..<(chunk.offset + bytes)]) {
                    wrong.withLock { $0.append("chunk \(k) up to \(bytes)") }
                }
                reports.withLock { $0[k, default: []].append(bytes) }
            }, pieceBytes: piece)
        #expect(wrong.withLock { $0 }.isEmpty)
        let reported = reports.withLock { $0 }
        for (k, chunk) in chunks.enumerated() {
            let ends = reported[k] ?? []
            if chunk.length > piece {
                let expected = Array(stride(from: piece, to: chunk.length, by: piece)) + [chunk.length]
                #expect(ends == expected, "chunk \(k)")
            } else {
                #expect(ends == [chunk.length], "chunk \(k)")
            }
        }
    }

    @Test func segmentsHoldWholeTensorsAndFitTheirSlabs() throws {
        let fixture = try LoaderFixture("pipeline")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 4 << 20)
        let index = try fixture.store.reader(for: try ModelName("m")).index
        let slab = 256 << 10
        let segments = DRAMCache.plan(index, slabBytes: slab)
        for tensor in index.tensors {
            let holders = segments.filter {
                $0.partition == tensor.partition && tensor.offset >= $0.offset
                    && tensor.offset + tensor.byteCount <= $0.offset + $0.byteCount
            }
            #expect(holders.count == 1, "\(tensor.name)")
            if tensor.byteCount <= slab { #expect(holders.first!.byteCount <= slab) }
        }
        #expect(segments.allSatisfy { $0.offset % 4096 == 0 && $0.byteCount % 4096 == 0 })
    }
}
