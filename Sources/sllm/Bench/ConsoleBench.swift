import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Store

#if canImport(Glibc)
    import Glibc
#endif

/// `sllm bench console`: what open consoles cost a server. The same `sllm serve` is measured with
/// no viewer and with `--viewers` of them, alternating: each viewer does what a console tab does
/// (loads the page, its script and style and one snapshot, then follows `/admin/events`). Per
/// phase: the server's CPU while it is otherwise idle (its own utime + stime from /proc), then
/// the round trip of one-token completions on a warm instance.
struct ConsoleBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "console",
        abstract: "CPU and request latency an idle server pays for open web consoles, against none, alternating.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Model (pulled if missing).") var model = ModelSource.defaultModel.name
    @Option(help: "Consoles open at once (each a tab's page load and event stream).") var viewers = 20
    @Option(help: "Seconds of idle CPU measured per phase.") var seconds = 30
    @Option(help: "One-token completions timed per phase.") var requests = 100
    @Option(help: "Rounds (each: a phase without viewers and one with them, alternating which goes first).")
    var rounds = 3

    func validate() throws {
        guard (1...500).contains(viewers) else { throw ValidationError("--viewers must be from 1 to 500") }
        guard (1...3600).contains(seconds) else { throw ValidationError("--seconds must be from 1 to 3600") }
        guard (1...100_000).contains(requests) else { throw ValidationError("--requests must be from 1 to 100000") }
        guard (1...100).contains(rounds) else { throw ValidationError("--rounds must be from 1 to 100") }
    }

    func run() async throws {
        _ = global.bootstrap()
        let name = try await ensurePulled(model, global: global)
        let scratch = try benchScratch("console", linking: name, into: ["serve"], global: global)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let serve = try ServerProcess.start(
            executable: sllmExecutablePath(),
            arguments: [
                "serve", "--data-dir", scratch + "/serve", "--default-model", "", "--cache-dir",
                scratch + "/serve-cache", "--port", "0", "--threads", "1", "--no-dram-fill",
            ], log: scratch + "/serve.log", banner: "serving on")
        defer { serve.stop() }
        let http = BenchHTTP()
        defer { try? http.shutdown() }
        let request: [String: Any] = ["model": "bench", "prompt": "Hi", "max_tokens": 1, "temperature": 0]
        _ = try await http.json(
            .POST, serve.url + "/admin/deployments", ["model": name.rawValue, "name": "bench", "keep_alive": "-1"])
        for _ in 0..<5 { _ = try await http.json(.POST, serve.url + "/v1/completions", request) }
        print(
            "sllm serve at \(serve.url), model \(name); \(viewers) consoles against none, \(rounds) round(s) of \(seconds) s idle + \(requests) one-token completions per phase"
        )

        var idle: [Bool: [Double]] = [:]
        var latency: [Bool: [Double]] = [:]
        var received = 0
        for round in 0..<rounds {
            for withViewers in round % 2 == 0 ? [false, true] : [true, false] {
                let consoles = withViewers ? try await openConsoles(serve.url, http: http) : nil
                // The page loads settle before the measurement starts.
                try await Task.sleep(for: .seconds(2))
                let before = try cpuSeconds(serve.process.processIdentifier)
                let start = ContinuousClock.now
                try await Task.sleep(for: .seconds(seconds))
                let used = try cpuSeconds(serve.process.processIdentifier) - before
                let wall = (ContinuousClock.now - start) / .seconds(1)
                idle[withViewers, default: []].append(used / wall * 100)
                var times: [Double] = []
                for _ in 0..<requests {
                    let began = ContinuousClock.now
                    _ = try await http.json(.POST, serve.url + "/v1/completions", request)
                    times.append((ContinuousClock.now - began) / .milliseconds(1))
                }
                latency[withViewers, default: []].append(Sample(values: times).median)
                if let consoles {
                    consoles.task.cancel()
                    received += await consoles.bytes.value
                }
                print(
                    String(
                        format: "  round %d, %@: idle CPU %.3f%% of a core, completion median %.2f ms", round + 1,
                        withViewers ? "\(viewers) consoles" : "no console", idle[withViewers]!.last!,
                        latency[withViewers]!.last!))
            }
        }
        let (cpuWithout, cpuWith) = (Sample(values: idle[false]!), Sample(values: idle[true]!))
        let (latencyWithout, latencyWith) = (Sample(values: latency[false]!), Sample(values: latency[true]!))
        print("idle CPU, % of one core, median (min–max) of \(rounds):")
        print("  no console              \(cpuWithout.formatted(3))")
        print("  \(viewers) consoles             \(cpuWith.formatted(3))")
        print(
            String(
                format: "  added                   %.3f%% of a core (%.3f%% of the machine's %d cores)",
                cpuWith.median - cpuWithout.median, (cpuWith.median - cpuWithout.median) / Double(cpuCount()),
                cpuCount()))
        print("one-token completion round trip, ms, median of each round's median:")
        print("  no console              \(latencyWithout.formatted(2))")
        print("  \(viewers) consoles             \(latencyWith.formatted(2))")
        print(String(format: "  added                   %.3f ms", latencyWith.median - latencyWithout.median))
        print("event-stream bytes the consoles received: \(received)")
    }

    /// `viewers` consoles: each loads the page, its script and style and a snapshot, then reads
    /// the event stream until cancelled. The task's value: the stream bytes they received.
    private func openConsoles(_ base: String, http: BenchHTTP) async throws -> (
        task: Task<Void, Never>, bytes: Task<Int, Never>
    ) {
        let client = http.client
        for _ in 0..<viewers {
            for path in ["/", "/console/app.js", "/console/style.css", "/admin/console"] {
                var load = HTTPClientRequest(url: base + path)
                load.headers.add(name: "Accept", value: "text/html")
                let response = try await client.execute(load, timeout: .seconds(30))
                _ = try await response.body.collect(upTo: 16 << 20)
                guard response.status == .ok else { throw CommandFailure("GET \(path): \(response.status)") }
            }
        }
        let counted = Counter()
        let task = Task {
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<viewers {
                    group.addTask {
                        do {
                            let response = try await client.execute(
                                HTTPClientRequest(url: base + "/admin/events"), timeout: .hours(2))
                            for try await chunk in response.body { await counted.add(chunk.readableBytes) }
                        } catch {}
                    }
                }
            }
        }
        return (
            task,
            Task {
                await task.value; return await counted.total
            }
        )
    }

    private actor Counter {
        var total = 0
        func add(_ count: Int) { total += count }
    }

    private func cpuCount() -> Int { ProcessInfo.processInfo.activeProcessorCount }

    /// A process's user + system CPU seconds so far (/proc/PID/stat, fields 14 and 15).
    private func cpuSeconds(_ pid: Int32) throws -> Double {
        let text = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        guard let close = text.lastIndex(of: ")") else { throw CommandFailure("cannot read /proc/\(pid)/stat") }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else {
            throw CommandFailure("cannot read /proc/\(pid)/stat")
        }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}
