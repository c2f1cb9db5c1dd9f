import AsyncHTTPClient
import Engine
import Foundation
import NIOCore
import NIOHTTP1
import Scheduling
import Store
import Synchronization
import TestSupport
import Testing

@testable import Serving

/// Puts time into every instance start (reporting progress meanwhile) and counts starts.
final class SlowWorker: Worker {
    let inner: LocalWorker
    let delay: Duration
    let starts = Atomic<Int>(0)
    /// Starts still to fail (each fails at once with an error of its own, as a load error would).
    let failingStarts = Atomic<Int>(0)
    /// A migration's calls still to fail as a worker that died would: warms, and runs of
    /// resumed jobs (a target lost right at the hand-over).
    let failingWarms = Atomic<Int>(0)
    let failingResumes = Atomic<Int>(0)
    /// Inventories answered in groups (see `gatherInventories`): the group size, how long one
    /// waits at most, the askers waiting.
    private let gathering = Mutex<(size: Int, within: Duration, waiting: [CheckedContinuation<Void, Never>])>(
        (0, .zero, []))

    init(_ inner: LocalWorker, delay: Duration) {
        self.inner = inner
        self.delay = delay
    }

    /// From now on, inventories are answered in groups of `size`: each once the group is complete
    /// (or `within` has passed), so that concurrent askers get theirs at the same moment.
    func gatherInventories(_ size: Int, within: Duration) {
        gathering.withLock {
            $0.size = size
            $0.within = within
        }
    }

    /// Reports progress through a slow first part of the load, then starts for real.
    func startInstance(_ spec: InstanceSpec) -> AsyncThrowingStream<StartEvent, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: StartEvent.self, throwing: (any Error).self)
        starts.add(1, ordering: .relaxed)
        if Self.take(failingStarts) {
            continuation.finish(throwing: ServingError(.internalError, "this start fails (a test's failing worker)"))
            return stream
        }
        let task = Task { [inner, delay] in
            do {
                for step in 1...4 {
                    try await Task.sleep(for: delay / 4)
                    continuation.yield(.loading(Double(step) / 5))
                }
                for try await event in inner.startInstance(spec) { continuation.yield(event) }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    var node: NodeID { inner.node }
    func inventory() async -> NodeInventory {
        if gathering.withLock({ $0.size }) > 0 {
            await withCheckedContinuation { (asker: CheckedContinuation<Void, Never>) in
                let (complete, within) = gathering.withLock {
                    gathering -> ([CheckedContinuation<Void, Never>], Duration) in
                    gathering.waiting.append(asker)
                    guard gathering.waiting.count >= gathering.size else { return ([], gathering.within) }
                    defer { gathering.waiting.removeAll() }
                    return (gathering.waiting, gathering.within)
                }
                for waiting in complete { waiting.resume() }
                guard complete.isEmpty else { return }
                // A group that does not fill up is answered when its time is up.
                Task {
                    try? await Task.sleep(for: within)
                    let late = self.gathering.withLock { gathering -> [CheckedContinuation<Void, Never>] in
                        defer { gathering.waiting.removeAll() }
                        return gathering.waiting
                    }
                    for waiting in late { waiting.resume() }
                }
            }
        }
        return await inner.inventory()
    }
    func modelFacts(_ model: ModelName) async throws -> ModelFacts { try await inner.modelFacts(model) }
    func resolve(_ source: String) async throws -> SourceResolution { try await inner.resolve(source) }
    func pull(_ source: String, as name: ModelName) -> AsyncThrowingStream<PullEvent, any Error> {
        inner.pull(source, as: name)
    }
    func prefetch(_ model: ModelName, into tier: Tier) async throws -> LoadReport {
        try await inner.prefetch(model, into: tier)
    }
    func evict(_ model: ModelName, from tier: Tier) async throws -> Int { try await inner.evict(model, from: tier) }
    func verifyCache(_ model: ModelName?) async throws -> [DRAMVerification] { try await inner.verifyCache(model) }
    func stopInstance(_ id: String) async { await inner.stopInstance(id) }
    func run(_ job: GenerationJob, on instance: String) -> AsyncThrowingStream<GenerationEvent, any Error> {
        if job.resume != nil, Self.take(failingResumes) {
            return AsyncThrowingStream { $0.finish(throwing: ServingError(.workerLost, "a test's target died")) }
        }
        return inner.run(job, on: instance)
    }

    /// Takes one of a counter's failures; false when none is left.
    private static func take(_ failures: borrowing Atomic<Int>) -> Bool {
        var left = failures.load(ordering: .relaxed)
        while left > 0 {
            let (taken, now) = failures.compareExchange(expected: left, desired: left - 1, ordering: .relaxed)
            if taken { return true }
            left = now
        }
        return false
    }
    func cancel(job: String, on instance: String) async { await inner.cancel(job: job, on: instance) }
    func snapshot(job: String, on instance: String) async -> SequenceSnapshot? {
        await inner.snapshot(job: job, on: instance)
    }
    func warm(_ tokens: [Int], on instance: String) async throws -> WarmReport {
        if Self.take(failingWarms) { throw ServingError(.workerLost, "a test's target died while warming") }
        return try await inner.warm(tokens, on: instance)
    }
    func detach(job: String, on instance: String) async -> Bool {
        await inner.detach(job: job, on: instance)
    }
}

@Suite(.serialized) struct AutoscalingTests {
    let chat = Self.chat()

    static func chat(model: String = "smollm2-135m", maxTokens: Int = 4, stream: Bool = false) -> [String: Any] {
        ["model": model, "messages": [["role": "user", "content": "Hi"]], "max_tokens": maxTokens, "stream": stream]
    }

    /// Keep-alive on a manual clock: the instance stays until its time has passed, not a moment
    /// less, and Ollama's per-request forms override the deployment's. No wall-clock sleeps.
    @Test func scalesToZeroAfterKeepAliveAndHonoursPerRequestKeepAlive() async throws {
        let clock = ManualClock()
        let server = try await TestServer.start(clock: clock)
        #expect(
            try await server.request(.PATCH, "/admin/deployments/smollm2-135m", json: ["keep_alive": "5m"]).status
                == 200)
        #expect(try await server.request(.POST, "/v1/chat/completions", json: chat).status == 200)
        #expect(try await server.instances("smollm2-135m").count == 1)
        #expect(try await server.eventually { clock.sleeperCount == 1 }, "the keep-alive timer is armed")
        let expires = try await server.instances("smollm2-135m").first?["expires_at"] as? String
        #expect(expires != nil)
        clock.advance(by: .seconds(299))
        #expect(
            try await server.instances("smollm2-135m").count == 1 && clock.sleeperCount == 1,
            "still within its keep-alive")
        clock.advance(by: .seconds(1))
        #expect(try await server.eventually { try await server.instances("smollm2-135m").isEmpty })
        #expect(try await server.metric("sllm_instances{model=\"smollm2-135m\",state=\"ready\"}") == 0)

        // Ollama's keep_alive -1 keeps the instance past the deployment's keep-alive.
        var forever = chat
        forever["keep_alive"] = -1
        #expect(try await server.request(.POST, "/v1/chat/completions", json: forever).status == 200)
        clock.advance(by: .seconds(3600))
        let kept = try await server.instances("smollm2-135m")
        #expect(
            kept.count == 1 && kept.first?["keep_alive"] as? String == "forever" && kept.first?["expires_at"] == nil)
        #expect(clock.sleeperCount == 0, "no timer for forever")
        // keep_alive 0 unloads as soon as the request ends.
        var now = chat
        now["keep_alive"] = "0"
        #expect(try await server.request(.POST, "/v1/chat/completions", json: now).status == 200)
        #expect(try await server.eventually { try await server.instances("smollm2-135m").isEmpty })
        try await server.stop()
    }

    @Test func concurrentRequestsCoalesceOnOneColdStartAndSeeItsProgress() async throws {
        let slow = Mutex<SlowWorker?>(nil)
        let server = try await TestServer.start(wrapWorker: { local in
            let worker = SlowWorker(local, delay: .milliseconds(1200))
            slow.withLock { $0 = worker }
            return worker
        })
        async let streamed = server.stream("/v1/chat/completions", json: Self.chat(stream: true))
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<3 {
                group.addTask { try await server.request(.POST, "/v1/chat/completions", json: Self.chat()).status }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let (status, lines) = try await streamed
        #expect(statuses == [200, 200, 200] && status == 200)
        #expect(slow.withLock { $0!.starts.load(ordering: .relaxed) } == 1)
        // The stream waited on the cold start with comment lines showing the load's progress.
        let comments = lines.filter { $0.hasPrefix(": loading ") }
        #expect(comments.count >= 2, "\(lines.prefix(5))")
        #expect(lines.last == "data: [DONE]")
        #expect(try await server.metric("sllm_cold_start_seconds_count{model=\"smollm2-135m\",phase=\"total\"}") == 4)
        try await server.stop()
    }

    @Test func scalesUpToMaxInstancesAndNoFurther() async throws {
        let slow = Mutex<SlowWorker?>(nil)
        let server = try await TestServer.start(
            { $0.defaultModel = "" },
            wrapWorker: { local in
                let worker = SlowWorker(local, delay: .milliseconds(200))
                slow.withLock { $0 = worker }
                return worker
            })
        let created = try await server.request(
            .POST, "/admin/deployments",
            json: [
                "model": "smollm2-135m", "name": "burst", "target_concurrency": 1, "max_instances": 2, "keep_alive": -1,
            ])
        #expect(created.status == 201)
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<5 {
                group.addTask {
                    try await server.request(
                        .POST, "/v1/chat/completions", json: Self.chat(model: "burst", maxTokens: 8)
                    ).status
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(statuses == Array(repeating: 200, count: 5))
        #expect(slow.withLock { $0!.starts.load(ordering: .relaxed) } == 2)
        #expect(try await server.instances("burst").count == 2)
        try await server.stop()
    }

    @Test func aFullQueueGets429AndADisconnectFreesItsSlot() async throws {
        let server = try await TestServer.start { $0.defaultModel = "" }
        #expect(
            try await server.request(
                .POST, "/admin/deployments",
                json: [
                    "model": "smollm2-135m", "name": "tight", "target_concurrency": 1, "max_instances": 1,
                    "queue_limit": 0, "keep_alive": -1,
                ]
            ).status == 201)
        let firstToken = AsyncStream.makeStream(of: Void.self)
        let holder = Task {
            let long: [String: Any] = [
                "model": "tight", "prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": true, "stream": true,
            ]
            return try await server.stream("/v1/completions", json: long, stopAfter: 1_000_000) { line in
                if line.hasPrefix("data: ") { firstToken.continuation.yield() }
            }
        }
        var iterator = firstToken.stream.makeAsyncIterator()
        _ = await iterator.next()
        let rejected = try await server.request(
            .POST, "/v1/completions", json: ["model": "tight", "prompt": "Hi", "max_tokens": 2])
        #expect(rejected.status == 429)
        #expect((rejected.json["error"] as? [String: Any])?["type"] as? String == "rate_limit_error")
        #expect(try await server.metric("sllm_requests_rejected_total{model=\"tight\",reason=\"queue_full\"}") == 1)
        // The client goes away: its job leaves the batch and the slot is free again.
        holder.cancel()
        _ = try? await holder.value
        #expect(
            try await server.eventually {
                ((try await server.deployment("tight"))["status"] as? [String: Any])?["in_flight"] as? Int == 0
            })
        #expect(
            try await server.request(
                .POST, "/v1/completions", json: ["model": "tight", "prompt": "Hi", "max_tokens": 2]
            ).status == 200)

        // A whole (non-streaming) request is cancelled too when its connection closes.
        await #expect(throws: HTTPClientError.deadlineExceeded) {
            try await server.request(
                .POST, "/v1/completions",
                json: ["model": "tight", "prompt": "Once", "max_tokens": 4000, "ignore_eos": true],
                timeout: .milliseconds(300))
        }
        #expect(
            try await server.eventually {
                ((try await server.deployment("tight"))["status"] as? [String: Any])?["in_flight"] as? Int == 0
            })
        #expect(try await server.metric("sllm_requests_total{model=\"tight\",status=\"499\"}") >= 1)
        try await server.stop()
    }

    @Test func aStartBeyondTheMemoryBudgetFailsClearly() async throws {
        let server = try await TestServer.start { $0.memoryBudgetBytes = 1 << 20 }
        let reply = try await server.request(.POST, "/v1/chat/completions", json: chat)
        #expect(reply.status == 503)
        #expect(reply.errorMessage?.contains("memory budget") == true)
        #expect(try await server.request(.GET, "/health").status == 200)
        try await server.stop()
    }

    @Test func memoryPressureStopsTheLeastRecentlyUsedIdleInstanceOfAnotherDeployment() async throws {
        // Room for about one instance (weights ~92 MiB + KV for one 512-token sequence).
        let server = try await TestServer.start {
            $0.defaultModel = ""
            $0.memoryBudgetBytes = 150 << 20
        }
        for name in ["a", "b"] {
            #expect(
                try await server.request(
                    .POST, "/admin/deployments",
                    json: [
                        "model": "smollm2-135m", "name": name, "target_concurrency": 1, "context_length": 512,
                        "keep_alive": -1,
                    ]
                ).status == 201)
        }
        #expect(try await server.request(.POST, "/v1/chat/completions", json: Self.chat(model: "a")).status == 200)
        #expect(try await server.instances("a").count == 1)
        #expect(try await server.request(.POST, "/v1/chat/completions", json: Self.chat(model: "b")).status == 200)
        #expect(try await server.instances("a").isEmpty)
        #expect(try await server.instances("b").count == 1)
        try await server.stop()
    }

    @Test func preloadStartsAnInstanceBeforeAnyRequest() async throws {
        let server = try await TestServer.start { $0.preload = ["smollm2-135m"] }
        #expect(
            try await server.eventually {
                try await server.instances("smollm2-135m").first?["state"] as? String == "ready"
            })
        // Idle, it stays for the deployment's keep-alive, and says until when.
        #expect(try await server.instances("smollm2-135m").first?["expires_at"] as? String != nil)
        try await server.stop()
    }
}
