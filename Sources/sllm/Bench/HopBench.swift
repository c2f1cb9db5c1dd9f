import ArgumentParser
import Foundation
import NIOHTTP1
import Store

/// `sllm bench hop`: what the controller's hop costs a request. The same warm deployment is
/// asked for one token through `sllm serve` (its in-process worker) and through `sllm
/// controller` in front of an `sllm worker` (the worker protocol over HTTP on loopback),
/// interleaved; the difference of the medians is the controller's overhead on the request path.
struct HopBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hop",
        abstract: "The controller's overhead on the request path: sllm serve against controller + worker, interleaved.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Model (pulled if missing).") var model = ModelSource.defaultModel.name
    @Option(help: "Requests per side.") var requests = 200
    @Option(help: "Compute threads per instance.") var threads = 1

    func run() async throws {
        _ = global.bootstrap()
        let name = try await ensurePulled(model, global: global)
        let scratch = try benchScratch("hop", linking: name, into: ["serve", "worker"], global: global)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let common = ["--port", "0", "--threads", String(threads), "--no-dram-fill"]
        let serve = try ServerProcess.start(
            executable: sllmExecutablePath(),
            arguments: [
                "serve", "--data-dir", scratch + "/serve", "--default-model", "", "--cache-dir",
                scratch + "/serve-cache",
            ] + common, log: scratch + "/serve.log", banner: "serving on")
        defer { serve.stop() }
        let worker = try ServerProcess.start(
            executable: sllmExecutablePath(),
            arguments: [
                "worker", "--data-dir", scratch + "/worker", "--node", "bench-worker", "--token-file",
                scratch + "/token", "--cache-dir", scratch + "/worker-cache",
            ] + common,
            log: scratch + "/worker.log", banner: "serving on")
        defer { worker.stop() }
        let controller = try ServerProcess.start(
            executable: sllmExecutablePath(),
            arguments: [
                "controller", "--data-dir", scratch + "/control", "--port", "0", "--worker", worker.url,
                "--token-file", scratch + "/token",
            ], log: scratch + "/controller.log", banner: "serving on")
        defer { controller.stop() }
        let http = BenchHTTP()
        defer { try? http.shutdown() }
        let request: [String: Any] = ["model": "bench", "prompt": "Hi", "max_tokens": 1, "temperature": 0]
        for base in [serve.url, controller.url] {
            _ = try await http.json(
                .POST, base + "/admin/deployments", ["model": name.rawValue, "name": "bench", "keep_alive": "-1"])
            for _ in 0..<5 { _ = try await http.json(.POST, base + "/v1/completions", request) }
        }
        print("sllm serve at \(serve.url); sllm controller at \(controller.url) over the worker at \(worker.url)")
        print("\(requests) one-token completions each, interleaved, \(threads) thread(s), model \(name)")
        var direct: [Double] = []
        var hop: [Double] = []
        for round in 0..<requests {
            // Alternating which goes first, so neither always follows the other's work.
            for base in round % 2 == 0 ? [serve.url, controller.url] : [controller.url, serve.url] {
                let started = DispatchTime.now().uptimeNanoseconds
                _ = try await http.json(.POST, base + "/v1/completions", request)
                let milliseconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6
                if base == serve.url { direct.append(milliseconds) } else { hop.append(milliseconds) }
            }
        }
        let directSample = Sample(values: direct)
        let hopSample = Sample(values: hop)
        print("  sllm serve              \(directSample.formatted(2)) ms")
        print("  controller + worker     \(hopSample.formatted(2)) ms")
        print(
            String(
                format: "  overhead (median)       %.2f ms; ratio %.3f", hopSample.median - directSample.median,
                hopSample.median / directSample.median))
    }
}
