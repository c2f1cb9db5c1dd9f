import Foundation
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
#if canImport(Glibc)
    import Glibc
#endif

/// `sllm serve` as a process: configured by flags, env and file; driven by the admin commands;
/// stopped by SIGTERM.
@Suite struct ServeCommandTests {
    @Test func serveDeployStatusPsDeleteAndSigterm() async throws {
        let home = try TemporaryDirectory("serve-cli")
        defer { home.remove() }
        try await RealModel.link(into: home.path, as: "smollm2-135m")
        // The file sets a port the flag overrides; the environment sets the default keep-alive.
        try writeFile(home.file("config.yaml"), Array("port: 1\nthreads: 2\nkeep_alive: 7m\n".utf8))

        let process = Process()
        process.executableURL = sllmExecutable()
        process.arguments = ["serve", "--port", "0", "--cache-dir", home.file("cache"), "--dram-cache", "256MiB"]
        var environment = ProcessInfo.processInfo.environment
        environment["SLLM_HOME"] = home.path
        environment["SLLM_KEEP_ALIVE"] = "9m"
        process.environment = environment
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { process.terminate() } }

        // The first line names the address.
        let banner = try await onThread { () -> String in
            var seen = Data()
            while !String(decoding: seen, as: UTF8.self).contains("serving on") {
                let chunk = errors.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                seen.append(chunk)
            }
            return String(decoding: seen, as: UTF8.self)
        }
        guard let range = banner.range(of: #"http://127\.0\.0\.1:\d+"#, options: .regularExpression) else {
            Issue.record("no address in: \(banner)")
            return
        }
        let server = String(banner[range])
        let env = ["SLLM_SERVER": server]

        // The default model was deployed on first start, with the environment's keep-alive.
        let status = try await runSLLM(["status"], home: home.path, environment: env)
        #expect(status.status == 0, "\(status.stderr)")
        #expect(
            status.stdout.contains("smollm2-135m") && status.stdout.contains("9m") && status.stdout.contains("ssd"),
            "\(status.stdout)")

        let deploy = try await runSLLM(
            ["deploy", "smollm2-135m", "--name", "second", "--max", "2", "--keep-alive", "-1"], home: home.path,
            environment: env)
        #expect(deploy.status == 0, "\(deploy.stderr)")
        let bad = try await runSLLM(["deploy", "smollm2-135m", "--name", "second"], home: home.path, environment: env)
        #expect(bad.status == 1 && bad.stderr.contains("already exists"), "\(bad.stderr)")

        let completion = try await post(
            server + "/v1/completions", ["model": "second", "prompt": "Hi", "max_tokens": 2])
        #expect(completion == 200)
        let ps = try await runSLLM(["ps"], home: home.path, environment: env)
        #expect(ps.stdout.contains("second") && ps.stdout.contains("forever"), "\(ps.stdout)")
        #expect(try await runSLLM(["update", "second", "--max", "3"], home: home.path, environment: env).status == 0)
        #expect(try await runSLLM(["delete", "second"], home: home.path, environment: env).status == 0)
        let gone = try await runSLLM(["delete", "second"], home: home.path, environment: env)
        #expect(gone.status == 1 && gone.stderr.contains("does not exist"))

        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        #expect(FileManager.default.fileExists(atPath: home.file("state.sqlite")))

        // Without a server, the admin commands say how to start one.
        let offline = try await runSLLM(["status"], home: home.path, environment: ["SLLM_SERVER": server])
        #expect(offline.status == 1 && offline.stderr.contains("sllm serve"))
    }

    /// `sllm deploy` of a remote source shows the server's pull as it runs: its phase
    /// (download, then convert) and bytes out of the total, as `sllm pull` would.
    @Test func deployShowsTheServersPullPhaseAndBytes() async throws {
        let home = try TemporaryDirectory("deploy-progress")
        let origin = RangeHTTPServer()
        defer {
            origin.stop()
            home.remove()
        }
        origin.add("smol.gguf", try readFile(try RealModel.ggufPath()))
        origin.pace(bytesPerSecond: 8 << 20)
        try origin.start()
        let port = freeTCPPort()
        let server = try ServeProcess(
            ["--port", String(port), "--default-model", "", "--threads", "1"], home: home.path)
        try #require(server.address() != nil, "\(server.output)")
        let env = ["SLLM_SERVER": "127.0.0.1:\(port)"]
        let deploy = try await runSLLM(
            ["deploy", origin.url("smol.gguf").absoluteString, "--name", "paced"], home: home.path, environment: env)
        #expect(deploy.status == 0 && deploy.stdout.contains("deployed paced"), "\(deploy.stdout) \(deploy.stderr)")
        let download = deploy.stderr.split(separator: "\n").filter { $0.hasPrefix("paced: download: ") }
        // Tenths of the known total as they pass (the poll may skip one), each with the total.
        #expect(download.count >= 4 && download.allSatisfy { $0.contains("/ 93.8 MiB") }, "\(deploy.stderr)")
        #expect(download.contains { $0.contains("%") && !$0.contains(": 0% ") }, "\(deploy.stderr)")
        #expect(deploy.stderr.contains("paced: convert: "), "\(deploy.stderr)")
        #expect(server.stop() == 0)
    }

    /// `sllm bench deploy` runs both commands on the real file and reports both, and the ratio.
    @Test func benchDeployReportsPullAndDeploy() async throws {
        let home = try TemporaryDirectory("bench-deploy")
        defer { home.remove() }
        let bench = try await runSLLM(
            ["bench", "deploy", "--runs", "2", "--gguf", try RealModel.ggufPath(), "--json", home.file("report.json")],
            home: home.path)
        #expect(bench.status == 0, "\(bench.stdout) \(bench.stderr)")
        #expect(
            bench.stdout.contains("sllm pull: ") && bench.stdout.contains("sllm deploy: ")
                && bench.stdout.contains("ratio deploy / pull: "), "\(bench.stdout)")
        let report =
            try JSONSerialization.jsonObject(with: Data(try readFile(home.file("report.json")))) as? [String: Any]
        #expect(
            ((report?["deployMs"] as? [String: Any])?["values"] as? [Double])?.count == 2,
            "\(String(describing: report))")
        #expect(
            ((report?["pullMs"] as? [String: Any])?["values"] as? [Double])?.count == 2, "\(String(describing: report))"
        )
    }

    /// Settings given at start win over stored ones for the default model's deployment; what
    /// was not given keeps what `sllm update` stored; the start logs which won.
    @Test func startSettingsWinForTheDefaultDeploymentAndTheLogSaysSo() async throws {
        let home = try TemporaryDirectory("start-settings")
        defer { home.remove() }
        try await RealModel.link(into: home.path, as: "smollm2-135m")
        let port = freeTCPPort()
        let env = ["SLLM_SERVER": "127.0.0.1:\(port)"]
        let first = try ServeProcess(["--port", String(port), "--threads", "1"], home: home.path)
        try #require(first.address() != nil && first.waitFor("[Serving] ready"), "\(first.output)")
        let update = try await runSLLM(
            ["update", "smollm2-135m", "--queue-limit", "7", "--keep-alive", "1m"], home: home.path, environment: env)
        #expect(update.status == 0, "\(update.stderr)")
        #expect(first.stop() == 0)

        let second = try ServeProcess(
            ["--port", String(port), "--threads", "1", "--keep-alive", "10m"], home: home.path)
        try #require(second.address() != nil && second.waitFor("[Serving] ready"), "\(second.output)")
        #expect(
            second.output.contains(
                "deployment smollm2-135m: scaling from the start settings: keep_alive=10m; stored (sllm update): ")
                && second.output.contains("queue_limit=7"), "\(second.output)")
        let status = try await runSLLM(["status", "--json"], home: home.path, environment: env)
        let deployments = (try? JSONSerialization.jsonObject(with: Data(status.stdout.utf8))) as? [[String: Any]] ?? []
        let scaling =
            ((deployments.first?["status"] as? [String: Any])?["spec"] as? [String: Any])?["scaling"] as? [String: Any]
        #expect((scaling?["queue_limit"] as? Int) == 7, "\(status.stdout)")
        #expect(
            "\(scaling?["keep_alive"] ?? "")".contains("600") || "\(scaling?["keep_alive"] ?? "")".contains("10m"),
            "\(status.stdout)")
        #expect(second.stop() == 0)
    }

    /// `sllm bench populate` measures every way, on tmpfs, and names the fastest.
    @Test func benchPopulateMeasuresEveryWay() async throws {
        let home = try TemporaryDirectory("bench-populate")
        defer { home.remove() }
        let bench = try await runSLLM(
            ["bench", "populate", "--size", "8MiB", "--runs", "2", "--json", home.file("report.json")], home: home.path)
        #expect(
            bench.status == 0 && bench.stdout.contains("fastest for fresh memory: "), "\(bench.stdout) \(bench.stderr)")
        let rows =
            (try JSONSerialization.jsonObject(with: Data(try readFile(home.file("report.json"))))) as? [[String: Any]]
            ?? []
        #expect(
            rows.count == 8
                && rows.allSatisfy {
                    (($0["gigabytesPerSecond"] as? [String: Any])?["values"] as? [Double])?.count == 2
                }, "\(rows)")
        let tooSmall = try await runSLLM(["bench", "populate", "--size", "12"], home: home.path)
        #expect(tooSmall.status == 64 && tooSmall.stderr.contains("--size"), "\(tooSmall.stderr)")
    }

    @Test func badConfigurationIsRefusedByName() async throws {
        let home = try TemporaryDirectory("serve-cli")
        defer { home.remove() }
        try writeFile(home.file("bad.yaml"), Array("prot: 80\n".utf8))
        let typo = try await runSLLM(["serve", "--config", home.file("bad.yaml")], home: home.path)
        #expect(typo.status == 1 && typo.stderr.contains("unknown setting `prot`"), "\(typo.stderr)")
        let open = try await runSLLM(
            ["serve", "--host", "0.0.0.0", "--port", "0", "--cache-dir", home.file("cache")], home: home.path)
        #expect(open.status == 1 && open.stderr.contains("requires API keys"), "\(open.stderr)")
    }

    private func post(_ url: String, _ body: [String: Any]) async throws -> Int {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = "POST"
        request.httpBody = try JSONSerialization.data(withJSONObject: body)
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        let (_, response) = try await URLSession.shared.data(for: request)
        return (response as? HTTPURLResponse)?.statusCode ?? 0
    }
}
