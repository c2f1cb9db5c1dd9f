import Checkpoint
import Foundation
import Store
import Synchronization
import TestSupport
import Testing
import Tokenizers

@testable import Engine

/// An engine started on a streaming load computes each layer once it has arrived, with the same
/// arithmetic as on weights loaded whole.
@Suite(.serialized) struct ServeWhileLoadingTests {
    /// A store holding the real model (a copy when it is to be damaged) and a loader over it.
    static func loader(in directory: TemporaryDirectory, copy: Bool = false) async throws -> ModelLoader {
        let store = ModelStore(root: directory.file("home"))
        if copy {
            try FileManager.default.createDirectory(atPath: store.modelsDirectory, withIntermediateDirectories: true)
            try FileManager.default.copyItem(
                atPath: try await RealModel.checkpoint.value, toPath: store.directory(for: try ModelName("smol")))
        } else {
            try await RealModel.link(into: store.root, as: "smol")
        }
        return ModelLoader(
            store: store,
            cache: try DRAMCache(directory: directory.file("cache"), budgetBytes: 1 << 30, slabBytes: 32 << 20),
            configuration: .init(threads: 1))
    }

    static var options: Engine.Options {
        var options = Engine.Options()
        options.threads = 2
        options.contextLength = 512
        return options
    }

    @Test func aStreamedModelGivesTheLogitsAndGreedyTokensOfTheWholeOne() async throws {
        let directory = try TemporaryDirectory("engine-stream")
        defer { directory.remove() }
        let loader = try await Self.loader(in: directory)
        let gate = FirstCallGate()
        let model = try await loader.load(try ModelName("smol"), streaming: true) { _ in gate.hold() }
        let engine = try Engine(model: model, options: Self.options)
        // The engine is up (tokenizer, every tensor's type and shape checked) with no weight in.
        #expect(!model.isComplete)
        let expected = try fixture("greedy-01", as: GreedyFixture.self)
        let prompt = engine.tokenizer.encode(expected.prompt)
        let sequence = try engine.makeSequence(tokens: prompt)
        gate.release()
        try engine.prefill(sequence)
        let reference = try await SharedModel.engine.value
        let whole = try reference.makeSequence(tokens: prompt)
        try reference.prefill(whole)
        #expect(sequence.logits == whole.logits)
        #expect(try greedy(engine, prompt, count: expected.output_ids.count) == expected.output_ids)
        try model.waitUntilComplete()
        #expect(model.isComplete)
    }

    @Test func aLayerThatFailsItsChecksumFailsThePassNamingIt() async throws {
        let directory = try TemporaryDirectory("engine-stream-corrupt")
        defer { directory.remove() }
        let loader = try await Self.loader(in: directory, copy: true)
        let reader = try loader.store.reader(for: try ModelName("smol"))
        let victim = try #require(reader.index.tensors.first { $0.name == "blk.20.ffn_down.weight" })
        try corruptByte(
            of: reader.directory + "/" + reader.index.partitions[victim.partition].file, at: victim.offset + 100)
        let model = try await loader.load(try ModelName("smol"), streaming: true)
        let engine = try Engine(model: model, options: Self.options)
        let sequence = try engine.makeSequence(tokens: [1, 2, 3])
        let error = #expect(throws: EngineError.self) { try engine.prefill(sequence) }
        #expect(error?.kind == .weightsUnavailable)
        #expect(error?.description.contains(victim.name) == true)
        // The engine stays consistent: nothing was cached for the sequence, the budget is back.
        #expect(sequence.cachedCount == 0)
        #expect(engine.kvCacheBytesInUse == 0)
        #expect(throws: EngineError.self) { _ = try engine.step([sequence]) }
        #expect(loader.cache.listEntries().isEmpty)
    }

    /// Weights that forward to a loaded model and say, as a streaming load would, that the
    /// token embeddings have not arrived; subclasses change what the engine is told.
    class StreamingWeights: ModelWeights, @unchecked Sendable {
        let base: LoadedModel
        init(_ base: LoadedModel) { self.base = base }
        var name: String { base.name }
        var index: CheckpointIndex { base.index }
        func tensor(_ name: String) -> TensorView? { base.tensor(name) }
        func fileContents(_ name: String) throws -> [UInt8] { try base.fileContents(name) }
        func mappedFile(_ name: String) throws -> MappedFile { try base.mappedFile(name) }
        var isComplete: Bool { false }
        func waitForTensors(_ names: [String]) throws {}
        func hasArrived(_ names: [String]) -> Bool { !names.contains("token_embd.weight") }
        func unverifiedBytes(of tensor: String, ranges: [Range<Int>]) -> [[UInt8]]? {
            guard let view = base.tensor(tensor) else { return nil }
            return ranges.map { Array(view.bytes[$0]) }
        }
        /// Cannot tell what is read (the engine waits for whole tensors).
        func waitForReadBytes(of tensor: String, count: Int) throws -> Bool { false }
    }

    /// Early rows that are the stored bytes or those bytes damaged.
    final class EarlyRowsWeights: StreamingWeights, @unchecked Sendable {
        let damaged: Bool
        let reads = Mutex(0)
        init(_ base: LoadedModel, damaged: Bool) {
            self.damaged = damaged
            super.init(base)
        }
        override func unverifiedBytes(of tensor: String, ranges: [Range<Int>]) -> [[UInt8]]? {
            reads.withLock { $0 += 1 }
            return super.unverifiedBytes(of: tensor, ranges: ranges)?.map { row in row.map { damaged ? $0 ^ 0x5A : $0 }
            }
        }
    }

    /// An output matrix (SmolLM2 ties it to the token embeddings) read piece by piece: the
    /// engine's waits are recorded in order.
    final class PiecewiseOutputWeights: StreamingWeights, @unchecked Sendable {
        enum Wait: Equatable {
            case read(Int)
            case whole
        }
        let waits = Mutex<[Wait]>([])
        override func waitForTensors(_ names: [String]) throws {
            if names.contains("token_embd.weight") { waits.withLock { $0.append(.whole) } }
        }
        override func hasArrived(_ names: [String]) -> Bool {
            super.hasArrived(names) || waits.withLock { $0.contains(.whole) }
        }
        override func waitForReadBytes(of tensor: String, count: Int) throws -> Bool {
            if tensor == "token_embd.weight" { waits.withLock { $0.append(.read(count)) } }
            return true
        }
    }

    /// While the output matrix is still being read, its rows are multiplied piece by piece as
    /// they come in, with the logits of the whole matrix; the pass waits for the verified matrix
    /// before the logits are used.
    @Test func anOutputMatrixStillBeingReadIsMultipliedPieceByPiece() async throws {
        let reference = try await SharedModel.engine.value
        let weights = PiecewiseOutputWeights(try await SharedModel.loaded.value)
        let engine = try Engine(model: weights, options: Self.options)
        let prompt = engine.tokenizer.encode("The quick brown fox jumps over the lazy dog")
        let sequence = try engine.makeSequence(tokens: prompt)
        try engine.prefill(sequence)
        let whole = try reference.makeSequence(tokens: prompt)
        try reference.prefill(whole)
        #expect(sequence.logits == whole.logits)
        let waits = weights.waits.withLock { $0 }
        let bytes = try #require(weights.tensor("token_embd.weight")).bytes.count
        let reads = waits.compactMap { if case .read(let count) = $0 { count } else { nil } }
        // Pieces of the output projection, in order, up to the whole matrix, then its arrival.
        #expect(reads.count >= 4)
        #expect(reads == reads.sorted() && Set(reads).count == reads.count)
        #expect(reads.last == bytes)
        #expect(waits.last == .whole)
        #expect(waits.firstIndex(of: .whole)! > waits.lastIndex(of: .read(bytes))!)
    }

    @Test(arguments: [false, true])
    func earlyEmbeddingRowsAreCheckedAndAPassOnWrongOnesIsComputedAgain(damaged: Bool) async throws {
        let reference = try await SharedModel.engine.value
        let weights = EarlyRowsWeights(try await SharedModel.loaded.value, damaged: damaged)
        let engine = try Engine(model: weights, options: Self.options)
        let prompt = engine.tokenizer.encode("The quick brown fox jumps over the lazy dog")
        let sequence = try engine.makeSequence(tokens: prompt)
        try engine.prefill(sequence)
        // One read of the prompt's rows; damaged ones are caught and the pass recomputed.
        #expect(weights.reads.withLock { $0 } == 1)
        let whole = try reference.makeSequence(tokens: prompt)
        try reference.prefill(whole)
        #expect(sequence.logits == whole.logits)
    }
}
