import Checkpoint
import Engine
import Foundation
import Logging
import Scheduling
import Store
import TestSupport
import Testing
import Tokenizers

@testable import Serving

/// The `Worker` protocol on the in-process worker: everything the control side learns of a node
/// and does to it, with every value crossing it encoded and decoded as a network client will.
@Suite(.serialized) struct WorkerProtocolTests {
    /// A worker over a fresh data directory holding SmolLM2 as `smol`.
    static func worker(_ directory: TemporaryDirectory) async throws -> LocalWorker {
        try await RealModel.link(into: directory.file("home"), as: "smol")
        var configuration = ServeConfiguration(dataDirectory: directory.file("home"))
        configuration.threads = 1
        configuration.dramCacheBytes = 512 << 20
        configuration.cacheDirectory = directory.file("cache")
        configuration.memoryBudgetBytes = 4 << 30
        var logger = Logger(label: "test.worker")
        logger.logLevel = .warning
        return try LocalWorker(configuration: configuration, logger: logger)
    }

    /// A worker as `worker` makes it, running instance `id` of `smol` with room for `sequences`
    /// sequences of `context` tokens; and the model's facts.
    static func worker(
        _ directory: TemporaryDirectory, instance id: String, context: Int, sequences: Int
    ) async throws -> (LocalWorker, ModelFacts) {
        let worker = try await worker(directory)
        let facts = try await worker.modelFacts(try ModelName("smol"))
        let sizing = InstanceSizing(
            requestedContext: context, modelContext: facts.contextLength, maxSequences: sequences,
            weightBytes: facts.weightBytes, kvBytesPerPosition: facts.kvBytesPerPosition)
        for try await _ in worker.startInstance(
            InstanceSpec(id: id, deployment: "d", model: try ModelName("smol"), sizing: sizing))
        {}
        return (worker, facts)
    }

    /// Encodes and decodes `value` as JSON: what crosses the network is what arrives.
    static func roundTrip<T: Codable>(_ value: T) throws -> T {
        try JSONDecoder().decode(T.self, from: try JSONEncoder().encode(value))
    }

    @Test func inventoryShowsTiersAndMeasuredBandwidthsOnlyAfterRealLoads() async throws {
        let directory = try TemporaryDirectory("worker-inventory")
        defer { directory.remove() }
        let worker = try await Self.worker(directory)
        let smol = try ModelName("smol")
        let before = try Self.roundTrip(await worker.inventory())
        #expect(before.fastestTier(holding: smol) == .ssd)
        #expect(before.tiers.map(\.tier) == [.dram, .ssd, .peer, .remote])
        #expect(
            before.tiers.allSatisfy { $0.loadBytesPerSecond == nil && $0.loads == 0 },
            "no bandwidth before a load: measured, not assumed")
        let ssd = try #require(before.tiers.first { $0.tier == .ssd })
        let facts = try await worker.modelFacts(smol)
        #expect(ssd.models == [HeldModel(name: smol, bytes: facts.weightBytes)])

        let cold = try await worker.prefetch(smol, into: .dram)
        #expect(cold.tier == .ssd && cold.bytes == facts.weightBytes && cold.seconds > 0)
        let hit = try await worker.prefetch(smol, into: .dram)
        #expect(hit.tier == .dram)
        let after = try Self.roundTrip(await worker.inventory())
        #expect(after.fastestTier(holding: smol) == .dram)
        let rates = Dictionary(uniqueKeysWithValues: after.tiers.map { ($0.tier, $0) })
        #expect(rates[.ssd]?.loads == 1 && rates[.dram]?.loads == 1 && rates[.remote]?.loads == 0)
        let ssdRate = try #require(rates[.ssd]?.loadBytesPerSecond)
        #expect(abs(ssdRate - Double(cold.bytes) / cold.seconds) < 1, "the first load is the average")
        #expect(try #require(rates[.dram]?.loadBytesPerSecond) > 0)
        #expect(
            after.cores >= 1 && after.dramBudgetBytes == 512 << 20 && after.instances.isEmpty
                && after.reservedBytes == 0)
        #expect(after.memoryBudgetBytes == 4 << 30)

        // Evicting from DRAM frees its bytes; only the DRAM tier is a worker's to evict.
        #expect(try await worker.evict(smol, from: .dram) > 0)
        #expect(await worker.inventory().fastestTier(holding: smol) == .ssd)
        await #expect(throws: ServingError.self) { try await worker.evict(smol, from: .ssd) }
        await #expect(throws: ServingError.self) { try await worker.prefetch(smol, into: .ssd) }
    }

    @Test func theTokenizerBuiltFromFactsIsTheCheckpointsOwn() async throws {
        let directory = try TemporaryDirectory("worker-facts")
        defer { directory.remove() }
        let worker = try await Self.worker(directory)
        let facts = try Self.roundTrip(try await worker.modelFacts(try ModelName("smol")))
        #expect(facts.architecture == "llama" && facts.contextLength == 8192)
        #expect(facts.weightBytes == facts.index.partitions.reduce(0) { $0 + $1.byteCount })
        #expect(!facts.tokenizerFiles.isEmpty)
        // The control side builds the tokenizer from the facts alone, never from the disk.
        let fromFacts = try Tokenizer(checkpoint: facts.index) { name in try #require(facts.tokenizerFiles[name]) }
        let reader = try worker.store.reader(for: try ModelName("smol"))
        let fromDisk = try Tokenizer(checkpoint: reader.index) { Data(try reader.fileContents($0)) }
        let text = "Hello, world! Ünïcödé and numbers 12345."
        #expect(fromFacts.encode(text) == fromDisk.encode(text))
        #expect(fromFacts.vocabularySize == 49152)

        // A model the store lacks is a 404 once it reaches a route.
        do {
            _ = try await worker.modelFacts(try ModelName("absent"))
            Issue.record("facts of a missing model")
        } catch {
            #expect(ServingError(error).kind == .notFound, "\(error)")
        }
    }

    @Test func resolveTellsStoreModelsFromPullableSourcesAndRefusesOthers() async throws {
        let directory = try TemporaryDirectory("worker-resolve")
        defer { directory.remove() }
        let worker = try await Self.worker(directory)
        #expect(try await worker.resolve("smol") == SourceResolution(local: try ModelName("smol")))
        let gguf = try RealModel.ggufPath()
        let file = try await worker.resolve(gguf)
        let expectedName = try ModelName("smollm2-135m-instruct.q4_1")
        #expect(file.local == nil && file.pullName == expectedName && file.pullableSource == gguf)
        for bad in ["/no/such/file.gguf", "ftp://example.invalid/x.gguf", ""] {
            do {
                _ = try await worker.resolve(bad)
                Issue.record("resolved `\(bad)`")
            } catch {
                #expect(ServingError(error).kind == .invalidRequest, "\(bad): \(error)")
            }
        }
    }

    @Test func pullReportsProgressThenTheModel() async throws {
        let directory = try TemporaryDirectory("worker-pull")
        defer { directory.remove() }
        let worker = try await Self.worker(directory)
        let name = try ModelName("pulled")
        var phases: [String] = []
        var finished: (ModelName, Int)?
        for try await event in worker.pull(try RealModel.ggufPath(), as: name) {
            switch try Self.roundTrip(event) {
            case .progress(let phase, let completed, let total):
                #expect(completed >= 0 && (total == 0 || completed <= total))
                if phases.last != phase { phases.append(phase) }
            case .finished(let model, let bytes): finished = (model, bytes)
            }
        }
        #expect(phases.contains("convert"), "\(phases)")
        #expect(finished?.0 == name && (finished?.1 ?? 0) > 80 << 20)
        #expect(await worker.inventory().fastestTier(holding: name) == .ssd)
        // A source that is not there ends the stream with the error.
        await #expect(throws: (any Error).self) {
            for try await _ in worker.pull(directory.file("missing.gguf"), as: try ModelName("missing")) {}
        }
    }

    /// Start progress arrives as events; a running job's snapshot continues on another instance
    /// exactly as the job would have gone on (sampled with a seed, so the sampler state matters).
    @Test func aSnapshotOfARunningJobContinuesOnAnotherInstance() async throws {
        let directory = try TemporaryDirectory("worker-snapshot")
        defer { directory.remove() }
        let worker = try await Self.worker(directory)
        let facts = try await worker.modelFacts(try ModelName("smol"))
        let sizing = InstanceSizing(
            requestedContext: 512, modelContext: facts.contextLength, maxSequences: 2,
            weightBytes: facts.weightBytes, kvBytesPerPosition: facts.kvBytesPerPosition)
        var events: [StartEvent] = []
        for try await event in worker.startInstance(
            InstanceSpec(id: "a", deployment: "d", model: try ModelName("smol"), sizing: sizing))
        {
            events.append(try Self.roundTrip(event))
        }
        guard case .started(let info)? = events.last else { Issue.record("no started event: \(events)"); return }
        #expect(info.contextLength == 512 && info.kvCacheBytes == sizing.kvCacheBytes && info.tier == .ssd)
        #expect(events.dropLast().allSatisfy { if case .loading = $0 { true } else { false } })
        let running = await worker.inventory()
        #expect(running.instances == ["a"] && running.reservedBytes == info.weightBytes + info.kvCacheBytes)
        for try await _ in worker.startInstance(
            InstanceSpec(id: "b", deployment: "d", model: try ModelName("smol"), sizing: sizing))
        {}

        let tokenizer = try Tokenizer(checkpoint: facts.index) { try #require(facts.tokenizerFiles[$0]) }
        var sampling = SamplingParameters()
        sampling.temperature = 0.9
        sampling.seed = 42
        func job(_ id: String) -> GenerationJob {
            var job = GenerationJob(
                id: id, prompt: tokenizer.encode("Once upon a time"), sampling: sampling, maxTokens: 64, stop: [],
                logprobs: nil)
            job.stopAtEndOfGeneration = false
            return job
        }
        func tokens(_ stream: AsyncThrowingStream<GenerationEvent, any Error>) async throws -> [Int] {
            var tokens: [Int] = []
            for try await event in stream {
                if case .token(let output) = event, output.token >= 0 { tokens.append(output.token) }
            }
            return tokens
        }
        let uninterrupted = try await tokens(worker.run(job("whole"), on: "b"))
        // Long enough that the job is still running when the test, reading its fifth token,
        // asks for the snapshot (a busy machine can leave the reader a few hundred ms behind).
        #expect(uninterrupted.count == 64)

        // The job runs on `a`; after a few tokens its snapshot is taken and it is cancelled there.
        var head: [Int] = []
        var snapshot: SequenceSnapshot?
        for try await event in worker.run(job("moved"), on: "a") {
            guard case .token(let output) = event else { continue }
            head.append(output.token)
            if head.count == 5 {
                let taken: SequenceSnapshot? = await worker.snapshot(job: "moved", on: "a")
                let exported = try #require(taken)
                snapshot = try Self.roundTrip(exported)
                await worker.cancel(job: "moved", on: "a")
                break
            }
        }
        let taken = try #require(snapshot)
        let generated = Array(taken.tokens[taken.promptCount...])
        #expect(generated.count >= 5 && Array(generated.prefix(5)) == head)
        #expect(Array(generated) == Array(uninterrupted.prefix(generated.count)))
        // On `b`, it goes on from the snapshot: only the tokens after it, and the same ones.
        var resumed = job("moved")
        resumed.resume = taken
        var summary: GenerationSummary?
        var tail: [Int] = []
        for try await event in worker.run(try Self.roundTrip(resumed), on: "b") {
            switch event {
            case .token(let output): if output.token >= 0 { tail.append(output.token) }
            case .finished(let done): summary = done
            case .detached: Issue.record("nobody detached this job")
            }
        }
        #expect(generated + tail == uninterrupted)
        #expect(summary?.completionTokens == 64 && summary?.finishReason == .length)
        #expect(await worker.snapshot(job: "moved", on: "b") == nil, "a finished job has no snapshot")
        #expect(await worker.snapshot(job: "moved", on: "nowhere") == nil)
        await worker.stopInstance("a")
        await worker.stopInstance("b")
    }

    /// Jobs sharing an instance's steps each get their own tokens, including in the step where
    /// another job ends and leaves the batch (a job that ended used to pass its token to the job
    /// after it: concurrent streams changed when a neighbour finished).
    @Test func jobsEndingBesideOthersLeaveTheirTokensAlone() async throws {
        let directory = try TemporaryDirectory("worker-neighbours")
        defer { directory.remove() }
        let (worker, facts) = try await Self.worker(directory, instance: "a", context: 256, sequences: 4)
        let tokenizer = try Tokenizer(checkpoint: facts.index) { try #require(facts.tokenizerFiles[$0]) }
        let jobs = [
            ("one", "The capital of France is", 3), ("two", "1, 2, 3, 4,", 9), ("three", "Once upon a time", 24),
        ]
        .map { id, prompt, tokens in
            var job = GenerationJob(
                id: id, prompt: tokenizer.encode(prompt), sampling: .greedy, maxTokens: tokens, stop: [],
                logprobs: nil)
            job.stopAtEndOfGeneration = false
            return job
        }
        @Sendable func tokens(_ job: GenerationJob) async throws -> [Int] {
            var tokens: [Int] = []
            for try await event in worker.run(job, on: "a") {
                if case .token(let output) = event, output.token >= 0 { tokens.append(output.token) }
            }
            return tokens
        }
        var alone: [[Int]] = []
        for job in jobs { alone.append(try await tokens(job)) }
        // Together, the shortest first in the batch: each ends while the ones after it go on.
        for round in 0..<3 {
            let together = try await withThrowingTaskGroup(of: (Int, [Int]).self) { group in
                for (index, job) in jobs.enumerated() {
                    var job = job
                    job.id += "-\(round)"
                    group.addTask { (index, try await tokens(job)) }
                    try await Task.sleep(for: .milliseconds(2))
                }
                var results = [[Int]](repeating: [], count: jobs.count)
                for try await (index, tokens) in group { results[index] = tokens }
                return results
            }
            #expect(together == alone, "round \(round)")
        }
        await worker.stopInstance("a")
    }

    /// What crosses the wire next (the cluster) is untrusted: mutated jobs and snapshots either
    /// fail to decode, fail with an error event, or run to an end; none traps the instance, and
    /// it still serves a good job afterwards. Bounded (`SLLM_FUZZ_ITERATIONS`, default 120).
    @Test func mutatedJobsAndSnapshotsNeverTrapAnInstance() async throws {
        let directory = try TemporaryDirectory("worker-fuzz")
        defer { directory.remove() }
        let (worker, _) = try await Self.worker(directory, instance: "f", context: 24, sequences: 2)
        var sampling = SamplingParameters()
        sampling.seed = 7
        sampling.repetitionPenalty = 1.1
        var base = GenerationJob(
            id: "j", prompt: [1, 2, 3, 4], sampling: sampling, maxTokens: 6, stop: ["x"], logprobs: 2)
        base.resume = SequenceSnapshot(
            tokens: [1, 2, 3, 4, 5, 6], promptCount: 4, sampler: Sampler(parameters: sampling).state)
        let valid = try #require(
            try JSONSerialization.jsonObject(with: try JSONEncoder().encode(base)) as? [String: Any])
        let strange: [Any] = [
            -1, 0, 1, 49151, 49152, Int.max, Int.min, -0.5, 1e300, "", "x", NSNull(), true, [Int](), [-1, 99999],
            [Int](repeating: 7, count: 40), ["a": 1],
        ]
        let paths: [[String]] = [
            ["prompt"], ["maxTokens"], ["logprobs"], ["stop"], ["id"], ["resume", "tokens"], ["resume", "promptCount"],
            ["resume", "sampler", "drawn"], ["resume", "sampler", "rngState"],
            ["resume", "sampler", "parameters", "penaltyWindow"],
            ["resume", "sampler", "parameters", "topK"], ["resume", "sampler", "parameters", "temperature"],
            ["sampling", "penaltyWindow"],
            ["sampling", "topK"], ["sampling", "minP"], ["resume"],
        ]
        func setting(_ object: [String: Any], _ path: ArraySlice<String>, _ value: Any) -> [String: Any] {
            var object = object
            guard let key = path.first else { return object }
            if path.count == 1 {
                object[key] = value
            } else {
                object[key] = setting(object[key] as? [String: Any] ?? [:], path.dropFirst(), value)
            }
            return object
        }
        let iterations = Fuzz.iterations(default: 120)
        var random = SeededGenerator(seed: 13)
        var ran = 0
        for iteration in 0..<iterations {
            var object = valid
            for _ in 0..<Int.random(in: 1...3, using: &random) {
                object = setting(
                    object, paths.randomElement(using: &random)![...], strange.randomElement(using: &random)!)
            }
            guard let data = try? JSONSerialization.data(withJSONObject: object),
                var job = try? JSONDecoder().decode(GenerationJob.self, from: data)
            else { continue }
            job.id = "j\(iteration)"
            job.maxTokens = job.maxTokens.map { min($0, 8) }
            do {
                for try await _ in worker.run(job, on: "f") {}
                ran += 1
            } catch {
                #expect(!"\(error)".isEmpty)
            }
        }
        #expect(ran > 0, "some mutated jobs still decode and run")
        var good = GenerationJob(
            id: "after", prompt: [1, 2, 3], sampling: .greedy, maxTokens: 3, stop: [], logprobs: nil)
        good.stopAtEndOfGeneration = false
        var tokens = 0
        for try await event in worker.run(good, on: "f") { if case .token = event { tokens += 1 } }
        #expect(tokens == 3, "the instance still serves")
        await worker.stopInstance("f")
    }

    @Test func namesAndSizingAreCheckedWhereTheyAreDecided() throws {
        #expect(throws: (any Error).self) { try JSONDecoder().decode(ModelName.self, from: Data(#""../etc""#.utf8)) }
        #expect(try JSONDecoder().decode(ModelName.self, from: Data(#""smol""#.utf8)) == (try ModelName("smol")))
        let sizing = InstanceSizing(
            requestedContext: nil, modelContext: 2048, maxSequences: 4, weightBytes: 100, kvBytesPerPosition: 10)
        #expect(
            sizing.contextLength == 2048 && sizing.kvCacheBytes == 4 * 2048 * 10 && sizing.totalBytes == 100 + 81920)
        #expect(
            InstanceSizing(
                requestedContext: nil, modelContext: 32768, maxSequences: 1, weightBytes: 0, kvBytesPerPosition: 1
            ).contextLength == 8192)
        #expect(
            InstanceSizing(
                requestedContext: 0, modelContext: 100, maxSequences: 0, weightBytes: 0, kvBytesPerPosition: 1
            ).contextLength == 1)
        let huge = InstanceSizing(
            requestedContext: nil, modelContext: 8192, maxSequences: Int.max, weightBytes: 0,
            kvBytesPerPosition: Int.max)
        #expect(huge.kvCacheBytes > 1 << 60, "an overflowing size is refused by admission, not wrapped")
    }
}
