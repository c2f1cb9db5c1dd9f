import Foundation
import TestSupport
import Testing

@testable import Checkpoint

/// Mutated headers must give a valid result or a `CheckpointError`, never a crash or a hang.
@Suite struct ParserFuzzTests {
    static let seed: UInt64 = 0x5EED_2026

    static func mutate(_ bytes: [UInt8], using generator: inout SeededGenerator) -> [UInt8] {
        var copy = bytes
        switch Int.random(in: 0..<4, using: &generator) {
        case 0:
            for _ in 0..<Int.random(in: 1...8, using: &generator) {
                copy[Int.random(in: 0..<copy.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            }
        case 1:
            copy = Array(copy[0..<Int.random(in: 0..<copy.count, using: &generator)])
        case 2:
            // Overwrite 8 bytes with a large little-endian number, as a length or count.
            let at = Int.random(in: 0..<max(1, copy.count - 8), using: &generator)
            let value = [UInt64.max, 1 << 40, 1 << 31, UInt64(copy.count)].randomElement(using: &generator)!
            withUnsafeBytes(of: value.littleEndian) { copy.replaceSubrange(at..<(at + 8), with: $0) }
        default:
            let at = Int.random(in: 0..<copy.count, using: &generator)
            copy.insert(
                contentsOf: (0..<Int.random(in: 1...16, using: &generator)).map { _ in
                    UInt8.random(in: 0...255, using: &generator)
                }, at: at)
        }
        return copy
    }

    /// A model file names its tensors; the converters sort them by those names into the order a
    /// forward pass waits for them. Any name sorts without trapping (a layer number near
    /// `Int.max` once overflowed), and the order stays total.
    @Test func anyTensorNameSortsWithoutTrapping() {
        var generator = SeededGenerator(seed: Self.seed)
        let layers = ["0", "7", "999999", "1000000", "9223372036854775807", "-1", "", "x", "99999999999999999999"]
        let suffixes = ["attn_q.weight", "ffn_down.weight", "", ".", "attn_qkv.weight", "\u{0}"]
        var names = ["token_embd.weight", "output.weight", "output_norm.weight", "rope_freqs.weight", "blk.", "blk"]
        for _ in 0..<2000 {
            var name =
                "blk." + layers.randomElement(using: &generator)! + "." + suffixes.randomElement(using: &generator)!
            if Bool.random(using: &generator) {
                var bytes = Array(name.utf8)
                for _ in 0..<Int.random(in: 1...3, using: &generator) {
                    bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(
                        in: 32...126, using: &generator)
                }
                name = String(decoding: bytes, as: UTF8.self)
            }
            names.append(name)
        }
        let keys = names.map(TensorNameMap.order(of:))
        let sorted = names.sorted { TensorNameMap.order(of: $0) < TensorNameMap.order(of: $1) }
        #expect(sorted.count == names.count)
        #expect(sorted.last == "token_embd.weight")
        #expect(keys.allSatisfy { $0.0 >= 0 })
    }

    @Test func mutatedGGUFHeadersNeverCrash() {
        var generator = SeededGenerator(seed: Self.seed)
        let original = GGUFBuilder.tinyLlama().build()
        var accepted = 0
        for _ in 0..<5000 {
            let bytes = Self.mutate(original, using: &generator)
            bytes.withUnsafeBytes { raw in
                do {
                    let file = try GGUFFile.parse(raw, fileSize: bytes.count, name: "fuzz")
                    for tensor in file.tensors {
                        #expect(file.dataOffset + tensor.offset + tensor.byteCount <= bytes.count)
                    }
                    accepted += 1
                } catch {
                    #expect(error is CheckpointError, "\(error)")
                }
            }
        }
        #expect(accepted < 5000, "seed \(Self.seed)")
    }

    @Test func mutatedSafetensorsHeadersNeverCrash() {
        var generator = SeededGenerator(seed: Self.seed + 1)
        let header =
            #"{"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}"#
        let original = SafetensorsFileTests.file(header: header, dataBytes: 20)
        for _ in 0..<5000 {
            let bytes = Self.mutate(original, using: &generator)
            bytes.withUnsafeBytes { raw in
                do {
                    let file = try SafetensorsFile.parse(raw, fileSize: bytes.count, name: "fuzz")
                    for tensor in file.tensors { #expect(tensor.offset + tensor.byteCount <= bytes.count) }
                } catch {
                    #expect(error is CheckpointError, "\(error)")
                }
            }
        }
    }

    @Test func mutatedRealModelHeaderNeverCrashes() throws {
        let path = try RealModel.ggufPath()
        let original = try readFile(path)
        let header = try original.withUnsafeBytes { try GGUFFile.parse($0, fileSize: original.count, name: "smol") }
        let headerBytes = Array(original[0..<header.dataOffset])
        var generator = SeededGenerator(seed: Self.seed + 2)
        // Mutations inside the first 64 KiB (magic, counts, the first metadata and vocabulary).
        let prefix = Array(headerBytes[0..<65536])
        for _ in 0..<100 {
            var bytes = Self.mutate(prefix, using: &generator)
            if bytes.count >= 65536 { bytes += headerBytes[65536...] }
            bytes.withUnsafeBytes { raw in
                do {
                    _ = try GGUFFile.parse(raw, fileSize: original.count, name: "fuzz")
                } catch {
                    #expect(error is CheckpointError)
                }
            }
        }
    }

    /// The checkpoint index (read from the SSD, and from a remote store over HTTP): mutated
    /// bodies, re-wrapped with a valid header and checksum so the parser behind the checksum is
    /// reached, give a valid index (every record in bounds) or a `CheckpointError`. A version-1
    /// body (all JSON) gets its numbers replaced with extremes; a version-2 body (JSON, then the
    /// binary tensor table) gets byte mutations, mostly inside the table.
    @Test func mutatedCheckpointIndexesNeverCrash() throws {
        let directory = try TemporaryDirectory("index-fuzz")
        defer { directory.remove() }
        let (path, _) = try writeTinyCheckpoint(in: directory)
        let current = try readFile(path + "/" + CheckpointIndex.fileName)
        var legacy = try CheckpointIndex.decode(current)
        #expect(legacy.formatVersion == 2)
        legacy.formatVersion = 1
        let original = try legacy.encoded()
        let body = String(decoding: original[CheckpointIndex.headerByteCount...], as: UTF8.self)
        let extremes = [
            "-1", "0", "9223372036854775807", "-9223372036854775808", "18446744073709551616", "1e300", "0.5", "null",
            "\"x\"", "[]", "{}",
        ]
        var generator = SeededGenerator(seed: Self.seed + 3)
        var accepted = 0
        func check(_ header: ArraySlice<UInt8>, _ bodyBytes: [UInt8]) {
            var bytes = Array(header[0..<12])
            withUnsafeBytes(of: CRC32C.checksum(bodyBytes).littleEndian) { bytes += $0 }
            withUnsafeBytes(of: UInt64(bodyBytes.count).littleEndian) { bytes += $0 }
            bytes += bodyBytes
            do {
                let index = try CheckpointIndex.decode(bytes, path: "fuzz")
                for tensor in index.tensors {
                    #expect(
                        tensor.partition >= 0 && tensor.partition < index.partitions.count && tensor.offset >= 0
                            && tensor.byteCount >= 0)
                    #expect(
                        tensor.byteCount <= index.partitions[tensor.partition].byteCount
                            && tensor.offset <= index.partitions[tensor.partition].byteCount - tensor.byteCount)
                }
                accepted += 1
            } catch {
                // Typed: only CheckpointError can come out.
                _ = error.message
            }
        }
        for _ in 0..<2000 {
            var text = body
            // Replace some numbers (offsets, sizes, shapes, counts) with extremes.
            let numbers = text.ranges(of: /-?[0-9]+/)
            for _ in 0..<Int.random(in: 1...4, using: &generator) where !numbers.isEmpty {
                let range = numbers.randomElement(using: &generator)!
                guard range.upperBound <= text.endIndex else { continue }
                text.replaceSubrange(range, with: extremes.randomElement(using: &generator)!)
                break  // the other ranges are stale now
            }
            var bodyBytes = Array(text.utf8)
            if Int.random(in: 0..<3, using: &generator) == 0 { bodyBytes = Self.mutate(bodyBytes, using: &generator) }
            check(original[0..<CheckpointIndex.headerByteCount], bodyBytes)
        }
        #expect(accepted < 2000, "no mutation of a version-1 body was refused")

        // Version 2: the JSON's length, the JSON, the table. Mutate the table (and now and then
        // the length or the JSON) and keep the rest.
        let body2 = Array(current[CheckpointIndex.headerByteCount...])
        let jsonEnd = 4 + body2.prefix(4).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        accepted = 0
        for round in 0..<2000 {
            var bodyBytes = body2
            if round % 10 == 0 {
                bodyBytes = Self.mutate(bodyBytes, using: &generator)
            } else {
                bodyBytes = Array(bodyBytes[..<jsonEnd]) + Self.mutate(Array(bodyBytes[jsonEnd...]), using: &generator)
            }
            check(current[0..<CheckpointIndex.headerByteCount], bodyBytes)
        }
        #expect(accepted < 2000, "no mutation of a version-2 body was refused")
    }

    /// A model directory's `config.json`: every number at its extremes, and wrong types, give
    /// a valid configuration or a `CheckpointError` naming the problem, never a trap.
    @Test func mutatedModelConfigsNeverCrash() throws {
        let directory = try TemporaryDirectory("config-json-fuzz")
        defer { directory.remove() }
        let base: [String: Any] = [
            "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16,
            "vocab_size": 128, "max_position_embeddings": 256, "intermediate_size": 128, "num_hidden_layers": 2,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "tie_word_embeddings": false,
            "rope_scaling": ["rope_type": "linear", "factor": 2.0],
        ]
        let extremes: [Any] = [
            0, -1, 1, Int.max, Int.min, Int(Int32.max) + 1, 1e300, -1e300, 0.5, "8", NSNull(), true, [Any](), ["a": 1],
        ]
        var generator = SeededGenerator(seed: Self.seed + 4)
        var accepted = 0
        for index in 0..<1000 {
            var json = base
            for _ in 0..<Int.random(in: 1...3, using: &generator) {
                json[base.keys.randomElement(using: &generator)!] = extremes.randomElement(using: &generator)!
            }
            let path = directory.file("config-\(index % 8).json")
            try writeFile(path, Array(try JSONSerialization.data(withJSONObject: json)))
            do {
                let config = try HuggingFaceConverter.modelConfig(
                    try HuggingFaceConverter.readJSONObject(path), directory: directory.path)
                #expect(config.headCount > 0 && config.blockCount >= 0 && config.vocabularySize > 0, "\(json)")
                accepted += 1
            } catch {
                #expect(error is CheckpointError, "\(error)")
            }
        }
        #expect(accepted > 0 && accepted < 1000, "\(accepted) accepted")
    }
}

/// Mutated vocabulary tables (`vocabulary.bin`) are refused with a `CheckpointError` or, when
/// they still parse, every lookup stays in bounds and ends.
@Suite struct VocabularyTableFuzzTests {
    @Test func mutatedVocabularyTablesNeverCrashOrHang() {
        var generator = SeededGenerator(seed: ParserFuzzTests.seed + 7)
        let tokens = ["a", "b", "ab", "Ġthe", "▁x", "<s>", "", "ab"]
        let original = VocabularyTable.encode(
            tokens: tokens, types: [1, 1, 1, 1, 1, 3, 1, 1], scores: (0..<8).map { -Float($0) },
            merges: ["a b", "Ġ t"], metadata: Data(#"{"tokenizer.ggml.model":"gpt2"}"#.utf8))
        var accepted = 0
        for _ in 0..<5000 {
            let bytes = ParserFuzzTests.mutate(original, using: &generator)
            do {
                let table = try VocabularyTable(bytes)
                for id in 0..<table.tokenCount {
                    let text = table.token(id)
                    if let found = table.id(of: text) { #expect(found < table.tokenCount) }
                    _ = (table.type(id), table.score(id))
                }
                for probe in ["a", "zz", "a b", ""] {
                    if let id = table.id(of: probe) { #expect(id < table.tokenCount) }
                    if let rank = table.rank(of: probe) { #expect(rank < table.mergeCount) }
                }
                accepted += 1
            } catch {
                #expect(error.code == .invalidFormat, "\(error)")
            }
        }
        #expect(accepted < 5000)
    }
}
