import Foundation
import TestSupport
import Testing

@testable import Serving

/// The simulator runs the console plots: `summary.csv` and `cdf.csv` read by column name, one
/// run per subdirectory, a broken file named with its line (and the other runs still listed),
/// curves thinned, and mutated files never crashing the reader.
@Suite struct SimulationRunsTests {
    static let summary = """
        point,sweep,value,policy,requests,served,failed,cold_requests,starts,cold_ttft_p50,cold_ttft_p90,cold_ttft_p99,cold_startup_p50,cold_startup_p99,ttft_p50,ttft_p99,migrations,migrated_requests
        base,,0,locality,300,300,0,40,38,0.462162,2.0,6.982294,0.032665,0.507111,0.37,5.9,0,0
        base,,0,kserve,300,290,10,120,100,72.75,231.9,803.43,72.0985,801.478,20.2,635.2,0,0

        """

    static func cdf(points: Int) -> String {
        var text = "point,policy,cold_start_seconds,fraction\r\n"
        for policy in ["locality", "kserve"] {
            for index in 1...points {
                text += "base,\(policy),\(Double(index) * 0.01),\(Double(index) / Double(points))\r\n"
            }
        }
        return text
    }

    @Test func runsAreReadByColumnNameAndListedPerDirectory() throws {
        let directory = try TemporaryDirectory("experiments")
        defer { directory.remove() }
        func write(_ run: String, _ summary: String, _ cdf: String?) throws {
            try FileManager.default.createDirectory(atPath: directory.file(run), withIntermediateDirectories: true)
            try Data(summary.utf8).write(to: URL(fileURLWithPath: directory.file(run + "/summary.csv")))
            if let cdf { try Data(cdf.utf8).write(to: URL(fileURLWithPath: directory.file(run + "/cdf.csv"))) }
        }
        try write("scale", Self.summary, Self.cdf(points: 500))
        try write("broken", Self.summary.replacingOccurrences(of: "0.507111", with: "soon"), nil)
        try write("short", "point,policy\nbase\n", nil)
        try FileManager.default.createDirectory(atPath: directory.file("not-a-run"), withIntermediateDirectories: true)
        // A FIFO in place of a file is refused, not read (the read would wait for a writer forever).
        try FileManager.default.createDirectory(atPath: directory.file("fifo"), withIntermediateDirectories: true)
        #expect(mkfifo(directory.file("fifo/summary.csv"), 0o600) == 0)

        let runs = SimulationRuns(directory: directory.path).list()
        #expect(runs.map(\.name) == ["broken", "fifo", "scale", "short"])
        #expect(runs.first { $0.name == "fifo" }?.error == "cannot read summary.csv")
        let scale = try #require(runs.first { $0.name == "scale" })
        #expect(scale.error == nil && scale.modified != nil)
        #expect(scale.rows.map(\.policy) == ["locality", "kserve"])
        #expect(scale.rows.first?.coldStartP99 == 0.507111 && scale.rows.first?.coldRequests == 40)
        #expect(scale.rows.last?.failed == 10 && scale.rows.last?.coldFirstTokenP99 == 803.43)
        #expect(scale.cdfs.map(\.policy) == ["locality", "kserve"])
        #expect(
            scale.cdfs.allSatisfy { $0.points.count == SimulationRuns.pointsPerCDF && $0.points.last == [5.0, 1.0] })
        #expect(
            runs.first { $0.name == "broken" }?.error
                == "summary.csv line 2: cold_startup_p99 `soon` is not a number of seconds")
        #expect(runs.first { $0.name == "short" }?.error == "summary.csv line 2 has 1 fields; its header names 2")
        // A directory holding one run's files is that run; none is no run.
        #expect(SimulationRuns(directory: directory.file("scale")).list().map(\.name) == ["scale"])
        #expect(SimulationRuns(directory: directory.file("absent")).list().isEmpty)
    }

    @Test func badFieldsAreNamed() {
        let cases: [(String, String)] = [
            ("point,policy,cold_start_seconds,fraction\nbase,a,-1,0.5\n", "cdf.csv line 2: cold_start_seconds `-1`"),
            ("point,policy,cold_start_seconds,fraction\nbase,a,1,1.5\n", "cdf.csv line 2: fraction `1.5`"),
            ("point,policy,seconds\nbase,a,1\n", "cdf.csv has no column `cold_start_seconds`"),
            ("\n\n", "cdf.csv is empty"),
        ]
        for (text, message) in cases {
            #expect {
                _ = try SimulationRuns.parseCDF(text)
            } throws: { "\($0)".hasPrefix(message) }
        }
        #expect(throws: ExperimentError.self) {
            _ = try SimulationRuns.parseSummary(
                Self.summary.replacingOccurrences(of: ",300,300,0,40", with: ",x,300,0,40"))
        }
    }

    /// Bounded fuzz (`SLLM_FUZZ_ITERATIONS`, default 300): mutated files parse or fail with an
    /// ExperimentError; what parses keeps its bounds.
    @Test func mutatedFilesParseOrFailCleanly() {
        let iterations = Fuzz.iterations(default: 300)
        var generator = SeededGenerator(seed: 29)
        let pieces = [",", "\n", "\r\n", "nan", "-", "1e999", "\u{0}", "é", "point", "\"", ",,,,"].map {
            Array($0.utf8)
        }
        for index in 0..<iterations {
            let summary = index % 2 == 0
            var bytes = Array((summary ? Self.summary : Self.cdf(points: 20)).utf8)
            Fuzz.mutate(&bytes, edits: 1...6, pieces: pieces, using: &generator)
            let text = String(decoding: bytes, as: UTF8.self)
            do {
                if summary {
                    let rows = try SimulationRuns.parseSummary(text)
                    #expect(rows.allSatisfy { ($0.coldStartP99 ?? 0) >= 0 && $0.requests >= 0 })
                } else {
                    let curves = try SimulationRuns.parseCDF(text)
                    #expect(curves.allSatisfy { $0.points.count <= SimulationRuns.pointsPerCDF })
                    #expect(curves.allSatisfy { $0.points.allSatisfy { (0...1).contains($0[1]) && $0[0] >= 0 } })
                }
            } catch {
                #expect("\(error)".hasPrefix(summary ? "summary.csv" : "cdf.csv"), "\(error)")
            }
        }
    }
}
