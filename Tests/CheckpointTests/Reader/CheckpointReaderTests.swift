import Foundation
import TestSupport
import Testing

@testable import Checkpoint

@Suite struct CheckpointReaderTests {
    @Test func aCorruptTensorByteIsReportedByName() throws {
        let directory = try TemporaryDirectory("reader")
        defer { directory.remove() }
        let (path, index) = try writeTinyCheckpoint(in: directory, options: .init(checksumBlockSize: 4096))
        let victim = try #require(index.tensor(named: "blk.0.ffn_up.weight"))
        try corruptByte(of: path + "/" + index.partitions[victim.partition].file, at: victim.offset + 100)
        let error = try #require(throws: CheckpointError.self) { try CheckpointReader(directory: path).verify() }
        #expect(error.code == .corrupt)
        #expect(error.description.contains("blk.0.ffn_up.weight"))
    }

    @Test func sharedBlocksStillNameTheRightTensor() throws {
        let directory = try TemporaryDirectory("reader")
        defer { directory.remove() }
        // 1 MiB blocks: every tensor of the tiny model shares the first block.
        let (path, index) = try writeTinyCheckpoint(in: directory)
        let victim = try #require(index.tensor(named: "blk.0.attn_v.weight"))
        try corruptByte(of: path + "/data-0000", at: victim.offset + 7)
        let error = try #require(throws: CheckpointError.self) { try CheckpointReader(directory: path).verify() }
        #expect(error.description.contains("`blk.0.attn_v.weight`"))
    }

    @Test func corruptPaddingIsReportedAsPadding() throws {
        let directory = try TemporaryDirectory("reader")
        defer { directory.remove() }
        let (path, index) = try writeTinyCheckpoint(in: directory)
        let first = index.tensors[0]
        try corruptByte(of: path + "/data-0000", at: first.offset + first.byteCount + 1)
        let error = try #require(throws: CheckpointError.self) { try CheckpointReader(directory: path).verify() }
        #expect(error.description.contains("padding"))
    }

    @Test func aTruncatedPartitionFailsAtOpen() throws {
        let directory = try TemporaryDirectory("reader")
        defer { directory.remove() }
        let (path, _) = try writeTinyCheckpoint(in: directory)
        try FileManager.default.removeItem(atPath: path + "/data-0000")
        try writeFile(path + "/data-0000", [0, 1, 2])
        let error = try #require(throws: CheckpointError.self) { try CheckpointReader(directory: path) }
        #expect(error.description.contains("truncated"))
    }

    @Test func aMissingPartitionFailsAtOpen() throws {
        let directory = try TemporaryDirectory("reader")
        defer { directory.remove() }
        let (path, _) = try writeTinyCheckpoint(in: directory)
        try FileManager.default.removeItem(atPath: path + "/data-0000")
        let error = try #require(throws: CheckpointError.self) { try CheckpointReader(directory: path) }
        #expect(error.description.contains("missing its partition file data-0000"))
    }

    @Test func aCorruptTokenizerFileIsReported() throws {
        let directory = try TemporaryDirectory("reader")
        defer { directory.remove() }
        let (path, _) = try writeTinyCheckpoint(in: directory)
        try corruptByte(of: path + "/gguf-tokenizer.json", at: 3)
        let error = try #require(throws: CheckpointError.self) { try CheckpointReader(directory: path).verify() }
        #expect(error.description.contains("gguf-tokenizer.json"))
    }

    @Test func aDirectoryWithoutIndexIsNotACheckpoint() throws {
        let directory = try TemporaryDirectory("reader")
        defer { directory.remove() }
        let error = try #require(throws: CheckpointError.self) { try CheckpointReader(directory: directory.path) }
        #expect(error.code == .notFound)
    }
}
