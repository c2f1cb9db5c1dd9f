import Testing

@testable import Simulation

@Suite struct SyntheticWorkloadTests {
    @Test func meanRateIsExactAndDrawsRepeat() throws {
        let workload = SyntheticWorkload(
            requests: 20_000, rate: 50, cv: 2, zipf: 1, models: 100,
            promptTokens: LengthDistribution(median: 200, sigma: 1),
            outputTokens: .fixed(16), seed: 3)
        try workload.validate()
        let requests = workload.generate()
        #expect(requests.count == 20_000)
        #expect(requests == workload.generate())
        #expect(abs(requests.last!.at - Double(19_999) / 50) < 1e-6)
        let gaps = zip(requests.dropFirst(), requests).map { $0.at - $1.at }
        let mean = gaps.reduce(0, +) / Double(gaps.count)
        let deviation = (gaps.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(gaps.count)).squareRoot()
        #expect(abs(deviation / mean - 2) < 0.3, "CV \(deviation / mean)")
        let counts = Dictionary(grouping: requests, by: \.model).mapValues(\.count)
        #expect(counts[0] == counts.values.max())
        #expect(requests.allSatisfy { $0.outputTokens == 16 && (1...32_768).contains($0.promptTokens) })
        let prompts = requests.map(\.promptTokens).sorted()
        #expect(abs(Double(prompts[prompts.count / 2]) - 200) < 20)
        // The arrivals do not depend on the lengths asked for.
        var other = workload
        other.promptTokens = .fixed(1)
        #expect(other.generate().map(\.at) == requests.map(\.at))
        #expect(other.generate().map(\.model) == requests.map(\.model))
    }

    @Test func settingsOutOfRangeAreRefused() throws {
        for bad in [
            SyntheticWorkload(requests: 0, rate: 1, models: 1), SyntheticWorkload(requests: 1, rate: 0, models: 1),
            SyntheticWorkload(requests: 1, rate: .nan, models: 1),
            SyntheticWorkload(requests: 1, rate: 1, cv: 0, models: 1),
            SyntheticWorkload(requests: 1, rate: 1, zipf: -1, models: 1),
            SyntheticWorkload(requests: 1, rate: 1, models: 0),
        ] {
            #expect(throws: SimulationError.self) { try bad.validate() }
        }
        #expect(throws: SimulationError.self) { try LengthDistribution(parsing: "0", name: "--prompt") }
        #expect(throws: SimulationError.self) { try LengthDistribution(parsing: "100:9", name: "--prompt") }
        #expect(throws: SimulationError.self) { try LengthDistribution(parsing: "x:1", name: "--prompt") }
        #expect(throws: SimulationError.self) { try LengthDistribution(parsing: "1:2:3", name: "--prompt") }
        #expect(try LengthDistribution(parsing: "64", name: "--prompt") == .fixed(64))
    }
}
