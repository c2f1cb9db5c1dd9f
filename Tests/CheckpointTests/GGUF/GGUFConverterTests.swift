import Foundation
import TestSupport
import Testing

@testable import Checkpoint

@Suite struct GGUFConverterTests {
    @Test func theRealModelConvertsByteForByte() throws {
        let path = try RealModel.ggufPath()
        let directory = try TemporaryDirectory("gguf-real")
        defer { directory.remove() }
        let index = try Converter.convert(path, to: directory.file("smol"))
        #expect(index.tensors.count == 272)
        #expect(index.config.architecture == "llama")
        #expect(index.config.blockCount == 30)
        #expect(index.config.embeddingLength == 576)
        #expect(index.config.headCount == 9)
        #expect(index.config.headCountKV == 3)
        #expect(index.config.vocabularySize == 49152)
        #expect(index.config.rmsNormEpsilon == 1e-5)
        #expect(index.config.ropeFrequencyBase == 100000)
        #expect(index.config.tiedEmbeddings)
        #expect(index.tokenizer.chatTemplate?.contains("<|im_start|>") == true)
        #expect(Set(index.tensors.map(\.dtype)) == [.q4_1, .q8_0, .f32])
        // Laid out in the order a forward pass waits for them (the GGUF has the embeddings
        // first): layer by layer, then the output norm, then the (tied) token embeddings.
        let layers = index.tensors.dropLast(2).map { Int($0.name.split(separator: ".")[1]) ?? -1 }
        #expect(layers == layers.sorted() && layers.first == 0 && layers.last == 29)
        #expect(index.tensors.suffix(2).map(\.name) == ["output_norm.weight", "token_embd.weight"])
        #expect(index.tensors.map(\.offset) == index.tensors.map(\.offset).sorted())

        // Quantized blocks are copied as they are: compare with the GGUF's own bytes.
        let original = try readFile(path)
        let gguf = try original.withUnsafeBytes { try GGUFFile.parse($0, fileSize: original.count, name: "smol") }
        let reader = try CheckpointReader(directory: directory.file("smol"))
        for name in ["token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight", "output_norm.weight"] {
            let info = try #require(gguf.tensors.first { $0.name == name })
            let start = gguf.dataOffset + info.offset
            #expect(try reader.tensorBytes(name) == Array(original[start..<(start + info.byteCount)]))
        }
        try reader.verify()

        let tokenizer = try JSONDecoder().decode(
            [String: JSONValue].self, from: Data(try reader.fileContents("gguf-tokenizer.json")))
        #expect(tokenizer["tokenizer.ggml.tokens"]?.arrayValue?.count == 49152)
        #expect(tokenizer["tokenizer.ggml.model"]?.stringValue == "gpt2")
        #expect(tokenizer["tokenizer.ggml.pre"]?.stringValue == "smollm")
        #expect(reader.index.metadata["tokenizer.ggml.tokens"] == nil)
    }

    @Test func missingArchitectureMetadataIsNamed() throws {
        let directory = try TemporaryDirectory("gguf")
        defer { directory.remove() }
        var builder = GGUFBuilder.tinyLlama()
        builder.metadata.removeAll { $0.0 == "llama.block_count" }
        let path = try writeTinyGGUF(in: directory, builder)
        let error = try #require(throws: CheckpointError.self) { try GGUFConverter.contents(ofFileAt: path) }
        #expect(error.description.contains("llama.block_count"))
    }

    @Test func absurdConfigValuesAreRejected() throws {
        let directory = try TemporaryDirectory("gguf")
        defer { directory.remove() }
        var builder = GGUFBuilder.tinyLlama()
        builder.metadata.removeAll { $0.0 == "llama.attention.head_count_kv" }
        builder.metadata.append(("llama.attention.head_count_kv", .uint32(3)))
        let path = try writeTinyGGUF(in: directory, builder)
        let error = try #require(throws: CheckpointError.self) { try GGUFConverter.contents(ofFileAt: path) }
        #expect(error.description.contains("not a multiple"))
    }

    @Test func aFileWithoutTokenizerIsRejected() throws {
        let directory = try TemporaryDirectory("gguf")
        defer { directory.remove() }
        var builder = GGUFBuilder.tinyLlama()
        builder.metadata.removeAll { $0.0.hasPrefix("tokenizer.") }
        let path = try writeTinyGGUF(in: directory, builder)
        let error = try #require(throws: CheckpointError.self) { try GGUFConverter.contents(ofFileAt: path) }
        #expect(error.description.contains("no tokenizer"))
    }

    @Test func aTruncatedRealFileNamesTheTensorPastTheEnd() throws {
        let path = try RealModel.ggufPath()
        let directory = try TemporaryDirectory("gguf-trunc")
        defer { directory.remove() }
        let truncated = directory.file("cut.gguf")
        let size = try #require(FileSystem.fileSize(path))
        try FileManager.default.copyItem(atPath: path, toPath: truncated)
        #expect(truncate(truncated, off_t(size - 1000)) == 0)
        let error = try #require(throws: CheckpointError.self) {
            try Converter.convert(truncated, to: directory.file("out"))
        }
        #expect(error.description.contains("past the end"))
        #expect(!FileSystem.exists(directory.file("out")))
    }
}
