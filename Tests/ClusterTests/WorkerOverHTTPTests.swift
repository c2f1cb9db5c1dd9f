import AsyncHTTPClient
import Checkpoint
import Engine
import Foundation
import Logging
import NIOCore
import Scheduling
import Serving
import Store
import TestSupport
import Testing

@testable import Cluster

/// The worker protocol over HTTP (`sllm worker` and a controller's `RemoteWorker`): the same
/// calls, events and errors as the in-process worker, behind the cluster token.
@Suite(.serialized) struct WorkerOverHTTPTests {
    static let prompt = [1, 504, 3458, 282, 253, 1193, 30, 2]

    static func job(_ id: String) -> GenerationJob {
        var sampling = SamplingParameters()
        sampling.temperature = 0.9
        sampling.seed = 42
        var job = GenerationJob(id: id, prompt: prompt, sampling: sampling, maxTokens: 48, stop: [], logprobs: 2)
        job.stopAtEndOfGeneration = false
        return job
    }

    /// Starts instance `id` of the real model on `worker` (one sequence of `context` positions).
    static func startInstance(_ id: String, context: Int, on worker: any Worker) async throws {
        let model = try ModelName("smollm2-135m")
        let facts = try await worker.modelFacts(model)
        let sizing = InstanceSizing(
            requestedContext: context, modelContext: facts.contextLength, maxSequences: 1,
            weightBytes: facts.weightBytes, kvBytesPerPosition: facts.kvBytesPerPosition)
        for try await _ in worker.startInstance(InstanceSpec(id: id, deployment: "d", model: model, sizing: sizing)) {}
    }

    static func collect(_ stream: AsyncThrowingStream<GenerationEvent, any Error>) async throws -> (
        tokens: [Int], summary: GenerationSummary?
    ) {
        var tokens: [Int] = []
        var summary: GenerationSummary?
        for try await event in stream {
            switch event {
            case .token(let output): if output.token >= 0 { tokens.append(output.token) }
            case .finished(let done): summary = done
            case .detached: Issue.record("a job nobody migrated was detached")
            }
        }
        return (tokens, summary)
    }

    /// Start, generate, snapshot, cancel, resume and stop through the network client give what
    /// the in-process worker gives; errors keep their kind.
    @Test func everyCallCrossesTheWireAsItRunsInProcess() async throws {
        let harness = try await WorkerHarness.start(node: "node-a")
        defer { harness.remove() }
        let remote = try await harness.remote()
        #expect(remote.node.rawValue == "node-a")
        let model = try ModelName("smollm2-135m")
        let inventory = await remote.inventory()
        #expect(inventory.node.rawValue == "node-a" && inventory.fastestTier(holding: model) == .ssd)
        let facts = try await remote.modelFacts(model)
        #expect(facts.weightBytes == (try await harness.local.modelFacts(model)).weightBytes)
        #expect(try await remote.resolve("smollm2-135m").local == model)
        // A store error keeps its kind (404, param `model`) across the wire.
        await #expect {
            try await remote.modelFacts(try ModelName("absent"))
        } throws: { error in
            (error as? ServingError)?.kind == .notFound && (error as? ServingError)?.param == "model"
        }

        let sizing = InstanceSizing(
            requestedContext: 512, modelContext: facts.contextLength, maxSequences: 2, weightBytes: facts.weightBytes,
            kvBytesPerPosition: facts.kvBytesPerPosition)
        var started: InstanceInfo?
        var progress = 0
        for try await event in remote.startInstance(
            InstanceSpec(id: "a", deployment: "d", model: model, sizing: sizing))
        {
            switch event {
            case .loading: progress += 1
            case .started(let info): started = info
            }
        }
        #expect(started?.id == "a" && started?.contextLength == 512 && started?.tier == .ssd)
        #expect(await remote.inventory().instances == ["a"])

        // The same sampled job through the wire and in process: the same tokens, and logprobs
        // (including masked -inf alternatives) survive the JSON.
        let wire = try await Self.collect(remote.run(Self.job("wire"), on: "a"))
        let local = try await Self.collect(harness.local.run(Self.job("local"), on: "a"))
        #expect(wire.tokens.count == 48 && wire.tokens == local.tokens)
        #expect(wire.summary?.completionTokens == 48 && wire.summary?.finishReason == .length)

        // Snapshot a running job over the wire, cancel it, and resume it: the same sequence.
        var head: [Int] = []
        var snapshot: SequenceSnapshot?
        for try await event in remote.run(Self.job("moved"), on: "a") {
            guard case .token(let output) = event else { continue }
            head.append(output.token)
            if head.count == 5 {
                snapshot = await remote.snapshot(job: "moved", on: "a")
                await remote.cancel(job: "moved", on: "a")
                break
            }
        }
        let taken = try #require(snapshot)
        // Resumed as a migration does: a job of its own continuing the snapshot.
        var resumed = Self.job("moved-on")
        resumed.resume = taken
        let tail = try await Self.collect(remote.run(resumed, on: "a"))
        #expect(Array(taken.tokens[taken.promptCount...]) + tail.tokens == wire.tokens)
        #expect(await remote.snapshot(job: "moved", on: "nowhere") == nil)

        // A migration's calls over the wire: warm the job's tokens, detach it (its stream ends
        // with the snapshot), continue it from there: the same sequence again.
        var handed: [Int] = []
        var detached: SequenceSnapshot?
        var warm: WarmReport?
        for try await event in remote.run(Self.job("handed"), on: "a") {
            switch event {
            case .token(let output):
                handed.append(output.token)
                if handed.count == 6, let taken = await remote.snapshot(job: "handed", on: "a") {
                    warm = try await remote.warm(taken.tokens, on: "a")
                    #expect(await remote.detach(job: "handed", on: "a"))
                }
            case .detached(let snapshot): detached = snapshot
            case .finished: Issue.record("a detached job does not finish where it was")
            }
        }
        let hand = try #require(detached)
        #expect(Array(hand.tokens[hand.promptCount...]) == handed)
        #expect(warm.map { $0.tokens > Self.prompt.count && $0.computed > 0 } == true)
        var continued = Self.job("handed-on")
        continued.resume = hand
        var rest: [Int] = []
        var overtaken: WarmReport?
        for try await event in remote.run(continued, on: "a") {
            guard case .token(let output) = event, output.token >= 0 else { continue }
            rest.append(output.token)
            // A warm that the hand-over overtook (a migration sends its last one beside the
            // detach): the resumed job holds those tokens, so nothing is computed again.
            if rest.count == 1 { overtaken = try await remote.warm(hand.tokens, on: "a") }
        }
        #expect(overtaken?.computed == 0)
        #expect(handed + rest == wire.tokens)
        #expect(await remote.detach(job: "handed", on: "a") == false)
        await #expect(throws: ServingError.self) { try await remote.warm([1, 2], on: "nowhere") }

        // A job on an instance that is not there: the worker's own error, not a hang.
        await #expect {
            _ = try await Self.collect(remote.run(Self.job("lost"), on: "nowhere"))
        } throws: { error in
            error is ServingError
        }
        await remote.stopInstance("a")
        #expect(await remote.inventory().instances.isEmpty)
    }

    /// A worker that dies mid-stream ends the controller's stream with an error naming it, never
    /// with a normal finish; its last inventory stays what `inventory()` answers.
    @Test func aWorkerThatDiesMidStreamIsAnErrorNotAnEnd() async throws {
        let harness = try await WorkerHarness.start(node: "node-dies")
        defer { harness.remove() }
        let remote = try await harness.remote()
        try await Self.startInstance("x", context: 512, on: remote)
        var job = Self.job("long")
        job.maxTokens = 400
        var seen = 0
        await #expect {
            for try await event in remote.run(job, on: "x") {
                guard case .token = event else { continue }
                seen += 1
                if seen == 3 { await harness.stop() }
            }
        } throws: { error in
            guard let error = error as? ServingError else { return false }
            return error.kind == .workerLost && error.message.contains("node-dies")
        }
        #expect(seen < 400)
        #expect(await remote.inventory().node.rawValue == "node-dies")
        await harness.local.stopInstance("x")
    }

    /// A controller that stops reading a generation (its client left) ends the worker's job: the
    /// HTTP request is cancelled, the worker's writes fail, and the job's slot is freed.
    @Test func leavingAStreamCancelsTheJobOnTheWorker() async throws {
        let harness = try await WorkerHarness.start(node: "node-leave")
        defer { harness.remove() }
        let remote = try await harness.remote()
        try await Self.startInstance("l", context: 1024, on: remote)
        var job = Self.job("left")
        job.maxTokens = 900
        var seen = 0
        for try await event in remote.run(job, on: "l") {
            guard case .token = event else { continue }
            seen += 1
            if seen == 3 { break }
        }
        #expect(seen == 3)
        // The job ends on the worker long before its 900 tokens (a job left running is seen at 899
        // before it ends): followed through its snapshots
        // until it is gone (a job the cancellation missed would be seen growing to its end).
        var furthest = 0
        while let snapshot = await harness.local.snapshot(job: "left", on: "l") {
            furthest = max(furthest, snapshot.tokens.count - snapshot.promptCount)
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(furthest < 600, "the job ran \(furthest) tokens after its reader left")
        #expect(await harness.local.inventory().runningJobs == 0)
        // The one slot is free again: a new job runs to its end.
        var short = Self.job("after")
        short.maxTokens = 4
        #expect(try await Self.collect(remote.run(short, on: "l")).tokens.count == 4)
        await remote.stopInstance("l")
    }

    /// A stranger who reaches the port runs nothing and reads nothing, however the path is
    /// spelled; a controller of another protocol version is refused with a reason.
    /// With controllers sharing a database, calls carry the leader's epoch: once the worker has
    /// seen a newer leader's call, the former leader's calls are refused (409, naming both
    /// epochs) and start nothing; calls without an epoch (no shared database) go through, and a
    /// malformed epoch is a 400.
    @Test func aFormerLeadersCallsAreRefused() async throws {
        let harness = try await WorkerHarness.start(node: "node-fenced")
        defer { harness.remove() }
        let model = try ModelName("smollm2-135m")
        let former = try await harness.remote()
        former.fence(by: { 4 })
        #expect(try await former.modelFacts(model).name == model)
        let leader = try await harness.remote()
        leader.fence(by: { 5 })
        #expect(try await leader.modelFacts(model).name == model)
        func refused(_ error: any Error) -> Bool {
            let failure = ServingError(error)
            return failure.kind == .conflict && failure.message.contains("epoch 4")
                && failure.message.contains("epoch 5")
        }
        await #expect { try await former.modelFacts(model) } throws: { refused($0) }
        let facts = try await leader.modelFacts(model)
        let sizing = InstanceSizing(
            requestedContext: 256, modelContext: facts.contextLength, maxSequences: 1, weightBytes: facts.weightBytes,
            kvBytesPerPosition: facts.kvBytesPerPosition)
        await #expect {
            for try await _ in former.startInstance(
                InstanceSpec(id: "x", deployment: "d", model: model, sizing: sizing))
            {}
        } throws: { refused($0) }
        #expect(await leader.inventory().instances.isEmpty)
        // No epoch: a controller without a shared database.
        #expect(try await harness.remote().modelFacts(model).name == model)
        let call = try JSONEncoder.wire.encode(WorkerCall.inventory)
        var request = "POST /worker/v1/call HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        request +=
            "Authorization: Bearer \(WorkerHarness.token)\r\n\(WorkerWire.versionHeader): \(WorkerWire.version)\r\n"
        request += "\(WorkerWire.epochHeader): -3\r\nContent-Length: \(call.count)\r\n\r\n"
        let malformed = try await exchange(port: harness.port, Array(request.utf8) + Array(call))
        #expect(malformed.status == 400 && malformed.body.contains(WorkerWire.epochHeader))
    }

    /// Mutated `sllm-leader-epoch` values: each call is run (200), refused as a former leader's
    /// (409) or refused as malformed (400); nothing traps, and the worker answers afterwards.
    @Test func mutatedEpochsNeverTrapTheWorker() async throws {
        let harness = try await WorkerHarness.start(node: "node-epoch-fuzz")
        defer { harness.remove() }
        let call = try JSONEncoder.wire.encode(WorkerCall.inventory)
        var random = SeededGenerator(seed: 0xE90C)
        let pieces = ["-", "+", "0", "7", "9", " ", "e", "x", "9223372036854775807", "\u{00e9}"].map { Array($0.utf8) }
        let iterations = Fuzz.iterations(default: 200)
        var statuses: [Int: Int] = [:]
        for round in 0..<iterations {
            var value = Array("12".utf8)
            Fuzz.mutate(&value, edits: 1...4, pieces: pieces, using: &random)
            // A line break would end the header, not test its value.
            value.removeAll { $0 == 0x0D || $0 == 0x0A }
            var request = "POST /worker/v1/call HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            request +=
                "Authorization: Bearer \(WorkerHarness.token)\r\n\(WorkerWire.versionHeader): \(WorkerWire.version)\r\n"
            let head = Array(request.utf8) + Array("\(WorkerWire.epochHeader): ".utf8) + value
            let response = try await exchange(
                port: harness.port, head + Array("\r\nContent-Length: \(call.count)\r\n\r\n".utf8) + Array(call))
            statuses[response.status, default: 0] += 1
            #expect([200, 400, 409].contains(response.status), "round \(round): \(response.status)")
        }
        print("worker epoch fuzz: \(iterations) values; statuses \(statuses.sorted { $0.key < $1.key })")
        #expect(try await harness.remote().modelFacts(try ModelName("smollm2-135m")).weightBytes > 0)
    }

    @Test func strangersRunNothingAndReadNothing() async throws {
        let harness = try await WorkerHarness.start(node: "node-guarded")
        defer { harness.remove() }
        let call = try JSONEncoder.wire.encode(WorkerCall.inventory)
        let good = [
            "Authorization": "Bearer \(WorkerHarness.token)", WorkerWire.versionHeader: String(WorkerWire.version),
        ]
        func send(_ path: String, headers: [String: String], body: Data? = nil, method: String = "POST") async throws
            -> RawResponse
        {
            var request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            for (name, value) in headers { request += "\(name): \(value)\r\n" }
            let payload = body ?? Data()
            request += "Content-Length: \(payload.count)\r\n\r\n"
            return try await exchange(port: harness.port, Array(request.utf8) + Array(payload))
        }
        #expect(try await send("/worker/v1/call", headers: good, body: call).status == 200)
        let spellings = [
            "/worker/v1/call", "//worker/v1/call", "/worker/v1/call/", "/worker//v1/call", "/worker/v1/./call",
            "/worker/v1/../v1/call", "/%77orker/v1/call", "/health/../worker/v1/call", "/WORKER/v1/call",
            "/worker/v1/call?x=1", "/worker/v1/call%00", "/worker/v1/call#x",
        ]
        for path in spellings {
            for headers in [
                [WorkerWire.versionHeader: String(WorkerWire.version)],
                ["Authorization": "Bearer wrong", WorkerWire.versionHeader: String(WorkerWire.version)],
                ["Authorization": "Bearer", WorkerWire.versionHeader: String(WorkerWire.version)],
                [
                    "Authorization": "bearer \(WorkerHarness.token)x",
                    WorkerWire.versionHeader: String(WorkerWire.version),
                ],
            ] {
                let response = try await send(path, headers: headers, body: call)
                #expect(response.status == 401 || response.status == 400, "\(path) \(headers): \(response.status)")
                #expect(!response.body.contains("node-guarded"), "\(path) leaked the inventory")
            }
        }
        #expect(try await send("/health", headers: [:], method: "GET").status == 200)
        #expect(try await send("/metrics", headers: [:], method: "GET").status == 401)
        #expect(try await send("/nothing", headers: good, method: "GET").status == 404)
        let old = try await send(
            "/worker/v1/call", headers: ["Authorization": good["Authorization"]!, WorkerWire.versionHeader: "0"],
            body: call)
        #expect(old.status == 400 && old.body.contains("run one sllm version across the cluster"))
        // The client refuses a server that is not a worker of its version, saying so.
        await #expect {
            try await RemoteWorker.connect(
                url: harness.url, token: "another-cluster-token-000", client: WorkerHarness.client,
                logger: .init(label: "test"))
        } throws: { error in
            (error as? ServingError)?.kind == .unauthorized
        }
    }

    /// Mutated call bodies (with the token) get a 400 or a worker reply, never a 5xx, a trap or a
    /// hang; the worker still answers afterwards. Bounded (`SLLM_FUZZ_ITERATIONS`, default 300).
    @Test func mutatedCallsNeverTrapTheWorker() async throws {
        let harness = try await WorkerHarness.start(node: "node-fuzz")
        defer { harness.remove() }
        let seeds: [WorkerCall] = [
            .inventory, .modelFacts(try ModelName("smollm2-135m")), .resolve("smollm2-135m"),
            .evict(try ModelName("smollm2-135m"), .dram), .stopInstance("none"),
            .run(Self.job("j"), instance: "none"), .cancel(job: "j", instance: "none"),
            .snapshot(job: "j", instance: "none"), .verifyCache(nil), .warm([1, 2, 3], instance: "none"),
            .detach(job: "j", instance: "none"),
        ]
        let bodies = try seeds.map { try JSONEncoder.wire.encode($0) }
        var random = SeededGenerator(seed: 0xC0FFEE)
        let iterations = Fuzz.iterations(default: 300)
        let alphabet = Array("{}[]\":,0123456789-eE.nulltruefalse\\u{}".utf8)
        var statuses: [Int: Int] = [:]
        for round in 0..<iterations {
            var bytes = [UInt8](bodies[round % bodies.count])
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                let position = Int.random(in: 0...bytes.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: bytes.insert(alphabet.randomElement(using: &random)!, at: position)
                case 1 where position < bytes.count: bytes.remove(at: position)
                default: if position < bytes.count { bytes[position] = UInt8.random(in: 0...255, using: &random) }
                }
            }
            var request = "POST /worker/v1/call HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            request +=
                "Authorization: Bearer \(WorkerHarness.token)\r\n\(WorkerWire.versionHeader): \(WorkerWire.version)\r\n"
            request += "Content-Length: \(bytes.count)\r\n\r\n"
            let response = try await exchange(port: harness.port, Array(request.utf8) + bytes)
            statuses[response.status, default: 0] += 1
            #expect(response.status == 200 || response.status == 400, "round \(round): \(response.status)")
        }
        print("worker fuzz: \(iterations) bodies; statuses \(statuses.sorted { $0.key < $1.key })")
        let remote = try await harness.remote()
        #expect(await remote.inventory().node.rawValue == "node-fuzz")
    }
}

/// A worker's checkpoints as peers read them: behind the token, by range, only the index's files.
@Suite struct CheckpointRouteTests {
    static func get(_ port: Int, _ path: String, headers: [String: String] = [:]) async throws -> RawResponse {
        var request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        request += "\r\n"
        return try await exchange(port: port, Array(request.utf8))
    }

    static let token = ["Authorization": "Bearer \(WorkerHarness.token)"]

    @Test func peersReadCheckpointFilesByRangeWithTheTokenOnly() async throws {
        let harness = try await WorkerHarness.start(node: "node-peer")
        defer { harness.remove() }
        let reader = try harness.local.store.reader(for: try ModelName("smollm2-135m"))
        let partition = reader.index.partitions[0]
        let onDisk = try Data(contentsOf: URL(fileURLWithPath: reader.directory + "/" + partition.file))
        let base = "/cluster/v1/checkpoints/smollm2-135m/"

        let index = try await Self.get(harness.port, base + "index", headers: Self.token)
        #expect(index.status == 200)
        let whole = try Data(contentsOf: URL(fileURLWithPath: reader.directory + "/index"))
        #expect(index.bodyBytes == Array(whole))

        let ranged = try await Self.get(
            harness.port, base + partition.file, headers: Self.token.merging(["Range": "bytes=1000-5095"]) { $1 })
        #expect(ranged.status == 206)
        #expect(ranged.header("content-range") == "bytes 1000-5095/\(partition.byteCount)")
        #expect(ranged.bodyBytes == Array(onDisk[1000..<5096]))
        let suffix = try await Self.get(
            harness.port, base + partition.file, headers: Self.token.merging(["Range": "bytes=-10"]) { $1 })
        #expect(suffix.status == 206 && suffix.bodyBytes == Array(onDisk.suffix(10)))

        for range in [
            "bytes=\(partition.byteCount)-", "bytes=5-1", "bytes=0-1,4-5", "items=0-1", "bytes=-0", "bytes=x-",
        ] {
            let refused = try await Self.get(
                harness.port, base + partition.file, headers: Self.token.merging(["Range": range]) { $1 })
            #expect(refused.status == 416, "\(range): \(refused.status)")
            #expect(refused.header("content-range") == "bytes */\(partition.byteCount)")
        }
        #expect(try await Self.get(harness.port, base + "nothing", headers: Self.token).status == 404)
        #expect(
            try await Self.get(harness.port, "/cluster/v1/checkpoints/absent/index", headers: Self.token).status == 404)
        #expect(
            try await Self.get(harness.port, "/cluster/v1/checkpoints/BAD%20NAME/index", headers: Self.token).status
                == 400)

        // A stranger reads nothing, however the path is spelled; a path never reaches the disk.
        let spellings = [
            base + "index", "/" + base + "index", base + "index/", base + "./index", base + "../smollm2-135m/index",
            "/%63luster/v1/checkpoints/smollm2-135m/index", "/health/.." + base + "index", base + "index?x=1",
            base + "index%00", base + partition.file,
        ]
        for path in spellings {
            for headers in [[:], ["Authorization": "Bearer wrong"], ["Authorization": "Basic \(WorkerHarness.token)"]] {
                let response = try await Self.get(harness.port, path, headers: headers)
                #expect(response.status == 401, "\(path) \(headers): \(response.status)")
                #expect(response.bodyBytes.count < 400, "\(path) leaked bytes")
            }
        }
        for path in [
            base + "..%2F..%2F..%2Fetc%2Fpasswd", base + "%2E%2E", "/cluster/v1/checkpoints/..%2Fmodels/index",
            "/cluster/v1/checkpoints/smollm2-135m/..", "/cluster/v1/checkpoints/%2e%2e/%2e%2e",
        ] {
            let response = try await Self.get(harness.port, path, headers: Self.token)
            #expect([400, 404].contains(response.status), "\(path): \(response.status)")
        }
    }

    /// Mutated paths and Range headers (with the token) get a 2xx, 4xx, never a 5xx, trap or hang.
    /// Bounded (`SLLM_FUZZ_ITERATIONS`, default 300).
    @Test func mutatedCheckpointReadsNeverTrapTheWorker() async throws {
        let harness = try await WorkerHarness.start(node: "node-peer-fuzz")
        defer { harness.remove() }
        var random = SeededGenerator(seed: 0xF17C4)
        let iterations = Fuzz.iterations(default: 300)
        // Ranges are mutated on the index only (40 KB): a mutation dropping a range's end must not
        // make a round read the 96 MB partition, whose path is mutated with a small range.
        let paths = ["/cluster/v1/checkpoints/smollm2-135m/index", "/cluster/v1/checkpoints/smollm2-135m/data-0000"]
        let ranges = ["bytes=0-99", "bytes=-4096", "bytes=100-", "bytes=0-0"]
        let alphabet = Array("/.%2e0123456789-=,bytes ".utf8)
        func mutate(_ text: String) -> String {
            var bytes = Array(text.utf8)
            for _ in 0..<Int.random(in: 1...3, using: &random) {
                let position = Int.random(in: 0...bytes.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: bytes.insert(alphabet.randomElement(using: &random)!, at: position)
                case 1 where position < bytes.count: bytes.remove(at: position)
                default: if position < bytes.count { bytes[position] = alphabet.randomElement(using: &random)! }
                }
            }
            return String(decoding: bytes.filter { $0 > 0x20 && $0 < 0x7F || $0 == 0x20 }, as: UTF8.self)
        }
        var statuses: [Int: Int] = [:]
        for round in 0..<iterations {
            var path = paths[0]
            var range = "bytes=0-4095"
            if round % 2 == 0 {
                path = mutate(paths[round / 2 % paths.count])
            } else {
                range = mutate(ranges[round / 2 % ranges.count])
            }
            if !path.hasPrefix("/") { path = "/" + path }
            let response = try await CheckpointRouteTests.get(
                harness.port, path.replacingOccurrences(of: " ", with: "%20"),
                headers: Self.token.merging(["Range": range]) { $1 })
            statuses[response.status, default: 0] += 1
            #expect(response.status < 500, "round \(round): \(path) \(range): \(response.status)")
        }
        print("checkpoint route fuzz: \(iterations) requests; statuses \(statuses.sorted { $0.key < $1.key })")
        #expect(try await Self.get(harness.port, paths[0], headers: Self.token).status == 200)
    }
}

/// Sends raw bytes as one request and reads the response, on a thread of its own.
func exchange(port: Int, _ bytes: [UInt8]) async throws -> RawResponse {
    try await onThread {
        let connection = try RawConnection(port: port, timeout: 30)
        _ = connection.send(bytes)
        let received = connection.receive { RawResponse.parse($0) != nil }
        guard let response = RawResponse.parse(received) else {
            throw PostgresServerError("no complete response (got \(received.count) bytes)")
        }
        return response
    }
}
