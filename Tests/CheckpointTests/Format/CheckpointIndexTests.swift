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

    @Test func versionTwoKeepsTheTensorsOutOfTheJSON() throws {
        let index = try tinyIndex()
        #expect(index.formatVersion == 2)
        let bytes = try index.encoded()
        let body = Array(bytes[CheckpointIndex.headerByteCount...])
        let jsonLength = Int(readUInt32(body, at: 0))
        let json = try #require(
            try JSONSerialization.jsonObject(with: Data(body[4..<4 + jsonLength])) as? [String: Any])
        #expect((json["tensors"] as? [Any])?.isEmpty == true)
        #expect(json["config"] != nil && json["partitions"] != nil)
        // The table holds every tensor: the body is far larger than its JSON.
        #expect(body.count - 4 - jsonLength > index.tensors.count * TensorTable.minimumRecordBytes)
    }

    @Test func versionOneIndexesStillRead() throws {
        let directory = try TemporaryDirectory("index-v1")
        defer { directory.remove() }
        let (path, current) = try writeTinyCheckpoint(in: directory)
        var legacy = current
        legacy.formatVersion = 1
        let bytes = try legacy.encoded()
        #expect(Array(bytes[24..<26]) == Array("{\"".utf8))  // all JSON
        #expect(try CheckpointIndex.decode(bytes) == legacy)
        // A checkpoint directory converted by an older build opens and reads as before.
        try Data(bytes).write(to: URL(fileURLWithPath: path + "/" + CheckpointIndex.fileName))
        let reader = try CheckpointReader(directory: path)
        #expect(reader.index.tensors == current.tensors)
        #expect(try reader.tensorBytes(current.tensors[1].name).count == current.tensors[1].byteCount)
    }

    /// Re-wraps a version-2 body with a valid header, so the parser behind the checksum runs.
    private func wrapped(_ body: [UInt8]) -> [UInt8] {
        var bytes = Array("SLLMCKPT".utf8)
        withUnsafeBytes(of: UInt32(2).littleEndian) { bytes += $0 }
        withUnsafeBytes(of: CRC32C.checksum(body).littleEndian) { bytes += $0 }
        withUnsafeBytes(of: UInt64(body.count).littleEndian) { bytes += $0 }
        return bytes + body
    }

    @Test func aBrokenTensorTableIsNamed() throws {
        let index = try tinyIndex()
        let body = Array(try index.encoded()[CheckpointIndex.headerByteCount...])
        let jsonEnd = 4 + Int(readUInt32(body, at: 0))
        func message(_ body: [UInt8]) throws -> String {
            try #require(throws: CheckpointError.self) { try CheckpointIndex.decode(wrapped(body)) }.description
        }
        #expect(try message(Array(body[..<(body.count - 3)])).contains("the checksum of"))
        #expect(try message(body + [0]).contains("1 bytes follow its tensor table"))
        #expect(try message(Array(body[..<jsonEnd]) + [0xff, 0xff, 0xff, 0x7f]).contains("claims 2147483647 tensors"))
        var badType = body
        let nameLength = Int(readUInt64(body, at: jsonEnd + 4))
        badType[jsonEnd + 4 + 8 + nameLength] = 99
        #expect(try message(badType).contains("unknown dtype number 99"))
        var badLength = body
        badLength[0] = 0xff
        badLength[1] = 0xff
        badLength[2] = 0xff
        #expect(try message(badLength).contains("JSON length runs past its end"))
        // Tensors listed in the JSON of a version-2 index are refused, not merged.
        var doubled = index
        doubled.formatVersion = 1
        let json = Array(try doubled.encoded()[CheckpointIndex.headerByteCount...])
        var withTensors: [UInt8] = []
        withUnsafeBytes(of: UInt32(json.count).littleEndian) { withTensors += $0 }
        withTensors += json + body[jsonEnd...]
        #expect(try message(withTensors).contains("lists its tensors in its table"))
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
