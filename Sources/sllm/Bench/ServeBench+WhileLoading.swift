import Checkpoint
import Foundation
import NIOHTTP1
import Store
import Tokenizers

/// `sllm bench serve`'s serve-while-loading phase: cold starts from the SSD with a long prompt,
/// on a server that starts the engine while the weights arrive and on one that loads first.
extension ServeBench {
    struct WhileLoadingReport: Encodable {
        var promptTokens: Int
        /// Client time to the 1-token reply, ms.
        var streamed: Sample
        var sequential: Sample
        /// The sequential server's load and prefill, ms (their sum is what overlapping saves on).
        var sequentialLoad: Sample
        var sequentialPrefill: Sample
        /// The streamed server's time to start serving and its prefill (which includes waiting
        /// for weights), ms.
        var streamedStart: Sample
        var streamedPrefill: Sample
        /// streamed / (sequential load + prefill), medians.
        var ratio: Double
    }

    /// The data directory (inside the scratch directory) of the server that streams or not.
    static func whileLoadingHome(streaming: Bool) -> String {
        streaming ? "while-loading-streamed" : "while-loading-sequential"
    }

    /// Two servers on the scratch store (DRAM caches of their own), deployments scaled to zero;
    /// runs interleaved, each after the model is evicted from DRAM and the page cache.
    func measureWhileLoading(name: ModelName, reader: CheckpointReader, scratch: String, cache: String, http: BenchHTTP)
        async throws -> WhileLoadingReport
    {
        func start(_ label: String, streaming: Bool) throws -> ServerProcess {
            try ServerProcess.start(
                executable: sllmExecutablePath(),
                arguments: [
                    "serve", "--data-dir", scratch + "/" + Self.whileLoadingHome(streaming: streaming), "--port", "0",
                    "--cache-dir", cache + "-" + label,
                    "--default-model", "", "--threads", String(threads), "--dram-cache", "2GiB",
                    streaming ? "--serve-while-loading" : "--no-serve-while-loading",
                ], log: scratch + "/serve-\(label).log", banner: "serving on")
        }
        let streamed = try start("streamed", streaming: true)
        defer {
            streamed.stop()
            try? FileManager.default.removeItem(atPath: cache + "-streamed")
        }
        let sequential = try start("sequential", streaming: false)
        defer {
            sequential.stop()
            try? FileManager.default.removeItem(atPath: cache + "-sequential")
        }
        for server in [streamed, sequential] {
            print("waiting for the DRAM pool fill of \(server.url): \(try waitForPoolFill(server))")
            _ = try await http.json(
                .POST, server.url + "/admin/deployments", ["model": name.rawValue, "name": "bench", "keep_alive": "0"])
        }
        let tokenizer = try Tokenizer(checkpoint: reader.index, map: reader.mappedFile, read: reader.fileContents)
        func cold(_ server: ServerProcess, label: String, prompt: String) async throws -> (Double, [String: Any]) {
            let (elapsed, timings) = try await coldRequest(
                http, base: server.url, path: "/v1/completions",
                body: ["model": "bench", "prompt": prompt, "max_tokens": 1, "temperature": 0],
                evicting: (name, cache + "-" + label, reader))
            guard timings["cold_start"] as? Bool == true, timings["tier"] as? String == "ssd" else {
                throw CommandFailure("a serve-while-loading run was not a cold start from the SSD: \(timings)")
            }
            return (elapsed * 1000, timings)
        }
        // Load and prefill of similar length show the overlap best: unless --prompt-tokens
        // says, sequential runs set the length where prefill ≈ load.
        var tokens = promptTokens
        if tokens == 0 {
            tokens = try await calibrate { tokens in
                let (_, probe) = try await cold(
                    sequential, label: "sequential", prompt: Self.text(tokens: tokens, tokenizer))
                return (probe["load_ms"] as? Double ?? 0, probe["prefill_ms"] as? Double ?? 0)
            }
        }
        let prompt = Self.text(tokens: tokens, tokenizer)
        var streamedTimes: [Double] = [], sequentialTimes: [Double] = [], loads: [Double] = [], prefills: [Double] = []
        var starts: [Double] = [], streamedPrefills: [Double] = []
        var promptCount = 0
        for run in 0..<runs {
            // Alternate which server goes first, so neither always follows the other's work.
            let order = run % 2 == 0 ? [true, false] : [false, true]
            var texts: [String] = []
            for isStreamed in order {
                let (elapsed, timings) = try await cold(
                    isStreamed ? streamed : sequential, label: isStreamed ? "streamed" : "sequential", prompt: prompt)
                texts.append(timings["text"] as? String ?? "")
                promptCount = timings["prompt_tokens"] as? Int ?? promptCount
                if isStreamed {
                    streamedTimes.append(elapsed)
                    starts.append(timings["load_ms"] as? Double ?? 0)
                    streamedPrefills.append(timings["prefill_ms"] as? Double ?? 0)
                } else {
                    sequentialTimes.append(elapsed)
                    loads.append(timings["load_ms"] as? Double ?? 0)
                    prefills.append(timings["prefill_ms"] as? Double ?? 0)
                }
            }
            guard texts[0] == texts[1] else {
                throw CommandFailure(
                    "the two servers answered differently: \(texts[0].debugDescription) vs \(texts[1].debugDescription)"
                )
            }
        }
        let streamedSample = Sample(values: streamedTimes)
        let load = Sample(values: loads), prefill = Sample(values: prefills)
        return WhileLoadingReport(
            promptTokens: promptCount, streamed: streamedSample, sequential: Sample(values: sequentialTimes),
            sequentialLoad: load, sequentialPrefill: prefill, streamedStart: Sample(values: starts),
            streamedPrefill: Sample(values: streamedPrefills),
            ratio: streamedSample.median / (load.median + prefill.median))
    }

    /// The prompt length whose prefill takes about as long as the load, from cold sequential
    /// runs (`probe` gives a run's load and prefill, ms). Prefill is not proportional to the
    /// prompt: the output projection (a 262k-row matrix for Gemma 3) and the layers' fixed work
    /// cost the same for any length. So the length comes from a line through two measured
    /// lengths (those whose prefills bracket the load, else the two nearest it), checked by a
    /// run at that length, up to three times, until a prefill is within 10 % of the load.
    func calibrate(_ probe: (Int) async throws -> (load: Double, prefill: Double)) async throws -> Int {
        let range = 8...2048
        // The first SSD load after the pool fill reads fresh page-cache pages (several times
        // slower on this VM, see the Store figures): a discarded run first.
        _ = try await probe(32)
        var points: [(tokens: Int, prefill: Double)] = []
        var loads: [Double] = []
        func measure(_ tokens: Int) async throws -> Double {
            let run = try await probe(tokens)
            points.append((tokens, run.prefill))
            loads.append(run.load)
            return run.prefill
        }
        _ = try await measure(32)
        _ = try await measure(128)
        // This VM's disk reads a model in 100 ms one minute and 300 ms the next: the load the
        // prompt is matched to is the median of five, not of the two probes.
        for _ in 0..<3 { loads.append(try await probe(32).load) }
        var tokens = 128
        for _ in 0..<3 {
            let load = Sample(values: loads).median
            let sorted = points.sorted { $0.tokens < $1.tokens }
            var pair = (sorted.last { $0.prefill <= load }, sorted.first { $0.prefill > load })
            if pair.0 == nil || pair.1 == nil || pair.0!.tokens > pair.1!.tokens {
                let nearest = points.sorted { abs($0.prefill - load) < abs($1.prefill - load) }
                pair = (nearest[0], nearest[1])
            }
            let (a, b) = (pair.0!, pair.1!)
            let slope = (b.prefill - a.prefill) / Double(b.tokens - a.tokens)
            let estimate =
                slope > 0 ? Double(a.tokens) + (load - a.prefill) / slope : Double(a.tokens) * load / max(1, a.prefill)
            let next = min(range.upperBound, max(range.lowerBound, Int(estimate.rounded())))
            tokens = next
            guard !points.contains(where: { $0.tokens == next }) else { break }
            let prefill = try await measure(next)
            print(String(format: "calibration: load %.1f ms → %d tokens: prefill %.1f ms", load, next, prefill))
            if abs(prefill - load) <= 0.1 * load { break }
        }
        return tokens
    }

    /// A plain English text of about `tokens` tokens under `tokenizer`.
    static func text(tokens: Int, _ tokenizer: Tokenizer) -> String {
        let sentences = [
            "The river bends twice before it reaches the old mill, where the water slows and turns green.",
            "Every spring the village repairs the bridge, and every autumn the floods test the work again.",
            "Children count the stones on the path while their parents argue about the price of flour.",
            "A traveller once wrote that the valley smelled of pine resin, wet wool and wood smoke.",
        ]
        var text = ""
        var index = 0
        while tokenizer.encode(text).count < tokens {
            text += (text.isEmpty ? "" : " ") + sentences[index % sentences.count]
            index += 1
        }
        let ids = Array(tokenizer.encode(text).prefix(tokens))
        return tokenizer.decode(ids)
    }

    func printWhileLoading(_ report: WhileLoadingReport) {
        print(
            "\nServe while loading: cold start from the SSD, a \(report.promptTokens)-token prompt, 1 token (ms, median (min–max) of \(runs)):"
        )
        print(
            "  engine started while the weights arrive: \(report.streamed.formatted(1)) ms  [start \(report.streamedStart.formatted(1)), prefill with waits \(report.streamedPrefill.formatted(1))]"
        )
        print(
            "  load, then prefill (--no-serve-while-loading): \(report.sequential.formatted(1)) ms  [load \(report.sequentialLoad.formatted(1)), prefill \(report.sequentialPrefill.formatted(1))]"
        )
        print(
            String(
                format: "  ratio: %.3f of load + prefill (goal <= 0.65); %.3f of the sequential request",
                report.ratio, report.streamed.median / report.sequential.median))
    }
}
