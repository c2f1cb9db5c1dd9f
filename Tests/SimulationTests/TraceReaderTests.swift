import Foundation
import Scheduling
import Testing

@testable import Simulation

@Suite struct TraceReaderTests {
    static func sample(_ name: String) throws -> Data {
        let url = try #require(
            Bundle.module.url(forResource: name, withExtension: "csv", subdirectory: "Resources/traces"))
        return try Data(contentsOf: url)
    }

    /// What every parsed trace satisfies.
    static func checkShape(_ requests: [SimulatedRequest], models: Int) {
        #expect(requests.first?.at == 0)
        #expect(zip(requests, requests.dropFirst()).allSatisfy { $0.at <= $1.at })
        #expect(requests.allSatisfy { (0..<models).contains($0.model) && $0.promptTokens >= 1 && $0.outputTokens >= 1 })
    }

    @Test func azureLLMKeepsTimesAndTokenCounts() throws {
        let requests = try TraceReader(format: .azureLLM, models: 50).read(Self.sample("azure-llm-sample"))
        #expect(requests.count == 600)
        Self.checkShape(requests, models: 50)
        // 18:15:47.2675620 then 18:15:47.9503860: 0.682824 s apart.
        #expect(abs(requests[1].at - 0.682_824) < 1e-6)
        #expect(requests[0].promptTokens == 161 && requests[0].outputTokens == 15)
        // Twice as fast: every time halves.
        let fast = try TraceReader(format: .azureLLM, models: 50, speedup: 2).read(Self.sample("azure-llm-sample"))
        #expect(abs(fast.last!.at * 2 - requests.last!.at) < 1e-6)
        // No model column: the models are drawn by Zipf popularity, the first the most popular.
        let counts = Dictionary(grouping: requests, by: \.model).mapValues(\.count)
        #expect(counts[0] == counts.values.max())
    }

    @Test func burstGPTKeepsTokenCountsAndLiftsEmptyAnswers() throws {
        let requests = try TraceReader(format: .burstGPT, models: 8).read(Self.sample("burstgpt-sample"))
        #expect(requests.count == 500)
        Self.checkShape(requests, models: 8)
        #expect(requests[0].promptTokens == 345 && requests[0].outputTokens == 28)
        let zero = try TraceReader(format: .burstGPT, models: 1).read(
            Data("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n3,GPT-4,10,0,10,API log\n".utf8)
        )
        #expect(zero == [SimulatedRequest(at: 0, model: 0, promptTokens: 10, outputTokens: 1)])
    }

    @Test func azureFunctionsSpreadsEachMinutesInvocations() throws {
        let data = try Self.sample("azure-functions-sample")
        let requests = try TraceReader(
            format: .azureFunctions, models: 10, promptTokens: .fixed(20), outputTokens: .fixed(5)
        ).read(data)
        #expect(requests.count == 5068)
        Self.checkShape(requests, models: 10)
        #expect(requests.allSatisfy { $0.promptTokens == 20 && $0.outputTokens == 5 })
        // The busiest function is the first model; 24 functions over 10 models wrap round.
        let counts = Dictionary(grouping: requests, by: \.model).mapValues(\.count)
        #expect(counts[0] == counts.values.max())
        #expect(counts.count == 10)
        // A function's minute: its invocations fall inside that minute.
        let one = try TraceReader(format: .azureFunctions, models: 1).read(
            Data(
                ("HashOwner,HashApp,HashFunction,Trigger," + (1...3).map(String.init).joined(separator: ",")
                    + "\na,b,c,http,0,0,4\n").utf8))
        #expect(one.count == 4)
        #expect(one.allSatisfy { $0.at < 60 })
    }

    @Test func timestampsParseAsUTC() {
        #expect(TraceReader.time("1970-01-01 00:00:00") == 0)
        #expect(TraceReader.time("2000-03-01 00:00:00") == 951_868_800)
        #expect(TraceReader.time("2023-11-16T18:15:46.5Z") == 1_700_158_546.5)
        #expect(TraceReader.time("12.25") == 12.25)
        for bad in [
            "", "2023-13-01 00:00:00", "2023-11-16 18:15", "2023-11-16 18:15:46.", "nan", "1e300",
            "2023/11/16 18:15:46",
        ] {
            #expect(TraceReader.time(Substring(bad)) == nil, "\(bad)")
        }
    }

    @Test func badFilesAreRefusedNamingTheLine() {
        func message(_ format: TraceFormat, _ text: String, maxRequests: Int = 1000) -> String? {
            do {
                _ = try TraceReader(format: format, models: 4, maxRequests: maxRequests).read(Data(text.utf8))
                return nil
            } catch { return error.message }
        }
        #expect(message(.azureLLM, "")?.contains("empty") == true)
        #expect(message(.azureLLM, "a,b,c\n1,2,3\n")?.contains("not a azure-llm header") == true)
        #expect(message(.azureLLM, "TIMESTAMP,ContextTokens,GeneratedTokens\n")?.contains("no requests") == true)
        #expect(message(.azureLLM, "TIMESTAMP,ContextTokens,GeneratedTokens\n1,2,3\n1,2\n")?.contains("line 3") == true)
        #expect(
            message(.azureLLM, "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,2,3\n")?.contains("not a timestamp")
                == true)
        #expect(
            message(.burstGPT, "Timestamp,Model,Request tokens,Response tokens\n1,x,-4,3\n")?.contains("line 2") == true
        )
        #expect(
            message(.azureFunctions, "HashOwner,HashApp,HashFunction,Trigger,1\na,b,c,http\n")?.contains("columns")
                == true)
        #expect(
            message(.azureFunctions, "HashOwner,HashApp,HashFunction,Trigger,1\na,b,c,http,2000\n", maxRequests: 100)?
                .contains("more than 100") == true)
        #expect(
            message(.azureLLM, "TIMESTAMP,ContextTokens,GeneratedTokens\n1,1,1\n2,1,1\n3,1,1\n", maxRequests: 2) != nil)
        do {
            _ = try TraceReader(format: .azureLLM, models: 1).read(Data([0x54, 0xFF, 0xFE, 0x0A]))
            Issue.record("bytes that are not UTF-8 were read")
        } catch { #expect(error.message.contains("UTF-8")) }
    }

    @Test func rowsOutOfOrderAreSorted() throws {
        let requests = try TraceReader(format: .burstGPT, models: 1).read(
            Data("Timestamp,Model,Request tokens,Response tokens\r\n10,a,1,1\r\n4,a,2,1\r\n7,a,3,1\r\n".utf8))
        #expect(requests.map(\.at) == [0, 3, 6])
        #expect(requests.map(\.promptTokens) == [2, 3, 1])
    }

    /// Mangled traces (bytes flipped, cut, fields and lines added): each is read or refused with
    /// a message, never a crash, and what is read has the shape of a trace.
    @Test func fuzzedTracesAreReadOrRefused() throws {
        var random = SplitMix(seed: 99)
        let samples: [(TraceFormat, [UInt8])] = try [
            (.azureLLM, Array(Self.sample("azure-llm-sample").prefix(3000))),
            (.burstGPT, Array(Self.sample("burstgpt-sample").prefix(3000))),
            (.azureFunctions, Array(Self.sample("azure-functions-sample").prefix(12000))),
        ]
        let inserts: [[UInt8]] = [
            Array(",".utf8), Array("\n".utf8), Array("-1".utf8), Array("1e308".utf8),
            Array("\r\n".utf8), Array("9999999999".utf8), [0], [0xC3], Array(" ".utf8), Array("nan".utf8),
        ]
        var read = 0
        for round in 0..<600 {
            let (format, original) = samples[round % samples.count]
            var bytes = original
            for _ in 0..<(1 + Int(random.next() % 6)) {
                guard !bytes.isEmpty else { break }
                let at = Int(random.next() % UInt64(bytes.count))
                switch random.next() % 4 {
                case 0: bytes[at] = UInt8(truncatingIfNeeded: random.next())
                case 1: bytes.removeSubrange(at..<min(bytes.count, at + Int(random.next() % 40)))
                case 2: bytes.insert(contentsOf: inserts[Int(random.next() % UInt64(inserts.count))], at: at)
                default: bytes = Array(bytes.prefix(at))
                }
            }
            do {
                let requests = try TraceReader(format: format, models: 7, maxRequests: 200_000).read(Data(bytes))
                Self.checkShape(requests, models: 7)
                #expect(requests.allSatisfy { $0.at.isFinite })
                read += 1
            } catch {
                #expect(!error.message.isEmpty)
            }
        }
        #expect(read > 0)
    }
}
