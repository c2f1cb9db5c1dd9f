import Foundation
import TestSupport
import Testing

@testable import Checkpoint

@Suite struct CheckpointIndexTests {
    func tinyIndex() throws -> CheckpointIndex {
        let directory = try TemporaryDirectory("index")
        defer { directory.remove() }
        return try writeTinyCheckpoint(in: directory).index
    }

    @Test func encodeDecodeRoundTrips() throws {
        let index = try tinyIndex()
        #expect(try CheckpointIndex.decode(index.encoded()) == index)
    }

    @Test func wrongMagicIsRejected() throws {
        var bytes = try tinyIndex().encoded()
        bytes[0] = UInt8(ascii: "X")
        let error = try #require(throws: CheckpointError.self) { try CheckpointIndex.decode(bytes) }
        #expect(error.description.contains("wrong magic"))
    }

    @Test func aNewerFormatVersionAsksForAnUpgrade() throws {
        var bytes = try tinyIndex().encoded()
        bytes[8] = 9
        let error = try #require(throws: CheckpointError.self) { try CheckpointIndex.decode(bytes) }
        #expect(error.code == .unsupported)
        #expect(error.description.contains("format version 9"))
    }

    @Test func aFlippedBodyByteFailsTheChecksum() throws {
        var bytes = try tinyIndex().encoded()
        bytes[40] ^= 0x01
        let error = try #require(throws: CheckpointError.self) { try CheckpointIndex.decode(bytes) }
        #expect(error.code == .corrupt)
    }

    @Test func truncationIsRejected() throws {
        let bytes = try tinyIndex().encoded()
        for length in [0, 10, 24, bytes.count - 1] {
            #expect(throws: CheckpointError.self) { try CheckpointIndex.decode(Array(bytes[0..<length])) }
        }
    }

    @Test func inconsistentRecordsAreRejected() throws {
        let index = try tinyIndex()
        var unaligned = index
        unaligned.tensors[1].offset += 8
        var pastEnd = index
        pastEnd.tensors[0].offset = index.partitions[0].byteCount
        var wrongSize = index
        wrongSize.tensors[0].byteCount += 4
        var badPartition = index
        badPartition.tensors[0].partition = 7
        var badBlocks = index
        badBlocks.partitions[0].blockChecksums.append(1)
        var badFile = index
        badFile.files[0].name = "../x"
        for broken in [unaligned, pastEnd, wrongSize, badPartition, badBlocks, badFile] {
            #expect(throws: CheckpointError.self) { try broken.validate() }
        }
    }
}
