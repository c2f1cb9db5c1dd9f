import Checkpoint
import Engine
import Foundation
import NIOHTTP1
import Scheduling
import Store
import Synchronization

/// `sllm bench migrate --rebalance`: what rebalancing buys a scale-up. Per round and mode, a
/// fresh `sllm controller` (with `--rebalance` or without) over two `sllm worker` processes,
/// each with memory for one instance; `--streams` greedy streams run on the one instance of
/// the first node, then the deployment scales to two (`min_instances` 2) and the second
/// node's instance starts. Without rebalancing it serves nothing of the running streams; with
/// it, half of them move there. Reported: when the last stream ends, and the streams'
/// inter-token gaps after the scale-up; the texts must be the same in both modes.
extension MigrateBench {
    struct RebalanceRow: Encodable {
        var rebalance: Bool
        var lastStreamEndSeconds: Sample
        var gapAfterScaleUpMilliseconds: Sample
        var moved: Int
        /// Rounds whose texts equal the other mode's in the same round, and (unrebalanced runs only)
        /// the first round's. Concurrent greedy streams give the same tokens in every run (the
        /// engine's logits do not depend on the batch), so anything less is a fault to look into.
        var identical: Int
        var identicalToFirstRound: Int
        var runs: Int
    }

    func rebalanceBench(name: ModelName) async throws {
        let reader = try global.store.reader(for: name)
        let promptTokens = 32
        let context = promptTokens + tokens + 16
        // Each worker holds one instance of `streams` sequences, not two: the second instance
        // must start on the other node.
        let instanceBytes = InstanceSizing(
            requestedContext: context, modelContext: reader.index.config.contextLength, maxSequences: streams,
            weightBytes: reader.index.partitions.reduce(0) { $0 + $1.byteCount },
            kvBytesPerPosition: Engine.kvBytesPerPosition(reader.index.config)
        ).totalBytes
        var random = SplitMix(seed: 23)
        // A prompt of its own per stream, so the streams are four different texts to compare.
        let prompts = (0..<streams).map { _ in (0..<promptTokens).map { _ in 1000 + Int(random.next() % 20_000) } }
        print(
            "\(streams) greedy streams of \(tokens) tokens on one instance of \(name); after \(after) tokens the deployment scales to two instances on two `sllm worker` processes (\(threads) thread(s) each, memory for one instance each); \(rounds) round(s), rebalancing off and on alternately"
        )
        var ends: [Bool: [Double]] = [false: [], true: []]
        var gaps: [Bool: [Double]] = [false: [], true: []]
        var moved = 0
        var identical = 0
        var firstTexts: [String]?
        var sameAsFirst = 0
        for round in 0..<rounds {
            var texts: [Bool: [String]] = [:]
            for rebalance in [false, true] {
                let run = try await rebalanceRound(
                    name: name, prompts: prompts, context: context, budget: instanceBytes * 3 / 2, rebalance: rebalance)
                ends[rebalance]!.append(run.end)
                gaps[rebalance]!.append(contentsOf: run.gaps)
                texts[rebalance] = run.texts
                if rebalance { moved += run.moved }
                print(
                    String(
                        format:
                            "  round %d, rebalancing %@: last stream ended %.2f s after the first token, gap after the scale-up p50 %.1f ms%@",
                        round + 1, rebalance ? "on " : "off", run.end, Sample(values: run.gaps).median,
                        rebalance ? ", \(run.moved) moved" : ""))
            }
            if firstTexts == nil { firstTexts = texts[false] }
            if texts[false] == firstTexts { sameAsFirst += 1 }
            if texts[false] == texts[true] {
                identical += 1
            } else if benchKeepsScratch {
                for (index, (a, b)) in zip(texts[false]!, texts[true]!).enumerated() where a != b {
                    print("stream \(index) differs:\n  off: \(a.debugDescription)\n  on:  \(b.debugDescription)")
                }
            }
        }
        let rows = [false, true].map { rebalance in
            RebalanceRow(
                rebalance: rebalance, lastStreamEndSeconds: Sample(values: ends[rebalance]!),
                gapAfterScaleUpMilliseconds: Sample(values: gaps[rebalance]!), moved: rebalance ? moved : 0,
                identical: identical, identicalToFirstRound: rebalance ? 0 : sameAsFirst, runs: rounds)
        }
        print("")
        print("rebalancing  last stream ends (s)      gap after the scale-up p50 / p90 (ms)")
        for row in rows {
            print(
                "\(row.rebalance ? "on " : "off")          \(row.lastStreamEndSeconds.formatted(2))     "
                    + String(
                        format: "%.1f / %.1f", row.gapAfterScaleUpMilliseconds.median,
                        row.gapAfterScaleUpMilliseconds.percentile(0.9)))
        }
        print(
            String(
                format:
                    "on / off: last stream ends %.2f×, gap p50 %.2f×; %d jobs moved in %d rounds; texts the same as the other mode's in %d of %d rounds (rebalancing off: the same as its first round's in %d of %d)",
                rows[1].lastStreamEndSeconds.median / rows[0].lastStreamEndSeconds.median,
                rows[1].gapAfterScaleUpMilliseconds.median / rows[0].gapAfterScaleUpMilliseconds.median, moved, rounds,
                identical, rounds, sameAsFirst, rounds))
        if let json { try writeReport(rows, to: json) }
        // Greedy streams must give the same texts whether or not jobs moved, and round after
        // round: anything else is a bug, not a figure.
        if identical < rounds || sameAsFirst < rounds {
            throw CommandFailure(
                "greedy texts differed: between the two modes in \(rounds - identical) of \(rounds) round(s), from the first round's (rebalancing off) in \(rounds - sameAsFirst); SLLM_BENCH_KEEP=1 prints them"
            )
        }
    }

    /// One round in one mode: fresh processes, the streams, the scale-up after `after` tokens.
    private func rebalanceRound(
        name: ModelName, prompts: [[Int]], context: Int, budget: Int, rebalance: Bool
    ) async throws -> (end: Double, gaps: [Double], texts: [String], moved: Int) {
        let scratch = try benchScratch(
            "rebalance-\(rebalance ? "on" : "off")", linking: name, into: ["a", "b"], global: global)
        var keep = benchKeepsScratch
        defer { if !keep { try? FileManager.default.removeItem(atPath: scratch) } }
        let (workers, controller) = try startTwoWorkers(
            in: scratch, workerArguments: ["--memory-budget", String(budget)],
            controllerArguments: [rebalance ? "--rebalance" : "--no-rebalance"])
        defer { ([controller] + workers).forEach { $0.stop() } }
        let http = BenchHTTP()
        defer { try? http.shutdown() }
        _ = try await http.json(
            .POST, controller.url + "/admin/deployments",
            [
                "model": name.rawValue, "name": "bench", "keep_alive": "-1", "min_instances": 1, "max_instances": 2,
                "target_concurrency": streams, "context_length": context,
            ])
        // The first instance starts (and the model is in the page cache) before the streams.
        _ = await http.stream(
            controller.url + "/v1/completions",
            ["model": "bench", "prompt": [1, 2, 3], "max_tokens": 1, "stream": true])

        let state = StreamTimes(count: streams)
        let begin = ContinuousClock.now
        let after = self.after
        let url = controller.url
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<streams {
                group.addTask { [tokens] in
                    let outcome = await http.stream(
                        url + "/v1/completions",
                        [
                            "model": "bench", "prompt": prompts[index], "max_tokens": tokens, "temperature": 0,
                            "ignore_eos": true, "stream": true,
                        ]
                    ) { text in
                        state.streams.withLock {
                            $0[index].text += text
                            $0[index].times.append(.now)
                        }
                    }
                    if case .failure(let failure) = outcome {
                        throw CommandFailure("a stream failed: \(failure.reason)")
                    }
                }
            }
            // Scale up once every stream has given `after` tokens.
            while state.streams.withLock({ $0.contains { $0.times.count < after } }) {
                try await Task.sleep(for: .milliseconds(5))
            }
            let scaled = ContinuousClock.now
            state.scaleUp.withLock { $0 = scaled }
            _ = try await http.json(.PATCH, url + "/admin/deployments/bench", ["min_instances": 2])
            try await group.waitForAll()
        }
        let streamsDone = state.streams.withLock { $0 }
        let scaled = state.scaleUp.withLock { $0 }!
        let firstToken = streamsDone.compactMap(\.times.first).min() ?? begin
        let end = ((streamsDone.compactMap(\.times.last).max() ?? begin) - firstToken).seconds
        var gaps: [Double] = []
        for stream in streamsDone {
            for (earlier, later) in zip(stream.times, stream.times.dropFirst()) where earlier >= scaled {
                gaps.append((later - earlier).seconds * 1000)
            }
        }
        let deployments = try await http.array(.GET, url + "/admin/deployments")
        let nodes = deployments.flatMap { (($0["status"] as? [String: Any])?["instances"] as? [[String: Any]]) ?? [] }
            .compactMap { $0["node"] as? String }
        guard Set(nodes).count == 2 else {
            keep = true
            throw CommandFailure(
                "the deployment's instances are on \(nodes) after the scale-up, not on both nodes (see \(scratch))")
        }
        let console = try await http.json(.GET, url + "/admin/console")["snapshot"] as? [String: Any]
        let migrations = console?["migrations"] as? [[String: Any]] ?? []
        let moved = migrations.compactMap { ($0["report"] as? [String: Any])?["moved"] as? Int }.reduce(0, +)
        return (end, gaps, streamsDone.map(\.text), moved)
    }
}

/// What the streams of one rebalance round gave, and when the deployment was scaled up.
private final class StreamTimes: Sendable {
    struct Stream {
        var text = ""
        var times: [ContinuousClock.Instant] = []
    }
    let streams: Mutex<[Stream]>
    let scaleUp = Mutex<ContinuousClock.Instant?>(nil)

    init(count: Int) {
        streams = Mutex([Stream](repeating: Stream(), count: count))
    }
}
