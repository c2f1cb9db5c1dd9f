import Foundation

/// Simulator runs the console shows beside the live figures: each directory `sllm simulate --out`
/// wrote (its `summary.csv` and `cdf.csv`), found in the experiments directory (itself one run,
/// or one run per subdirectory). Read when the console's view asks, never on a request's path.
struct SimulationRuns: Sendable {
    let directory: String

    /// One run: its figures per (point, policy), and each one's cold-start latency CDF.
    struct Run: Sendable, Codable, Equatable {
        var name: String
        var modified: Date?
        var rows: [Row] = []
        var cdfs: [CDF] = []
        /// Why the run could not be read (its files name the line); it is listed with nothing else.
        var error: String?
    }

    /// A summary row: one policy at one point of a sweep (`base` without a sweep). Latencies in
    /// seconds; nil where the run had no such request.
    struct Row: Sendable, Codable, Equatable {
        var point: String
        var policy: String
        var requests: Int
        var failed: Int
        var coldRequests: Int
        var coldStartP50: Double?
        var coldStartP99: Double?
        var coldFirstTokenP50: Double?
        var coldFirstTokenP99: Double?
        var migrations: Int
    }

    /// Cold-start latency (a request's arrival to an instance taking it) against the fraction of
    /// cold requests that waited at most that long, thinned to at most ``pointsPerCDF`` points.
    struct CDF: Sendable, Codable, Equatable {
        var point: String
        var policy: String
        var points: [[Double]]
    }

    /// The most runs listed, bytes read of one file, and points kept per curve.
    static let maxRuns = 32
    static let maxFileBytes = 16 << 20
    static let pointsPerCDF = 120

    /// Every run found, by name; an absent directory has none.
    func list() -> [Run] {
        var runs: [Run] = []
        if FileManager.default.fileExists(atPath: directory + "/summary.csv") {
            runs.append(Self.read(directory, name: (directory as NSString).lastPathComponent))
        }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for entry in entries.sorted() where !entry.hasPrefix(".") && runs.count < Self.maxRuns {
            let path = directory + "/" + entry
            guard FileManager.default.fileExists(atPath: path + "/summary.csv") else { continue }
            runs.append(Self.read(path, name: entry))
        }
        return runs
    }

    /// A run's files, read and parsed; what fails is the run's `error`.
    static func read(_ path: String, name: String) -> Run {
        var run = Run(name: name)
        run.modified =
            (try? FileManager.default.attributesOfItem(atPath: path + "/summary.csv"))?[.modificationDate] as? Date
        do {
            let summary = try text(of: path + "/summary.csv")
            let cdf = FileManager.default.fileExists(atPath: path + "/cdf.csv") ? try text(of: path + "/cdf.csv") : ""
            run.rows = try parseSummary(summary)
            run.cdfs = try parseCDF(cdf)
        } catch {
            run.rows = []
            run.cdfs = []
            run.error = "\(error)"
        }
        return run
    }

    private static func text(of path: String) throws(ExperimentError) -> String {
        // Only a regular file is opened (a FIFO would block the read until a writer came).
        guard isRegular(path), let handle = FileHandle(forReadingAtPath: path) else {
            throw ExperimentError("cannot read \((path as NSString).lastPathComponent)")
        }
        defer { try? handle.close() }
        let data = (try? handle.read(upToCount: maxFileBytes + 1)) ?? Data()
        guard data.count <= maxFileBytes else {
            throw ExperimentError("\((path as NSString).lastPathComponent) is larger than \(maxFileBytes >> 20) MiB")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ExperimentError("\((path as NSString).lastPathComponent) is not UTF-8 text")
        }
        return text
    }

    /// Whether `path` (followed through links) is a regular file.
    private static func isRegular(_ path: String) -> Bool {
        let target = (path as NSString).resolvingSymlinksInPath
        return (try? FileManager.default.attributesOfItem(atPath: target))?[.type] as? FileAttributeType == .typeRegular
    }

    /// `summary.csv` as `sllm simulate` writes it: a header naming the columns (read by name, so
    /// columns added later do not matter), then one row per point and policy.
    static func parseSummary(_ text: String) throws(ExperimentError) -> [Row] {
        let table = try CSVTable(text, file: "summary.csv")
        var rows: [Row] = []
        for line in table.rows.indices {
            func field(_ name: String) throws(ExperimentError) -> String { try table.field(name, line) }
            func int(_ name: String) throws(ExperimentError) -> Int {
                let value = try field(name)
                guard let number = Int(value), number >= 0 else {
                    throw table.fail(line, "\(name) `\(value.prefix(40))` is not a count")
                }
                return number
            }
            /// Seconds, or nil for an empty or `nan` field (no such request).
            func seconds(_ name: String) throws(ExperimentError) -> Double? {
                let value = try field(name)
                if value.isEmpty || value.lowercased() == "nan" { return nil }
                guard let number = Double(value), number.isFinite, number >= 0 else {
                    throw table.fail(line, "\(name) `\(value.prefix(40))` is not a number of seconds")
                }
                return number
            }
            rows.append(
                Row(
                    point: try field("point"), policy: try field("policy"), requests: try int("requests"),
                    failed: try int("failed"), coldRequests: try int("cold_requests"),
                    coldStartP50: try seconds("cold_startup_p50"), coldStartP99: try seconds("cold_startup_p99"),
                    coldFirstTokenP50: try seconds("cold_ttft_p50"), coldFirstTokenP99: try seconds("cold_ttft_p99"),
                    migrations: try int("migrations")))
            guard rows.count <= 1000 else { throw table.fail(line, "more than 1000 rows") }
        }
        return rows
    }

    /// `cdf.csv`: `point,policy,cold_start_seconds,fraction`, rising within each curve.
    static func parseCDF(_ text: String) throws(ExperimentError) -> [CDF] {
        guard !text.isEmpty else { return [] }
        let table = try CSVTable(text, file: "cdf.csv")
        var order: [String] = []
        var curves: [String: CDF] = [:]
        for line in table.rows.indices {
            let point = try table.field("point", line)
            let policy = try table.field("policy", line)
            let seconds = try table.field("cold_start_seconds", line)
            let fraction = try table.field("fraction", line)
            guard let x = Double(seconds), x.isFinite, x >= 0 else {
                throw table.fail(line, "cold_start_seconds `\(seconds.prefix(40))` is not a number of seconds")
            }
            guard let y = Double(fraction), y.isFinite, (0...1).contains(y) else {
                throw table.fail(line, "fraction `\(fraction.prefix(40))` is not between 0 and 1")
            }
            let key = point + "\u{0}" + policy
            if curves[key] == nil {
                guard order.count < 256 else { throw table.fail(line, "more than 256 curves") }
                order.append(key)
                curves[key] = CDF(point: point, policy: policy, points: [])
            }
            curves[key]!.points.append([x, y])
        }
        return order.compactMap { curves[$0] }.map { curve in
            var curve = curve
            curve.points = thin(curve.points)
            return curve
        }
    }

    /// At most ``pointsPerCDF`` points of a curve, evenly spaced by index, its last kept.
    static func thin(_ points: [[Double]]) -> [[Double]] {
        guard points.count > pointsPerCDF else { return points }
        let step = Double(points.count - 1) / Double(pointsPerCDF - 1)
        return (0..<pointsPerCDF).map { points[Int((Double($0) * step).rounded())] }
    }
}

/// Why a simulator run's files could not be read.
struct ExperimentError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A CSV file without quoting, as `sllm simulate` writes them: a header, then rows with as many
/// fields (blank lines skipped, `\r\n` accepted).
private struct CSVTable {
    let file: String
    let columns: [String: Int]
    let rows: [[Substring]]
    /// Each row's line number in the file, for errors.
    let lines: [Int]

    init(_ text: String, file: String) throws(ExperimentError) {
        self.file = file
        var header: [Substring]?
        var rows: [[Substring]] = []
        var lines: [Int] = []
        // (`\r\n` is one Character to Swift: split on it as well as on `\n`.)
        let split = text.split(omittingEmptySubsequences: false) { $0 == "\n" || $0 == "\r\n" }
        for (index, line) in split.enumerated() {
            if line.isEmpty { continue }
            let fields = line.split(separator: ",", omittingEmptySubsequences: false)
            guard let header else {
                header = fields
                continue
            }
            guard fields.count == header.count else {
                throw ExperimentError(
                    "\(file) line \(index + 1) has \(fields.count) fields; its header names \(header.count)")
            }
            rows.append(fields)
            lines.append(index + 1)
        }
        guard let header else { throw ExperimentError("\(file) is empty") }
        var columns: [String: Int] = [:]
        for (index, name) in header.enumerated() {
            let key = name.trimmingCharacters(in: .whitespaces)
            if columns[key] == nil { columns[key] = index }
        }
        self.columns = columns
        self.rows = rows
        self.lines = lines
    }

    func field(_ name: String, _ row: Int) throws(ExperimentError) -> String {
        guard let column = columns[name] else { throw ExperimentError("\(file) has no column `\(name)`") }
        return String(rows[row][column]).trimmingCharacters(in: .whitespaces)
    }

    func fail(_ row: Int, _ message: String) -> ExperimentError {
        ExperimentError("\(file) line \(lines[row]): \(message)")
    }
}
