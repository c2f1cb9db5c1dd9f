public import Scheduling

/// One request of a workload: when it arrives, which model it asks for, and its token lengths.
public struct SimulatedRequest: Sendable, Equatable {
    /// Seconds from the workload's start.
    public var at: Double
    /// The model's index (`0..<models`).
    public var model: Int
    public var promptTokens: Int
    public var outputTokens: Int

    public init(at: Double, model: Int, promptTokens: Int, outputTokens: Int) {
        self.at = at
        self.model = model
        self.promptTokens = promptTokens
        self.outputTokens = outputTokens
    }
}

/// Token lengths drawn from a log-normal distribution (the shape of prompt and answer lengths in
/// the Azure and BurstGPT traces), clamped to `minimum...maximum`; a fixed length when `sigma` is 0.
public struct LengthDistribution: Sendable, Equatable, Codable {
    public var median: Double
    public var sigma: Double
    public var minimum: Int
    public var maximum: Int

    public init(median: Double, sigma: Double = 0, minimum: Int = 1, maximum: Int = 32_768) {
        self.median = median
        self.sigma = sigma
        self.minimum = minimum
        self.maximum = maximum
    }

    /// Always `tokens`.
    public static func fixed(_ tokens: Int) -> LengthDistribution {
        LengthDistribution(median: Double(tokens), sigma: 0, minimum: tokens, maximum: tokens)
    }

    public func draw(_ random: inout SplitMix) -> Int {
        let value = sigma > 0 ? random.logNormal(median: median, sigma: sigma) : median
        guard value.isFinite else { return maximum }
        return min(maximum, max(minimum, Int(value.rounded())))
    }

    /// Parses `N` (fixed) or `MEDIAN:SIGMA` (log-normal).
    public init(parsing text: String, name: String) throws(SimulationError) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let median = Double(parts[0]), median.isFinite, median >= 1,
            median <= 1_000_000
        else {
            throw SimulationError(
                "\(name) `\(text)` is not a token length: give N or MEDIAN:SIGMA (a log-normal), N and MEDIAN 1...1000000"
            )
        }
        var sigma = 0.0
        if parts.count == 2 {
            guard let value = Double(parts[1]), value.isFinite, (0...4).contains(value) else {
                throw SimulationError("\(name) `\(text)`: SIGMA must be a number in 0...4")
            }
            sigma = value
        }
        self.init(median: median, sigma: sigma, minimum: 1, maximum: sigma == 0 ? Int(median) : 32_768)
        if sigma == 0 { self.minimum = Int(median) }
    }
}

/// A workload made up: Gamma inter-arrival times with coefficient of variation `cv` (shape
/// 1/cv²; 1 is Poisson, larger is burstier), Zipf popularity over the models, token lengths from
/// their distributions. The gaps are scaled so the workload's mean rate is exactly `rate` (with a
/// heavy tail, a few hundred draws' own mean strays far). `sllm bench cluster` replays the same
/// arrivals for the same seed, which is how the simulator is checked against it.
public struct SyntheticWorkload: Sendable, Equatable {
    public var requests: Int
    /// Mean requests per second.
    public var rate: Double
    public var cv: Double
    public var zipf: Double
    public var models: Int
    public var promptTokens: LengthDistribution
    public var outputTokens: LengthDistribution
    public var seed: UInt64

    public init(
        requests: Int, rate: Double, cv: Double = 1, zipf: Double = 1, models: Int,
        promptTokens: LengthDistribution = .fixed(1), outputTokens: LengthDistribution = .fixed(1), seed: UInt64 = 1
    ) {
        self.requests = requests
        self.rate = rate
        self.cv = cv
        self.zipf = zipf
        self.models = models
        self.promptTokens = promptTokens
        self.outputTokens = outputTokens
        self.seed = seed
    }

    public func validate() throws(SimulationError) {
        guard (1...50_000_000).contains(requests) else {
            throw SimulationError("requests must be 1...50000000 (got \(requests))")
        }
        guard rate.isFinite, rate > 0, rate <= 1_000_000 else {
            throw SimulationError("rate must be in (0, 1000000] requests/s (got \(rate))")
        }
        guard cv.isFinite, cv > 0, cv <= 100 else { throw SimulationError("cv must be in (0, 100] (got \(cv))") }
        guard zipf.isFinite, (0...10).contains(zipf) else { throw SimulationError("zipf must be 0...10 (got \(zipf))") }
        guard (1...10_000_000).contains(models) else {
            throw SimulationError("models must be 1...10000000 (got \(models))")
        }
    }

    /// The requests in arrival order.
    public func generate() -> [SimulatedRequest] {
        var random = SplitMix(seed: seed)
        let popularity = ZipfDraw(count: models, exponent: zipf)
        let shape = 1 / (cv * cv)
        let gaps = (1..<max(1, requests)).map { _ in random.gamma(shape: shape) }
        let scale = Double(requests - 1) / rate / max(gaps.reduce(0, +), 1e-12)
        // Lengths come from a stream of their own, so the arrivals are the same whatever they are.
        var lengths = SplitMix(seed: seed ^ 0x5EED_1E46_7415)
        var at = 0.0
        var requests: [SimulatedRequest] = []
        requests.reserveCapacity(self.requests)
        requests.append(
            SimulatedRequest(
                at: 0, model: popularity.draw(&random), promptTokens: promptTokens.draw(&lengths),
                outputTokens: outputTokens.draw(&lengths)))
        for gap in gaps {
            at += gap * scale
            requests.append(
                SimulatedRequest(
                    at: at, model: popularity.draw(&random), promptTokens: promptTokens.draw(&lengths),
                    outputTokens: outputTokens.draw(&lengths)))
        }
        return requests
    }
}
