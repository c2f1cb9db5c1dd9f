import ArgumentParser
import Foundation
import NIOHTTP1
import Store

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Deployments, their instances (state, age), where each checkpoint sits, requests in flight.")

    @OptionGroup var server: ServerOptions
    @Flag(help: "Print the server's JSON.") var json = false
    @Flag(help: "Show the scheduler's latest placement decisions: each estimate's terms beside the time taken.")
    var decisions = false
    @Option(help: "How many decisions --decisions shows (1 to 1000).") var limit = 20
    @Flag(
        help:
            "Follow the server's event stream (GET /admin/events, as the web console does) and redraw on every change (with --json: one snapshot per line); Ctrl-C stops."
    )
    var watch = false

    func validate() throws {
        guard (1...1000).contains(limit) else { throw ValidationError("--limit must be from 1 to 1000") }
        if watch && decisions { throw ValidationError("--watch shows the status tables; leave out --decisions") }
    }

    func run() async throws {
        if decisions { return try await showDecisions() }
        if watch { return try await follow() }
        let reports = try await server.call(.GET, "/admin/deployments") as? [[String: Any]] ?? []
        if json { return printJSON(reports) }
        let nodes = try await server.call(.GET, "/admin/nodes") as? [[String: Any]] ?? []
        print(Self.tables(reports: reports, nodes: nodes))
    }

    /// Redraws the tables from each snapshot of the event stream; opens the next stream when
    /// one ends (the server ends each after an hour).
    private func follow() async throws {
        let terminal = isatty(STDOUT_FILENO) == 1
        while true {
            try await server.follow("/admin/events") { event in
                let snapshot = event["snapshot"] as? [String: Any] ?? [:]
                if json {
                    let data = try JSONSerialization.data(withJSONObject: event, options: [.sortedKeys])
                    print(String(decoding: data, as: UTF8.self))
                } else {
                    let reports = snapshot["deployments"] as? [[String: Any]] ?? []
                    let nodes = snapshot["nodes"] as? [[String: Any]] ?? []
                    // Home and clear on a terminal; elsewhere, one block after another.
                    print((terminal ? "\u{1B}[H\u{1B}[2J" : "\n") + "\(event["server_time"] ?? "")  (Ctrl-C stops)")
                    print(Self.tables(reports: reports, nodes: nodes))
                }
                fflush(nil)  // every stream: a pipe is block-buffered
            }
        }
    }

    /// The deployments, instances and nodes tables.
    static func tables(reports: [[String: Any]], nodes: [[String: Any]]) -> String {
        var rows = [
            [
                "DEPLOYMENT", "MODEL", "STATE", "INSTANCES", "MIN/MAX", "TARGET", "KEEP-ALIVE", "TIERS", "IN-FLIGHT",
                "QUEUED",
            ]
        ]
        var instanceRows = [["DEPLOYMENT", "INSTANCE", "STATE", "AGE", "FROM", "IN-FLIGHT"]]
        for report in reports {
            let status = report["status"] as? [String: Any] ?? [:]
            let spec = status["spec"] as? [String: Any] ?? [:]
            let scaling = spec["scaling"] as? [String: Any] ?? [:]
            let instances = status["instances"] as? [[String: Any]] ?? []
            var state = report["state"] as? String ?? "?"
            if state == "pulling", let fraction = report["pull_progress"] as? Double {
                state += " \(Int(fraction * 100))%"
            }
            let name = spec["name"] as? String ?? "?"
            rows.append([
                name, spec["model"] as? String ?? "?", state, String(instances.count),
                "\(scaling["min_instances"] ?? "?")/\(scaling["max_instances"] ?? "?")",
                "\(scaling["target_concurrency"] ?? "?")",
                scaling["keep_alive"] as? String ?? "?",
                (report["tiers"] as? [String] ?? []).joined(separator: ",").ifEmpty("-"),
                "\(status["in_flight"] ?? 0)", "\(status["queued"] ?? 0)",
            ])
            for instance in instances {
                var state = instance["state"] as? String ?? "?"
                if state == "starting", let fraction = instance["load_progress"] as? Double {
                    state += " \(Int(fraction * 100))%"
                }
                instanceRows.append([
                    name, instance["id"] as? String ?? "?", state, age(instance["started_at"] as? String),
                    instance["tier"] as? String ?? "-", "\(instance["in_flight"] ?? 0)",
                ])
            }
        }
        var text = ModelSummary.table(rows)
        if instanceRows.count > 1 { text += "\n\n" + ModelSummary.table(instanceRows) }
        if !nodes.isEmpty { text += "\n\n" + ModelSummary.table(Self.nodeRows(nodes)) }
        return text
    }

    private func showDecisions() async throws {
        let records = try await server.call(.GET, "/admin/decisions?limit=\(limit)") as? [[String: Any]] ?? []
        if json { return printJSON(records) }
        guard !records.isEmpty else {
            print("no placement decisions yet (the first cold start makes one)")
            return
        }
        var rows = [
            [
                "TIME", "DEPLOYMENT", "INSTANCE", "POLICY", "NODE", "FROM", "ESTIMATE",
                "QUEUED + BYTES / RATE [+ ROOM]",
                "ACTUAL", "OUTCOME", "OTHERS",
            ]
        ]
        func seconds(_ value: Any?) -> String {
            (value as? Double).map { String(format: "%.3f s", $0) } ?? "-"
        }
        for record in records {
            let bytes = Int64(record["checkpoint_bytes"] as? Int ?? 0)
            let rate = (record["bandwidth"] as? Double).map { formatBytes(Int64($0)) + "/s" } ?? "unmeasured"
            let others = (record["candidates"] as? [[String: Any]] ?? []).filter {
                $0["node"] as? String != record["node"] as? String
            }.map { "\($0["node"] as? String ?? "?")(\($0["tier"] as? String ?? "?"))" }
            let time = (record["at"] as? String).map { String($0.dropFirst(11).prefix(8)) } ?? "?"
            rows.append([
                time, record["deployment"] as? String ?? "?", record["instance"] as? String ?? "?",
                record["policy"] as? String ?? "?", record["node"] as? String ?? "?", record["tier"] as? String ?? "?",
                seconds(record["estimated_seconds"]),
                "\(String(format: "%.3f", record["queued_seconds"] as? Double ?? 0)) + \(formatBytes(bytes)) / \(rate)"
                    + ((record["room_seconds"] as? Double).flatMap { $0 > 0 ? String(format: " + %.3f room", $0) : nil }
                        ?? ""),
                seconds(record["actual_seconds"]), record["outcome"] as? String ?? "starting",
                others.joined(separator: ",").ifEmpty("-"),
            ])
        }
        print(ModelSummary.table(rows))
    }

    /// The nodes table: each live node's cores, memory and DRAM cache use, its instances and
    /// jobs; a lost or unreachable node with why.
    static func nodeRows(_ nodes: [[String: Any]]) -> [[String]] {
        var rows = [["NODE", "STATE", "CORES", "MEMORY", "DRAM CACHE", "INSTANCES", "JOBS", "NOTE"]]
        for node in nodes {
            let inventory = node["inventory"] as? [String: Any]
            func bytes(_ key: String) -> String {
                (inventory?[key] as? Int).map { formatBytes(Int64($0)) } ?? "-"
            }
            let dram = (inventory?["tiers"] as? [[String: Any]])?.first { $0["tier"] as? String == "dram" }
            let dramHeld = dram?["used_bytes"] as? Int
            var note = node["reason"] as? String ?? ""
            if let since = node["since"] as? String { note = "since \(since): " + note }
            rows.append([
                node["node"] as? String ?? "?", node["state"] as? String ?? "?",
                (inventory?["cores"] as? Int).map(String.init) ?? "-",
                inventory == nil ? "-" : "\(bytes("reserved_bytes")) / \(bytes("memory_budget_bytes"))",
                inventory == nil ? "-" : "\(formatBytes(Int64(dramHeld ?? 0))) / \(bytes("dram_budget_bytes"))",
                (inventory?["instances"] as? [Any]).map { String($0.count) } ?? "-",
                (inventory?["running_jobs"] as? Int).map(String.init) ?? "-", note.ifEmpty("-"),
            ])
        }
        return rows
    }
}

struct PS: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ps",
        abstract: "What is loaded: instances, their memory, and until when they stay (Ollama's `ps`).")

    @OptionGroup var server: ServerOptions
    @Flag(help: "Print the server's JSON.") var json = false

    func run() async throws {
        let rows = try await server.call(.GET, "/admin/ps") as? [[String: Any]] ?? []
        if json { return printJSON(rows) }
        var table = [["NAME", "INSTANCE", "NODE", "STATE", "MEMORY", "IN-FLIGHT", "UNTIL"]]
        for row in rows {
            let instance = row["instance"] as? [String: Any] ?? [:]
            let inFlight = instance["in_flight"] as? Int ?? 0
            var until = "-"
            if inFlight > 0 {
                until = "busy"
            } else if let expires = (instance["expires_at"] as? String).flatMap(parseDate) {
                until = "\(Int(max(0, expires.timeIntervalSinceNow).rounded())) s from now"
            } else if instance["keep_alive"] as? String == "forever" || instance["state"] as? String == "ready" {
                until = "forever"
            }
            table.append([
                row["deployment"] as? String ?? "?", instance["id"] as? String ?? "?",
                instance["node"] as? String ?? "-", instance["state"] as? String ?? "?",
                formatBytes(Int64(instance["memory_bytes"] as? Int ?? 0)), String(inFlight), until,
            ])
        }
        print(ModelSummary.table(table))
    }
}

func printJSON(_ value: Any) {
    let data =
        (try? JSONSerialization.data(
            withJSONObject: value, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data()
    print(String(decoding: data, as: UTF8.self))
}

private func parseDate(_ text: String) -> Date? { ISO8601DateFormatter().date(from: text) }

private func age(_ text: String?) -> String {
    guard let date = text.flatMap(parseDate) else { return "-" }
    let seconds = Int(-date.timeIntervalSinceNow)
    return seconds < 120 ? "\(seconds)s" : seconds < 7200 ? "\(seconds / 60)m" : "\(seconds / 3600)h"
}

extension String {
    fileprivate func ifEmpty(_ replacement: String) -> String { isEmpty ? replacement : self }
}
