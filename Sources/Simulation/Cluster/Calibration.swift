/// The speeds a simulated node runs at, from this project's own measurements on its 2-core
/// development VM (see `docs/experiments.md`, "Calibration"). A JSON file of the same fields
/// (`sllm simulate --calibration FILE`) models other hardware.
public struct Calibration: Sendable, Equatable, Codable {
    /// Loading a checkpoint held in the node's DRAM cache: mapping pages that exist (`sllm bench
    /// populate`, "re-mapping" 12–14 GB/s).
    public var dramBytesPerSecond: Double
    /// Loading from the node's SSD in a new process (`sllm bench load`, SmolLM2 1.06 GB/s).
    public var ssdBytesPerSecond: Double
    /// Fetching from a peer node: what one receiving worker sustains (`sllm bench cluster`, peer
    /// fetches of 92 MiB in 0.5–0.84 s over 1 GB/s links, about 150 MB/s). A fetch also stays
    /// under the node's link.
    public var peerBytesPerSecond: Double
    /// Fetching from the remote store: what one receiving worker sustains when its fetch has
    /// the store to itself (the store's link is shared between its fetches besides).
    public var remoteBytesPerSecond: Double
    /// What an instance start costs beyond reading its checkpoint (engine, KV cache, tokenizer):
    /// `sllm bench serve`'s DRAM-tier cold start (20.6 ms to the first token of SmolLM2) less its
    /// mapping and one token.
    public var startSeconds: Double
    /// What every request costs beyond its tokens (HTTP, routing, tokenizing).
    public var requestSeconds: Double
    /// Prompt and generation speeds of one instance of a model of `referenceBytes` (`sllm bench
    /// generate`, SmolLM2-135M Q4_1 at one thread: pp128 303, tg64 170 tokens/s); a model of other
    /// size runs at these times `referenceBytes / its bytes` (prefill bound by arithmetic,
    /// decoding by memory, both in proportion to the weights).
    public var referenceBytes: Double
    public var prefillTokensPerSecond: Double
    public var decodeTokensPerSecond: Double

    public init(
        dramBytesPerSecond: Double = 13e9, ssdBytesPerSecond: Double = 1.06e9, peerBytesPerSecond: Double = 150e6,
        remoteBytesPerSecond: Double = 150e6, startSeconds: Double = 0.0125, requestSeconds: Double = 0.002,
        referenceBytes: Double = 96_500_000,
        prefillTokensPerSecond: Double = 303, decodeTokensPerSecond: Double = 170
    ) {
        self.dramBytesPerSecond = dramBytesPerSecond
        self.ssdBytesPerSecond = ssdBytesPerSecond
        self.peerBytesPerSecond = peerBytesPerSecond
        self.remoteBytesPerSecond = remoteBytesPerSecond
        self.startSeconds = startSeconds
        self.requestSeconds = requestSeconds
        self.referenceBytes = referenceBytes
        self.prefillTokensPerSecond = prefillTokensPerSecond
        self.decodeTokensPerSecond = decodeTokensPerSecond
    }

    /// Prompt tokens per second of a model of `bytes`.
    public func prefill(bytes: Int) -> Double { prefillTokensPerSecond * referenceBytes / Double(max(1, bytes)) }

    /// Generated tokens per second of one sequence of a model of `bytes`.
    public func decode(bytes: Int) -> Double { decodeTokensPerSecond * referenceBytes / Double(max(1, bytes)) }

    public func validate() throws(SimulationError) {
        let rates = [
            ("dram_bytes_per_second", dramBytesPerSecond), ("ssd_bytes_per_second", ssdBytesPerSecond),
            ("peer_bytes_per_second", peerBytesPerSecond), ("remote_bytes_per_second", remoteBytesPerSecond),
            ("reference_bytes", referenceBytes),
            ("prefill_tokens_per_second", prefillTokensPerSecond), ("decode_tokens_per_second", decodeTokensPerSecond),
        ]
        for (name, value) in rates where !(value.isFinite && value > 0 && value < 1e15) {
            throw SimulationError("calibration: \(name) must be a positive number below 1e15 (got \(value))")
        }
        for (name, value) in [("start_seconds", startSeconds), ("request_seconds", requestSeconds)]
        where !(value.isFinite && value >= 0 && value <= 3600) {
            throw SimulationError("calibration: \(name) must be 0...3600 seconds (got \(value))")
        }
    }

    private enum CodingKeys: String, CodingKey {
        case dramBytesPerSecond = "dram_bytes_per_second"
        case ssdBytesPerSecond = "ssd_bytes_per_second"
        case peerBytesPerSecond = "peer_bytes_per_second"
        case remoteBytesPerSecond = "remote_bytes_per_second"
        case startSeconds = "start_seconds"
        case requestSeconds = "request_seconds"
        case referenceBytes = "reference_bytes"
        case prefillTokensPerSecond = "prefill_tokens_per_second"
        case decodeTokensPerSecond = "decode_tokens_per_second"
    }

    /// Fields a file leaves out keep their defaults.
    public init(from decoder: any Decoder) throws {
        let defaults = Calibration()
        let container = try decoder.container(keyedBy: CodingKeys.self)
        func value(_ key: CodingKeys, _ fallback: Double) throws -> Double {
            try container.decodeIfPresent(Double.self, forKey: key) ?? fallback
        }
        dramBytesPerSecond = try value(.dramBytesPerSecond, defaults.dramBytesPerSecond)
        ssdBytesPerSecond = try value(.ssdBytesPerSecond, defaults.ssdBytesPerSecond)
        peerBytesPerSecond = try value(.peerBytesPerSecond, defaults.peerBytesPerSecond)
        remoteBytesPerSecond = try value(.remoteBytesPerSecond, defaults.remoteBytesPerSecond)
        startSeconds = try value(.startSeconds, defaults.startSeconds)
        requestSeconds = try value(.requestSeconds, defaults.requestSeconds)
        referenceBytes = try value(.referenceBytes, defaults.referenceBytes)
        prefillTokensPerSecond = try value(.prefillTokensPerSecond, defaults.prefillTokensPerSecond)
        decodeTokensPerSecond = try value(.decodeTokensPerSecond, defaults.decodeTokensPerSecond)
    }
}
