import Foundation
import TestSupport
import Testing

@testable import Checkpoint

@Suite struct GGUFFileTests {
    func parse(_ bytes: [UInt8]) throws(CheckpointError) -> GGUFFile {
        var result: Result<GGUFFile, CheckpointError> = .failure(.format("unreached"))
        bytes.withUnsafeBytes { raw in
            result = Result { () throws(CheckpointError) in
                try GGUFFile.parse(raw, fileSize: bytes.count, name: "test.gguf")
            }
        }
        return try result.get()
    }

    func expectError(_ bytes: [UInt8], mentioning text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try parse(bytes)
            Issue.record("parsed a broken file", sourceLocation: sourceLocation)
        } catch {
            #expect(error.description.contains(text), "\(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func theTinyModelParses() throws {
        let gguf = try parse(GGUFBuilder.tinyLlama().build())
        #expect(gguf.version == 3)
        #expect(gguf.tensors.count == 12)
        #expect(gguf.value("llama.block_count")?.intValue == 1)
        #expect(gguf.value("llama.attention.layer_norm_rms_epsilon")?.doubleValue == 1e-5)
        #expect(gguf.tensors.last?.dtype == .q8_0)
        #expect(gguf.tensors[0].shape == [8, 32])
    }

    @Test func version2Parses() throws {
        var builder = GGUFBuilder.tinyLlama()
        builder.version = 2
        #expect(try parse(builder.build()).version == 2)
    }

    @Test func wrongMagic() {
        var bytes = GGUFBuilder.tinyLlama().build()
        bytes[0] = 0
        expectError(bytes, mentioning: "not a GGUF file")
    }

    @Test func version1IsUnsupported() {
        var builder = GGUFBuilder.tinyLlama()
        builder.version = 1
        expectError(builder.build(), mentioning: "version 1")
    }

    @Test func bigEndianIsNamed() {
        var builder = GGUFBuilder.tinyLlama()
        builder.version = UInt32(3).byteSwapped
        expectError(builder.build(), mentioning: "big-endian")
    }

    @Test func everyTruncationFailsCleanly() {
        let bytes = GGUFBuilder.tinyLlama().build()
        // Up to the last tensor's final byte (what follows is padding, which may be missing).
        for length in stride(from: 0, to: bytes.count - 32, by: 7) {
            #expect(throws: CheckpointError.self) { try parse(Array(bytes[0..<length])) }
        }
    }

    @Test func unknownTensorTypeIsNamed() {
        var builder = GGUFBuilder.tinyLlama()
        builder.tensors[1].type = 99
        expectError(builder.build(), mentioning: "unknown or unsupported GGML type 99")
    }

    @Test func offsetsPastTheEndAreRejected() {
        let builder = GGUFBuilder.tinyLlama()
        var offsets = (0..<builder.tensors.count).map { UInt64($0) * 8192 }
        offsets[3] = 1 << 40
        expectError(builder.build(offsets: offsets), mentioning: "blk.0.attn_k.weight")
    }

    @Test func misalignedOffsetsAreRejected() {
        let builder = GGUFBuilder.tinyLlama()
        var offsets = (0..<builder.tensors.count).map { UInt64($0) * 8192 }
        offsets[2] = 3
        expectError(builder.build(offsets: offsets), mentioning: "not aligned")
    }

    @Test func absurdCountsAreRejectedBeforeAllocating() {
        var bytes = GGUFBuilder.tinyLlama().build()
        // tensor count at offset 8
        withUnsafeBytes(of: UInt64(1 << 60).littleEndian) { bytes.replaceSubrange(8..<16, with: $0) }
        expectError(bytes, mentioning: "tensors")
        bytes = GGUFBuilder.tinyLlama().build()
        withUnsafeBytes(of: UInt64.max.littleEndian) { bytes.replaceSubrange(16..<24, with: $0) }
        expectError(bytes, mentioning: "metadata entries")
        // first key length at offset 24
        bytes = GGUFBuilder.tinyLlama().build()
        withUnsafeBytes(of: UInt64(1 << 50).littleEndian) { bytes.replaceSubrange(24..<32, with: $0) }
        expectError(bytes, mentioning: "claims")
    }

    @Test func absurdArrayLengthIsRejected() {
        var builder = GGUFBuilder()
        builder.metadata = [("tokenizer.ggml.tokens", .stringArray(["a"]))]
        var bytes = builder.build()
        // key string (8 + 20) after the 24-byte header, then type u32, element type u32, then count u64.
        let countOffset = 24 + 8 + 20 + 4 + 4
        withUnsafeBytes(of: UInt64(1 << 40).littleEndian) {
            bytes.replaceSubrange(countOffset..<(countOffset + 8), with: $0)
        }
        expectError(bytes, mentioning: "claims")
    }

    @Test func tooManyDimensionsAreRejected() {
        var builder = GGUFBuilder.tinyLlama()
        builder.tensors[1].dimensions = [1, 1, 1, 1, 32]
        expectError(builder.build(), mentioning: "5 dimensions")
    }

    @Test func quantizedRowsMustBeWholeBlocks() {
        var builder = GGUFBuilder.tinyLlama()
        builder.tensors[11].dimensions = [16, 2]
        expectError(builder.build(), mentioning: "does not fit q8_0 blocks")
    }

    @Test func duplicateKeysAndTensorsAreRejected() {
        var builder = GGUFBuilder.tinyLlama()
        builder.metadata.append(("llama.block_count", .uint32(2)))
        expectError(builder.build(), mentioning: "appears twice")
        builder = GGUFBuilder.tinyLlama()
        builder.tensors[2].name = builder.tensors[1].name
        expectError(builder.build(), mentioning: "appears twice")
    }
}
