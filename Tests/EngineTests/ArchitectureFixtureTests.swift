import Checkpoint
import Foundation
import Store
import TestSupport
import Testing

@testable import Engine

/// Families without a small real checkpoint at hand run on small random-weight GGUFs written by
/// `scripts/make-random-gguf.py` (the `gguf` package, as llama.cpp's converter writes them), against
/// llama.cpp's greedy continuation on the same file with each position's top log-probabilities
/// (llama-server, recorded by the same script).
///
/// The criterion, as the README states it: tokens identical up to the first position where
/// llama.cpp's own top-two log-probability gap is below `nearTie` nats (there either choice is
/// right: llama.cpp flips such ties between its own code paths), and at every position compared,
/// the log-probability of each of llama.cpp's top tokens within `tolerance` nats of llama.cpp's.
@Suite struct ArchitectureFixtureTests {
    static let nearTie = 0.2
    static let tolerance = 0.05

    struct Reference: Decodable {
        struct Step: Decodable {
            var id: Int
            var top: [[Double]]
        }
        struct Case: Decodable {
            var prompt: [Int]
            var steps: [Step]
            /// The prompt's text when it was given as text (llama.cpp's ids are `prompt`).
            var text: String?
        }
        var model: String
        var cases: [Case]
    }

    /// The weight types each fixture must hold, so that it tests them: the architecture fixtures
    /// are F16; the `llama-*` ones went through llama.cpp's `llama-quantize` with that preset
    /// (Q2_K puts some matrices in Q3_K, Q3_K_M some in Q4_K and Q5_K).
    static let fixtures: [String: Set<DType>] = [
        "qwen3-tiny": [.f16], "phi3-tiny": [.f16], "qwen2-tiny": [.f16],
        "llama-q2-k": [.q2_K, .q3_K, .q6_K], "llama-q3-k-m": [.q3_K, .q4_K, .q5_K, .q6_K],
        "llama-iq4-nl": [.iq4_nl, .q6_K], "llama-iq4-xs": [.iq4_xs, .q6_K],
    ]

    @Test(arguments: fixtures.keys.sorted())
    func greedyTokensAndLogprobsMatchLlamaCpp(name: String) async throws {
        let resources = try #require(Bundle.module.resourceURL)
        let reference = try JSONDecoder().decode(
            Reference.self, from: Data(contentsOf: resources.appendingPathComponent("\(name).json")))
        let directory = try TemporaryDirectory("engine-architecture")
        defer { directory.remove() }
        let store = ModelStore(root: directory.file("home"))
        try Converter.convert(
            resources.appendingPathComponent(reference.model).path, to: store.directory(for: try ModelName("m")))
        let loader = ModelLoader(
            store: store,
            cache: try DRAMCache(directory: directory.file("cache"), budgetBytes: 64 << 20, slabBytes: 1 << 20),
            configuration: .init(threads: 1))
        let model = try await loader.load(try ModelName("m"))
        let types = Set(model.index.tensors.map(\.dtype)).subtracting([.f32])
        #expect(types == Self.fixtures[name], "\(name) holds \(types.map(\.name).sorted())")
        let engine = try Engine(model: model)
        let (compared, worst) = try Self.compare(engine, with: reference, name: name)
        #expect(compared >= 24, "enough positions compared before near-ties: \(compared)")
        print("\(name): \(compared) positions compared, largest logprob difference \(worst) nats")
    }

    /// Runs each case's prompt and greedy continuation on `engine` against llama.cpp's, under the
    /// criterion above. Returns the positions compared and the largest log-probability difference.
    static func compare(_ engine: Engine, with reference: Reference, name: String) throws -> (Int, Double) {
        var compared = 0
        var worst = 0.0
        for (index, testCase) in reference.cases.enumerated() {
            let sequence = try engine.makeSequence(tokens: testCase.prompt)
            try engine.prefill(sequence)
            for (position, step) in testCase.steps.enumerated() {
                let logits = try #require(sequence.logits).map(Double.init)
                let top = logits.max()!
                let normalizer = top + log(logits.reduce(0) { $0 + exp($1 - top) })
                let ours = logits.indices.max { logits[$0] < logits[$1] }!
                let differences = step.top.map { abs((logits[Int($0[0])] - normalizer) - $0[1]) }
                for (entry, difference) in zip(step.top, differences) {
                    #expect(
                        difference <= Self.tolerance,
                        "\(name) case \(index) position \(position): token \(Int(entry[0])) logprob off by \(difference) from llama.cpp's \(entry[1])"
                    )
                }
                compared += 1
                worst = max(worst, differences.max() ?? 0)
                let gap = step.top.count > 1 ? step.top[0][1] - step.top[1][1] : .infinity
                if gap < Self.nearTie { break }
                #expect(ours == step.id, "\(name) case \(index) position \(position): \(ours) vs llama.cpp \(step.id)")
                guard ours == step.id else { break }
                try engine.append([ours], to: sequence)
                try engine.prefill(sequence)
            }
        }
        return (compared, worst)
    }
}
