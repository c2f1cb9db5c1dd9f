import Foundation
import TestSupport
import Testing

@testable import Checkpoint

@Suite struct HuggingFaceConverterTests {
    @Test func aLlamaDirectoryConvertsWithGGUFNames() throws {
        let directory = try TemporaryDirectory("hf")
        defer { directory.remove() }
        let model = directory.file("model")
        try SyntheticModel.writeHuggingFaceDirectory(model, shape: .tiny)
        let index = try Converter.convert(model, to: directory.file("out"))
        #expect(index.sourceFormat == "safetensors")
        #expect(index.config.architecture == "llama")
        #expect(index.config.blockCount == 2)
        #expect(index.config.headCountKV == 2)
        #expect(index.config.ropeStyle == "normal")
        // The order a forward pass waits in: layers, the output, the token embeddings last.
        #expect(index.tensors.first?.name == "blk.0.attn_norm.weight")
        #expect(index.tensors.suffix(3).map(\.name) == ["output_norm.weight", "output.weight", "token_embd.weight"])
        #expect(index.tensor(named: "blk.1.ffn_down.weight")?.shape == [32, 64])
        #expect(index.tensors.allSatisfy { $0.dtype == .f16 })
        #expect(index.tokenizer.format == "huggingface")
        #expect(index.tokenizer.files.contains("tokenizer.json"))
        #expect(index.tokenizer.chatTemplate?.contains("messages") == true)
        try CheckpointReader(directory: directory.file("out")).verify()
    }

    @Test func queryAndKeyRowsArePermutedLikeLlamaCpp() throws {
        let directory = try TemporaryDirectory("hf")
        defer { directory.remove() }
        let model = directory.file("model")
        try SyntheticModel.writeHuggingFaceDirectory(model, shape: .tiny)
        let header = try SafetensorsFile.read(path: model + "/model.safetensors")
        let original = try readFile(model + "/model.safetensors")
        let reader = try CheckpointReader(
            directory: try { () throws -> String in
                try Converter.convert(model, to: directory.file("out"))
                return directory.file("out")
            }())
        // tiny: 4 heads x 8 rows for q, 2 heads x 8 rows for k; rows of 32 F16 = 64 bytes.
        for (hfName, name, heads) in [
            ("model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight", 4),
            ("model.layers.1.self_attn.k_proj.weight", "blk.1.attn_k.weight", 2),
        ] {
            let info = try #require(header.tensors.first { $0.name == hfName })
            let source = Array(original[info.offset..<(info.offset + info.byteCount)])
            let permuted = try reader.tensorBytes(name)
            let rowBytes = 64, perHead = 8
            for head in 0..<heads {
                for i in 0..<(perHead / 2) {
                    for j in 0..<2 {
                        let to = (head * perHead + 2 * i + j) * rowBytes
                        let from = (head * perHead + j * perHead / 2 + i) * rowBytes
                        #expect(permuted[to..<(to + rowBytes)] == source[from..<(from + rowBytes)])
                    }
                }
            }
        }
        // v is not permuted.
        let v = try #require(header.tensors.first { $0.name == "model.layers.0.self_attn.v_proj.weight" })
        #expect(try reader.tensorBytes("blk.0.attn_v.weight") == Array(original[v.offset..<(v.offset + v.byteCount)]))
    }

    @Test func tiedEmbeddingsHaveNoOutputTensor() throws {
        let directory = try TemporaryDirectory("hf")
        defer { directory.remove() }
        var shape = SyntheticModel.Shape.tiny
        shape.tiedEmbeddings = true
        try SyntheticModel.writeHuggingFaceDirectory(directory.file("model"), shape: shape)
        let index = try Converter.convert(directory.file("model"), to: directory.file("out"))
        #expect(index.config.tiedEmbeddings)
        #expect(index.tensor(named: "output.weight") == nil)
    }

    @Test func missingPiecesAreNamed() throws {
        let directory = try TemporaryDirectory("hf")
        defer { directory.remove() }
        let model = directory.file("model")
        for (file, message) in [
            ("config.json", "no config.json"), ("tokenizer.json", "no tokenizer.json"),
            ("model.safetensors", "no .safetensors"),
        ] {
            FileSystem.removeTree(model)
            try SyntheticModel.writeHuggingFaceDirectory(model, shape: .tiny)
            try FileManager.default.removeItem(atPath: model + "/" + file)
            let error = try #require(throws: CheckpointError.self) {
                try Converter.convert(model, to: directory.file("out"))
            }
            #expect(error.description.contains(message), "\(error)")
            #expect(!FileSystem.exists(directory.file("out")))
        }
    }

    @Test func anUnsupportedArchitectureIsNamed() throws {
        let directory = try TemporaryDirectory("hf")
        defer { directory.remove() }
        let model = directory.file("model")
        try SyntheticModel.writeHuggingFaceDirectory(model, shape: .tiny)
        let config = try String(contentsOfFile: model + "/config.json", encoding: .utf8)
        try config.replacingOccurrences(of: "LlamaForCausalLM", with: "GPTNeoXForCausalLM").write(
            toFile: model + "/config.json", atomically: true, encoding: .utf8)
        let error = try #require(throws: CheckpointError.self) {
            try Converter.convert(model, to: directory.file("out"))
        }
        #expect(error.code == .unsupported)
        #expect(error.description.contains("GPTNeoXForCausalLM"))
    }

    /// The same tensors split over two shards (by the index's weight map) convert to the same
    /// checkpoint, byte for byte, as the single file.
    @Test func aShardedModelWithAnIndexConvertsToTheSameBytes() throws {
        let directory = try TemporaryDirectory("hf")
        defer { directory.remove() }
        let model = directory.file("model")
        try SyntheticModel.writeHuggingFaceDirectory(model, shape: .tiny)
        let whole = try Converter.convert(model, to: directory.file("whole"))
        // Split the file's own bytes: embeddings in one shard, everything else in the other.
        let original = try readFile(model + "/model.safetensors")
        let header = try SafetensorsFile.read(path: model + "/model.safetensors")
        func dtypeName(_ dtype: DType) -> String { dtype == .f32 ? "F32" : dtype == .f16 ? "F16" : "BF16" }
        let first = header.tensors.filter { $0.name == "model.embed_tokens.weight" }
        let second = header.tensors.filter { $0.name != "model.embed_tokens.weight" }
        #expect(!first.isEmpty && !second.isEmpty)
        for (file, tensors) in [
            ("model-00001-of-00002.safetensors", first), ("model-00002-of-00002.safetensors", second),
        ] {
            var bytes = try SafetensorsFile.header(
                for: tensors.map { ($0.name, dtypeName($0.dtype), $0.shape, $0.byteCount) })
            for tensor in tensors { bytes += original[tensor.offset..<(tensor.offset + tensor.byteCount)] }
            try writeFile(model + "/" + file, bytes)
        }
        try FileManager.default.removeItem(atPath: model + "/model.safetensors")
        var map: [String: String] = [:]
        for tensor in first { map[tensor.name] = "model-00001-of-00002.safetensors" }
        for tensor in second { map[tensor.name] = "model-00002-of-00002.safetensors" }
        try JSONSerialization.data(withJSONObject: ["weight_map": map]).write(
            to: URL(fileURLWithPath: model + "/model.safetensors.index.json"))
        let sharded = try Converter.convert(model, to: directory.file("sharded"))
        #expect(sharded.tensors.count == whole.tensors.count && sharded.tensors.count == header.tensors.count)
        let wholeReader = try CheckpointReader(directory: directory.file("whole"))
        let shardedReader = try CheckpointReader(directory: directory.file("sharded"))
        for tensor in whole.tensors {
            let record = try #require(sharded.tensor(named: tensor.name), "\(tensor.name) is missing")
            #expect(
                record.dtype == tensor.dtype && record.shape == tensor.shape && record.crc32c == tensor.crc32c,
                "\(tensor.name)")
            #expect(
                try shardedReader.tensorBytes(tensor.name) == wholeReader.tensorBytes(tensor.name), "\(tensor.name)")
        }
        #expect(sharded.config == whole.config)
    }
}
