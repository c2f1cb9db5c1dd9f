import ArgumentParser
import Checkpoint
import Foundation
import NIOHTTP1
import Store

/// `sllm bench failover`: how long a cluster takes to notice its faults. Each round runs two
/// controllers sharing a throwaway PostgreSQL and two workers holding a warm deployment, then
/// SIGKILLs a worker (time until the controller reports it lost) and the leading controller
/// (time until the other leads, and until a completion sent to it is answered, on the instance
/// it adopted). Every process is real, on loopback.
struct FailoverBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "failover",
        abstract: "Worker-death detection and controller failover times, with real processes and PostgreSQL.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Model (pulled if missing).") var model = ModelSource.defaultModel.name
    @Option(help: "Rounds (each a fresh cluster).") var rounds = 5
    @Option(name: .customLong("worker-lease"), help: "The controllers' worker lease (and the leader's lease).")
    var workerLease = "3s"
    @Option(
        name: .customLong("state-url"),
        help: "An empty PostgreSQL database to use (default: a throwaway server, scripts/throwaway-postgres.sh).")
    var stateURL: String?

    func run() async throws {
        _ = global.bootstrap()
        let name = try await ensurePulled(model, global: global)
        let scratch = FileManager.default.temporaryDirectory.path + "/sllm-bench-failover-\(getpid())"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        var detections: [Double] = []
        var elections: [Double] = []
        var answers: [Double] = []
        print("\(rounds) rounds: 2 controllers (PostgreSQL), 2 workers, worker lease \(workerLease), model \(name)")
        for round in 1...rounds {
            let database = try Database(given: stateURL, directory: scratch + "/pg-\(round)")
            defer { database.stop() }
            let times = try await self.round(round, name: name, database: database.url, scratch: scratch + "/r\(round)")
            detections.append(times.detection)
            elections.append(times.election)
            answers.append(times.answer)
            print(
                String(
                    format: "  round %d: worker lost after %.2f s; new leader after %.2f s, first answer after %.2f s",
                    round, times.detection, times.election, times.answer))
        }
        print("worker death detected      \(Sample(values: detections).formatted(2)) s   (goal <= 3 s)")
        print("controller failover, lead  \(Sample(values: elections).formatted(2)) s")
        print("controller failover, answer \(Sample(values: answers).formatted(2)) s   (goal <= 5 s)")
    }

    private func round(_ round: Int, name: ModelName, database: String, scratch: String) async throws -> (
        detection: Double, election: Double, answer: Double
    ) {
        let token = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        try Data(token.utf8).write(to: URL(fileURLWithPath: scratch + "/token"))
        let executable = sllmExecutablePath()
        func controller(_ index: Int) throws -> ServerProcess {
            try ServerProcess.start(
                executable: executable,
                arguments: [
                    "controller", "--data-dir", scratch + "/control-\(index)", "--port", "0", "--state-url", database,
                    "--token-file", scratch + "/token", "--worker-lease", workerLease,
                ], log: scratch + "/controller-\(index).log", banner: "serving on")
        }
        var controllers = [try controller(0)]
        defer { controllers.forEach { $0.stop() } }
        try waitForLog(controllers[0].log, "leading the cluster")
        controllers.append(try controller(1))
        try waitForLog(controllers[1].log, "following")
        var workers: [ServerProcess] = []
        defer { workers.forEach { $0.stop() } }
        for node in ["bench-a", "bench-b"] {
            try FileManager.default.createDirectory(
                atPath: scratch + "/\(node)/models", withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(
                atPath: scratch + "/\(node)/models/\(name)", withDestinationPath: global.store.directory(for: name))
            workers.append(
                try ServerProcess.start(
                    executable: executable,
                    arguments: [
                        "worker", "--data-dir", scratch + "/\(node)", "--node", node, "--port", "0", "--token-file",
                        scratch + "/token", "--cache-dir", scratch + "/\(node)-cache", "--threads", "1",
                        "--no-dram-fill", "--controller", controllers[1].url, "--controller", controllers[0].url,
                    ], log: scratch + "/\(node).log", banner: "serving on"))
        }
        let http = BenchHTTP()
        defer { try? http.shutdown() }
        let leader = controllers[0].url
        try await waitFor(seconds: 60) {
            try await self.nodeStates(http, leader) == ["bench-a": "alive", "bench-b": "alive"]
        }
        _ = try await http.json(
            .POST, leader + "/admin/deployments", ["model": name.rawValue, "name": "bench", "keep_alive": "-1"])
        let request: [String: Any] = ["model": "bench", "prompt": "Hi", "max_tokens": 1, "temperature": 0]
        _ = try await http.json(.POST, leader + "/v1/completions", request)
        // The worker without the instance dies: how long until the leader says it is lost.
        let holder =
            try await http.array(.GET, leader + "/admin/ps").first.flatMap {
                ($0["instance"] as? [String: Any])?["node"] as? String
            } ?? "bench-a"
        let victim = workers[holder == "bench-a" ? 1 : 0]
        let died = ContinuousClock.now
        kill(victim.process.processIdentifier, SIGKILL)
        victim.process.waitUntilExit()
        try await waitFor(seconds: 60) { try await self.nodeStates(http, leader).values.contains("lost") }
        let detection = (ContinuousClock.now - died).seconds
        // The leader dies: how long until the other leads, and until it answers.
        let follower = controllers[1]
        let killed = ContinuousClock.now
        kill(controllers[0].process.processIdentifier, SIGKILL)
        controllers[0].process.waitUntilExit()
        var election: Double?
        var answer: Double?
        while answer == nil, ContinuousClock.now - killed < .seconds(60) {
            if election == nil,
                (try? String(contentsOfFile: follower.log, encoding: .utf8))?.contains("leading the cluster") == true
            {
                election = (ContinuousClock.now - killed).seconds
            }
            if let reply = try? await http.json(.POST, follower.url + "/v1/completions", request),
                reply["choices"] != nil
            {
                answer = (ContinuousClock.now - killed).seconds
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        guard let answer else {
            throw CommandFailure("round \(round): the follower never answered\(logTail(follower.log))")
        }
        return (detection, election ?? answer, answer)
    }

    private func nodeStates(_ http: BenchHTTP, _ base: String) async throws -> [String: String] {
        var states: [String: String] = [:]
        for node in try await http.array(.GET, base + "/admin/nodes") {
            if let name = node["node"] as? String { states[name] = node["state"] as? String }
        }
        return states
    }

    private func waitFor(seconds: Double, _ check: () async throws -> Bool) async throws {
        let start = ContinuousClock.now
        while (ContinuousClock.now - start).seconds < seconds {
            if (try? await check()) == true { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw CommandFailure("the cluster did not reach the state the bench waits for within \(Int(seconds)) s")
    }

    private func waitForLog(_ log: String, _ text: String) throws {
        for _ in 0..<2400 {
            if (try? String(contentsOfFile: log, encoding: .utf8))?.contains(text) == true { return }
            usleep(25_000)
        }
        throw CommandFailure("`\(text)` never appeared\(logTail(log))")
    }

    /// The database of a round: the one given, or a throwaway server.
    struct Database {
        let url: String
        let directory: String?

        init(given: String?, directory: String) throws {
            if let given {
                url = given
                self.directory = nil
                return
            }
            let script = Self.script()
            // Output to a file, not a pipe: the server started inherits it and never closes it.
            let outputFile = directory + ".out"
            defer { try? FileManager.default.removeItem(atPath: outputFile) }
            // `system` waits for the script itself (Foundation's Process did not see it end once
            // the server it started had detached).
            let status = system("/bin/bash '\(script)' start '\(directory)' > '\(outputFile)' 2>&1")
            let text = ((try? String(contentsOfFile: outputFile, encoding: .utf8)) ?? "")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            guard status == 0, let line = text.split(separator: "\n").last, line.hasPrefix("postgres://") else {
                throw CommandFailure("cannot start a throwaway PostgreSQL (\(script)): \(text)")
            }
            url = String(line)
            self.directory = directory
        }

        func stop() {
            guard let directory else { return }
            _ = system("/bin/bash '\(Self.script())' stop '\(directory)' > /dev/null 2>&1")
        }

        /// `scripts/throwaway-postgres.sh` of the source tree this binary was built in.
        static func script() -> String {
            var directory = URL(fileURLWithPath: sllmExecutablePath()).deletingLastPathComponent()
            for _ in 0..<6 {
                let candidate = directory.appendingPathComponent("scripts/throwaway-postgres.sh").path
                if FileManager.default.fileExists(atPath: candidate) { return candidate }
                directory.deleteLastPathComponent()
            }
            return "scripts/throwaway-postgres.sh"
        }
    }
}
