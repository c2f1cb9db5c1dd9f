import Foundation
import Testing

@testable import Engine

@Suite struct SamplerTests {
    static let logits: [Float] = [0.1, 2.5, -1.0, 2.4, 0.0, 1.0, -3.0, 2.45]

    func draw(_ sampler: inout Sampler, _ logits: [Float] = logits, history: [Int] = []) -> Sampler.Choice {
        logits.withUnsafeBufferPointer { sampler.sample(logits: $0, history: history) }
    }

    @Test func greedyTakesTheArgmaxWithItsLogprob() {
        var parameters = SamplingParameters.greedy
        parameters.logprobs = true
        var sampler = Sampler(parameters: parameters)
        let choice = draw(&sampler)
        #expect(choice.token == 1)
        let expected = 2.5 - log(Self.logits.map { exp($0) }.reduce(0, +))
        #expect(abs(choice.logprob! - Float(expected)) < 1e-5)
        var plain = Sampler(parameters: .greedy)
        #expect(draw(&plain) == Sampler.Choice(token: 1, logprob: nil))
    }

    /// Asking for logprobs changes nothing else: the same seed draws the same tokens.
    @Test func logprobsDoNotChangeTheDraws() {
        for temperature in [Float(0), 0.7, 1.5] {
            var parameters = SamplingParameters()
            parameters.temperature = temperature
            parameters.topK = 0
            parameters.seed = 3
            parameters.repetitionPenalty = 1.1
            var with = parameters
            with.logprobs = true
            var plain = Sampler(parameters: parameters), reporting = Sampler(parameters: with)
            var history: [Int] = []
            for _ in 0..<300 {
                let a = draw(&plain, history: history), b = draw(&reporting, history: history)
                #expect(a.token == b.token && a.logprob == nil && b.logprob != nil)
                history.append(a.token)
            }
        }
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

/// Draws follow the distribution the settings define: fixed logits, a seed, many draws, and the
/// counts compared with the expected probabilities by Pearson's chi-square test. The bound is
/// the 1e-6 upper quantile of the chi-square distribution for the degrees of freedom at hand, so
/// a correct sampler fails with probability below one in a million per case (and, the seed being
/// fixed, the outcome is the same on every run), while a sampler that ignores a setting misses by
/// orders of magnitude.
@Suite struct SamplingDistributionTests {
    static let logits: [Float] = [2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0]

    /// The reference: llama.cpp's chain order (top-k, top-p, min-p on the untempered
    /// distribution, then temperature), computed here in doubles.
    static func expected(_ p: SamplingParameters) -> [Double] {
        var kept = Array(logits.indices).sorted { logits[$0] > logits[$1] }
        func probabilities(_ tokens: [Int], temperature: Double = 1) -> [Double] {
            let scaled = tokens.map { Double(logits[$0]) / temperature }
            let maximum = scaled.max()!
            let exps = scaled.map { exp($0 - maximum) }
            let sum = exps.reduce(0, +)
            return exps.map { $0 / sum }
        }
        if p.topK > 0 { kept = Array(kept.prefix(p.topK)) }
        if p.topP < 1 {
            var cumulative = 0.0
            var keep = kept.count
            for (i, probability) in probabilities(kept).enumerated() {
                cumulative += probability
                if cumulative >= Double(p.topP) { keep = i + 1; break }
            }
            kept = Array(kept.prefix(keep))
        }
        if p.minP > 0 {
            let probs = probabilities(kept)
            kept = Array(kept.prefix(max(1, probs.firstIndex { $0 < Double(p.minP) * probs[0] } ?? probs.count)))
        }
        var result = [Double](repeating: 0, count: logits.count)
        for (token, probability) in zip(kept, probabilities(kept, temperature: Double(p.temperature))) {
            result[token] = probability
        }
        return result
    }

    /// Upper 1e-6 quantiles of chi-square for 1...7 degrees of freedom.
    static let bound: [Double] = [0, 23.93, 27.63, 30.66, 33.38, 35.89, 38.26, 40.52]

    static var cases: [(String, SamplingParameters)] {
        func make(_ temperature: Float, topK: Int = 0, topP: Float = 1, minP: Float = 0) -> SamplingParameters {
            var p = SamplingParameters()
            p.temperature = temperature
            p.topK = topK
            p.topP = topP
            p.minP = minP
            p.seed = 20261201
            return p
        }
        return [
            ("T=0.5", make(0.5)), ("T=1", make(1)), ("T=2", make(2)),
            ("T=0.5 top-k 3", make(0.5, topK: 3)), ("T=2 top-k 5", make(2, topK: 5)),
            ("T=1 top-p 0.8", make(1, topP: 0.8)), ("T=2 top-p 0.9", make(2, topP: 0.9)),
            ("T=1 min-p 0.2", make(1, minP: 0.2)), ("T=2 min-p 0.1", make(2, minP: 0.1)),
            ("T=0.7 top-k 6 top-p 0.95 min-p 0.05", make(0.7, topK: 6, topP: 0.95, minP: 0.05)),
        ]
    }

    @Test(arguments: cases.indices)
    func drawsFollowTheDistribution(index: Int) {
        let (label, parameters) = Self.cases[index]
        let expected = Self.expected(parameters)
        var sampler = Sampler(parameters: parameters)
        let draws = 40_000
        var counts = [Int](repeating: 0, count: Self.logits.count)
        for _ in 0..<draws {
            let token = Self.logits.withUnsafeBufferPointer { sampler.sample(logits: $0, history: []) }.token
            counts[token] += 1
        }
        // Tokens the settings cut are never drawn; the others enter the statistic.
        var statistic = 0.0
        var cells = 0
        for (token, probability) in expected.enumerated() {
            if probability == 0 {
                #expect(counts[token] == 0, "\(label): token \(token) was cut but drawn \(counts[token]) times")
                continue
            }
            let mean = probability * Double(draws)
            statistic += pow(Double(counts[token]) - mean, 2) / mean
            cells += 1
        }
        #expect(cells >= 2, "\(label): a case must leave a choice")
        #expect(
            statistic < Self.bound[cells - 1],
            "\(label): chi-square \(statistic) over \(cells - 1) degrees of freedom; counts \(counts), expected \(expected.map { Int($0 * Double(draws)) })"
        )
    }

    /// The chosen token's log-probability is the model's (raw logits), whatever the temperature:
    /// the same value `top_logprobs` reports for it.
    @Test(arguments: [Float(0.7), 1.0, 1.8])
    func theChosenLogprobIsTheModelsAtAnyTemperature(temperature: Float) {
        var parameters = SamplingParameters()
        parameters.temperature = temperature
        parameters.topK = 3
        parameters.seed = 9
        parameters.logprobs = true
        var sampler = Sampler(parameters: parameters)
        let logSum = log(Self.logits.map { exp(Double($0)) }.reduce(0, +))
        for _ in 0..<200 {
            let choice = Self.logits.withUnsafeBufferPointer { sampler.sample(logits: $0, history: []) }
            #expect(abs(Double(choice.logprob!) - (Double(Self.logits[choice.token]) - logSum)) < 1e-5)
        }
    }
}
