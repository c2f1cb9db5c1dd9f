import Foundation
import Testing

@testable import Engine

@Suite struct SamplerTests {
    static let logits: [Float] = [0.1, 2.5, -1.0, 2.4, 0.0, 1.0, -3.0, 2.45]

    func draw(_ sampler: inout Sampler, _ logits: [Float] = logits, history: [Int] = []) -> Sampler.Choice {
        logits.withUnsafeBufferPointer { sampler.sample(logits: $0, history: history) }
    }

    @Test func greedyTakesTheArgmaxWithItsLogprob() {
        var sampler = Sampler(parameters: .greedy)
        let choice = draw(&sampler)
        #expect(choice.token == 1)
        let expected = 2.5 - log(Self.logits.map { exp($0) }.reduce(0, +))
        #expect(abs(choice.logprob - Float(expected)) < 1e-5)
    }

    @Test func theSameSeedGivesTheSameDraws() {
        var parameters = SamplingParameters()
        parameters.temperature = 1.5
        parameters.topK = 0
        parameters.topP = 1
        parameters.minP = 0
        parameters.seed = 42
        var a = Sampler(parameters: parameters), b = Sampler(parameters: parameters)
        let first = (0..<50).map { _ in draw(&a).token }
        #expect(first == (0..<50).map { _ in draw(&b).token })
        #expect(Set(first).count > 2, "a temperature of 1.5 should spread the draws")
        parameters.seed = 43
        var c = Sampler(parameters: parameters)
        #expect((0..<50).map { _ in draw(&c).token } != first)
    }

    @Test func anExportedStateResumesTheIdenticalContinuation() throws {
        var parameters = SamplingParameters()
        parameters.temperature = 1.2
        parameters.seed = 7
        var original = Sampler(parameters: parameters)
        _ = (0..<10).map { _ in draw(&original) }
        let exported = try JSONEncoder().encode(original.state)
        var resumed = Sampler(state: try JSONDecoder().decode(Sampler.State.self, from: exported))
        #expect((0..<20).map { _ in draw(&original).token } == (0..<20).map { _ in draw(&resumed).token })
    }

    @Test func topKOfOneIsGreedy() {
        var parameters = SamplingParameters()
        parameters.topK = 1
        parameters.seed = 3
        var sampler = Sampler(parameters: parameters)
        #expect((0..<20).allSatisfy { _ in draw(&sampler).token == 1 })
    }

    @Test func topPAndMinPCutTheTail() {
        var parameters = SamplingParameters()
        parameters.temperature = 1
        parameters.topK = 0
        parameters.topP = 0.5
        parameters.minP = 0
        var sampler = Sampler(parameters: parameters)
        // 2.5, 2.45 and 2.4 hold about 0.8 of the mass; 0.5 keeps the first two at most.
        #expect((0..<100).allSatisfy { _ in [1, 7].contains(draw(&sampler).token) })
        parameters.topP = 1
        parameters.minP = 0.9
        sampler = Sampler(parameters: parameters)
        #expect((0..<100).allSatisfy { _ in [1, 7, 3].contains(draw(&sampler).token) })
    }

    @Test func penaltiesSteerAwayFromRepeatedTokens() {
        var parameters = SamplingParameters.greedy
        parameters.repetitionPenalty = 1.3
        var sampler = Sampler(parameters: parameters)
        #expect(draw(&sampler, history: [1]).token == 7)  // 2.5/1.3 < 2.45
        parameters.repetitionPenalty = 1
        parameters.frequencyPenalty = 0.04
        sampler = Sampler(parameters: parameters)
        #expect(draw(&sampler, history: [1, 1]).token == 7)  // 2.5 - 0.08 < 2.45
        parameters.frequencyPenalty = 0
        parameters.presencePenalty = 0.2
        sampler = Sampler(parameters: parameters)
        #expect(draw(&sampler, history: [1, 7]).token == 3)
    }
}
