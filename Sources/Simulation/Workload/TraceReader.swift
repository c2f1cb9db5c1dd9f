public import Foundation
import Scheduling

/// The published trace formats a simulation replays.
public enum TraceFormat: String, Sendable, CaseIterable, Codable {
    /// Azure LLM inference traces (2023, 2024): `TIMESTAMP,ContextTokens,GeneratedTokens`, one row
    /// per request, the timestamp as `2023-11-16 18:15:46.6805900`. No model column: each request's
    /// model is drawn by Zipf popularity.
    case azureLLM = "azure-llm"
    /// Azure Functions 2019 invocation counts: `HashOwner,HashApp,HashFunction,Trigger,1,…,1440`, one
    /// row per function with its invocations in each minute of a day. Each function is a model
    /// (the busiest function the first model, and so on round the models); a minute's invocations
    /// arrive at uniformly random times within it; token lengths are drawn.
    case azureFunctions = "azure-functions"
    /// BurstGPT: `Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type`, the
    /// timestamp in seconds. Its model column names a handful of services, so each request's
    /// model is drawn by Zipf popularity; its token counts are kept.
    case burstGPT = "burstgpt"
}

/// Reads a trace file into requests, in arrival order from time 0.
public struct TraceReader: Sendable {
    public var format: TraceFormat
    /// Models requests are spread over.
    public var models: Int
    /// Zipf exponent for formats without model identities.
    public var zipf: Double
    /// Lengths for formats without token counts.
    public var promptTokens: LengthDistribution
    public var outputTokens: LengthDistribution
    /// Time runs this many times faster than in the trace (2: twice the rate).
    public var speedup: Double
    /// The most requests read; a trace holding more is refused, naming the count.
    public var maxRequests: Int
    public var seed: UInt64

    public init(
        format: TraceFormat, models: Int, zipf: Double = 1, promptTokens: LengthDistribution = .fixed(1),
        outputTokens: LengthDistribution = .fixed(1), speedup: Double = 1, maxRequests: Int = 50_000_000,
        seed: UInt64 = 1
    ) {
        self.format = format
        self.models = models
        self.zipf = zipf
        self.promptTokens = promptTokens
        self.outputTokens = outputTokens
        self.speedup = speedup
        self.maxRequests = maxRequests
        self.seed = seed
    }

    /// The columns a file of this format starts with.
    public static func header(of format: TraceFormat) -> [String] {
        switch format {
        case .azureLLM: ["timestamp", "contexttokens", "generatedtokens"]
        case .azureFunctions: ["hashowner", "hashapp", "hashfunction", "trigger"]
        case .burstGPT: ["timestamp", "model", "request tokens", "response tokens"]
        }
    }

    /// Reads the file at `path`.
    public func read(path: String) throws(SimulationError) -> [SimulatedRequest] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SimulationError("cannot read trace file \(path)")
        }
        return try read(data, name: path)
    }

    /// Parses a whole trace held in memory; `name` is what error messages call it.
    public func read(_ data: Data, name: String = "trace") throws(SimulationError) -> [SimulatedRequest] {
        guard models >= 1 else { throw SimulationError("models must be at least 1") }
        guard speedup.isFinite, speedup > 0, speedup <= 1e6 else {
            throw SimulationError("speedup must be in (0, 1000000] (got \(speedup))")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw SimulationError("\(name) is not UTF-8 text (a \(format.rawValue) trace is CSV)")
        }
        var lines = text.split(omittingEmptySubsequences: true) { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }
            .makeIterator()
        guard let first = lines.next() else { throw SimulationError("\(name) is empty") }
        let header = first.split(separator: ",", omittingEmptySubsequences: false).map {
            $0.trimmingCharacters(in: .whitespaces).lowercased()
        }
        let expected = Self.header(of: format)
        guard header.count >= expected.count, Array(header.prefix(expected.count)) == expected else {
            throw SimulationError(
                "\(name): line 1 is not a \(format.rawValue) header: expected columns \(expected.joined(separator: ", ")), found \(header.prefix(6).joined(separator: ", "))"
            )
        }
        var random = SplitMix(seed: seed)
        let popularity = ZipfDraw(count: models, exponent: zipf)
        var requests: [SimulatedRequest] = []
        var number = 1
        switch format {
        case .azureLLM, .burstGPT:
            var origin: Double?
            let timeColumn = 0
            let (promptColumn, outputColumn) = format == .azureLLM ? (1, 2) : (2, 3)
            while let line = lines.next() {
                number += 1
                let fields = line.split(separator: ",", omittingEmptySubsequences: false)
                guard fields.count >= expected.count else {
                    throw SimulationError(
                        "\(name): line \(number) has \(fields.count) columns, a \(format.rawValue) row has \(expected.count) or more"
                    )
                }
                guard let time = Self.time(fields[timeColumn]) else {
                    throw SimulationError(
                        "\(name): line \(number): `\(fields[timeColumn].prefix(40))` is not a timestamp (seconds, or YYYY-MM-DD HH:MM:SS[.fraction])"
                    )
                }
                let prompt = try Self.count(fields[promptColumn], line: number, name: name)
                let output = try Self.count(fields[outputColumn], line: number, name: name)
                guard requests.count < maxRequests else {
                    throw SimulationError("\(name) holds more than \(maxRequests) requests")
                }
                let start = origin ?? time
                origin = start
                requests.append(
                    SimulatedRequest(
                        at: (time - start) / speedup, model: popularity.draw(&random), promptTokens: max(1, prompt),
                        outputTokens: max(1, output)))
            }
        case .azureFunctions:
            var functions: [(total: Int, order: Int, counts: [(minute: Int, count: Int)])] = []
            var total = 0
            while let line = lines.next() {
                number += 1
                let fields = line.split(separator: ",", omittingEmptySubsequences: false)
                guard fields.count > expected.count, fields.count <= expected.count + 1440 else {
                    throw SimulationError(
                        "\(name): line \(number) has \(fields.count) columns, an azure-functions row has 5...1444 (four ids and a count per minute)"
                    )
                }
                var counts: [(Int, Int)] = []
                var sum = 0
                for (minute, field) in fields.dropFirst(expected.count).enumerated() {
                    let count = try Self.count(field, line: number, name: name)
                    if count > 0 { counts.append((minute, count)) }
                    sum += count
                    guard sum <= maxRequests, total + sum <= maxRequests else {
                        throw SimulationError("\(name) holds more than \(maxRequests) invocations")
                    }
                }
                total += sum
                functions.append((sum, functions.count, counts))
            }
            // The busiest function is the first model.
            functions.sort { ($0.total, -$0.order) > ($1.total, -$1.order) }
            requests.reserveCapacity(total)
            for (rank, function) in functions.enumerated() {
                for (minute, count) in function.counts {
                    for _ in 0..<count {
                        requests.append(
                            SimulatedRequest(
                                at: (Double(minute) + random.unit()) * 60 / speedup, model: rank % models,
                                promptTokens: promptTokens.draw(&random), outputTokens: outputTokens.draw(&random)))
                    }
                }
            }
            if let first = requests.map(\.at).min() {
                for index in requests.indices { requests[index].at -= first }
            }
        }
        guard !requests.isEmpty else { throw SimulationError("\(name) holds no requests") }
        // Rows out of order (traces are mostly sorted) are put in order; ties keep the file's.
        if zip(requests, requests.dropFirst()).contains(where: { $0.at > $1.at }) {
            requests = requests.enumerated().sorted { ($0.element.at, $0.offset) < ($1.element.at, $1.offset) }
                .map(\.element)
            let first = requests[0].at
            if first != 0 { for index in requests.indices { requests[index].at -= first } }
        }
        return requests
    }

    /// A non-negative whole count (a trailing `.0` allowed).
    static func count(_ field: Substring, line: Int, name: String) throws(SimulationError) -> Int {
        let text = field.trimmingCharacters(in: .whitespaces)
        if let value = Int(text), value >= 0, value <= 100_000_000 { return value }
        if let value = Double(text), value.isFinite, value >= 0, value <= 1e8, value == value.rounded() {
            return Int(value)
        }
        throw SimulationError("\(name): line \(line): `\(text.prefix(40))` is not a count of 0...100000000")
    }

    /// Seconds: a number, or a UTC date and time `YYYY-MM-DD HH:MM:SS[.fraction]` (a `T` between
    /// them and a trailing `Z` allowed) as seconds since 1970.
    static func time(_ field: Substring) -> Double? {
        let text = field.trimmingCharacters(in: .whitespaces)
        if let seconds = Double(text) { return seconds.isFinite && abs(seconds) < 1e12 ? seconds : nil }
        let bytes = Array(text.utf8)
        guard bytes.count >= 19, bytes.count <= 40, bytes[4] == 0x2D, bytes[7] == 0x2D,
            bytes[10] == 0x20 || bytes[10] == 0x54, bytes[13] == 0x3A, bytes[16] == 0x3A
        else { return nil }
        func number(_ range: Range<Int>) -> Int? {
            var value = 0
            for byte in bytes[range] {
                guard (0x30...0x39).contains(byte) else { return nil }
                value = value * 10 + Int(byte - 0x30)
            }
            return value
        }
        guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
            let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19),
            (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61
        else { return nil }
        var fraction = 0.0
        var rest = bytes[19...]
        if rest.last == 0x5A { rest = rest.dropLast() }  // Z
        if let dot = rest.first {
            guard dot == 0x2E, rest.count >= 2 else { return nil }
            var scale = 0.1
            for byte in rest.dropFirst() {
                guard (0x30...0x39).contains(byte) else { return nil }
                fraction += Double(byte - 0x30) * scale
                scale /= 10
            }
        }
        // Days from the civil date (Howard Hinnant's algorithm).
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        let days = era * 146_097 + dayOfEra - 719_468
        return Double(days * 86_400 + hour * 3600 + minute * 60 + second) + fraction
    }
}
