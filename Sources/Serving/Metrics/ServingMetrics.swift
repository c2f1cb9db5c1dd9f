import CoreMetrics
import Foundation
import Metrics
import Prometheus
import Store
import Synchronization

/// The server's metrics, recorded through swift-metrics into a Prometheus registry of its own
/// (so several servers in one process, as in tests, do not share counts). `GET /metrics` renders it.
final class ServingMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory
    private let counters = Mutex<[String: CoreMetrics.Counter]>([:])
    private let timers = Mutex<[String: CoreMetrics.Timer]>([:])
    private let gauges = Mutex<[String: CoreMetrics.Gauge]>([:])
    /// Recent requests, cold starts and migrations, for the console.
    let activity = ConsoleActivity()

    init() {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(20),
            .milliseconds(50), .milliseconds(100), .milliseconds(200), .milliseconds(500), .seconds(1), .seconds(2),
            .seconds(5), .seconds(10), .seconds(30), .seconds(60),
        ]
        self.factory = factory
    }

    /// The Prometheus text exposition of every metric.
    func render() -> String {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return String(decoding: buffer, as: UTF8.self)
    }

    // MARK: - Recording

    /// A request that ended: its status, and for one that produced tokens its time to the first
    /// and its mean gap between the later ones.
    func request(deployment: String, status: Int, firstToken: Double? = nil, interToken: Double? = nil) {
        counter("sllm_requests_total", ["model": deployment, "status": String(status)]).increment()
        activity.request(status: status, firstToken: firstToken, interToken: interToken)
    }

    func rejected(deployment: String) {
        counter("sllm_requests_rejected_total", ["model": deployment, "reason": "queue_full"]).increment()
    }

    func tokens(deployment: String, prompt: Int, completion: Int) {
        counter("sllm_prompt_tokens_total", ["model": deployment]).increment(by: prompt)
        counter("sllm_generation_tokens_total", ["model": deployment]).increment(by: completion)
    }

    /// One model's DRAM copy re-hashed (in the background or on request).
    func dramVerified(_ result: DRAMVerification) {
        counter("sllm_dram_verified_bytes_total", [:]).increment(by: result.bytes)
        if result.corruptTensor != nil { counter("sllm_dram_corrupt_total", ["model": result.model]).increment() }
    }

    func timeToFirstToken(deployment: String, seconds: Double) {
        timer("sllm_time_to_first_token_seconds", ["model": deployment]).record(seconds: seconds)
    }

    /// A cold start's phases: waiting, loading the checkpoint, starting the engine, the prompt.
    func coldStart(deployment: String, queue: Double, load: Double, engineInit: Double, prefill: Double) {
        for (phase, value) in [
            ("queue", queue), ("load", load), ("init", engineInit), ("prefill", prefill),
            ("total", queue + load + engineInit + prefill),
        ] {
            timer("sllm_cold_start_seconds", ["model": deployment, "phase": phase]).record(seconds: value)
        }
    }

    func instanceStarted(deployment: String, info: InstanceInfo) {
        timer("sllm_load_seconds", ["tier": info.tier.rawValue]).record(seconds: info.loadSeconds)
        counter("sllm_load_bytes_total", ["tier": info.tier.rawValue]).increment(by: info.weightBytes)
        counter(info.tier == .dram ? "sllm_dram_cache_hits_total" : "sllm_dram_cache_misses_total", [:]).increment()
        // A fetched checkpoint's bytes by where they came from: other nodes, or the remote stores
        // (named by URL in the instance's report).
        for (source, bytes) in info.fetchedBytes ?? [:] {
            counter("sllm_fetched_bytes_total", ["from": source.contains("://") ? "remote" : "peer"]).increment(
                by: bytes)
        }
    }

    /// A live migration ended: counted by outcome, with the longest pause its streams saw.
    func migrated(deployment: String, succeeded: Bool, pauseSeconds: Double) {
        counter("sllm_migrations_total", ["model": deployment, "outcome": succeeded ? "moved" : "failed"]).increment()
        if succeeded { timer("sllm_migration_pause_seconds", ["model": deployment]).record(seconds: pauseSeconds) }
    }

    /// A deployment's gauges, made once (they are set on every request).
    struct DeploymentGauges: Sendable {
        let starting: CoreMetrics.Gauge
        let ready: CoreMetrics.Gauge
        let stopping: CoreMetrics.Gauge
        let queued: CoreMetrics.Gauge
        let inFlight: CoreMetrics.Gauge

        func record(starting: Int, ready: Int, stopping: Int, queued: Int, inFlight: Int) {
            self.starting.record(starting)
            self.ready.record(ready)
            self.stopping.record(stopping)
            self.queued.record(queued)
            self.inFlight.record(inFlight)
        }
    }

    func gauges(deployment: String) -> DeploymentGauges {
        DeploymentGauges(
            starting: gauge("sllm_instances", ["model": deployment, "state": "starting"]),
            ready: gauge("sllm_instances", ["model": deployment, "state": "ready"]),
            stopping: gauge("sllm_instances", ["model": deployment, "state": "stopping"]),
            queued: gauge("sllm_queue_depth", ["model": deployment]),
            inFlight: gauge("sllm_requests_in_flight", ["model": deployment]))
    }

    // MARK: - Handles, made once per label set

    private static func key(_ label: String, _ dimensions: [String: String]) -> String {
        label + dimensions.sorted { $0.key < $1.key }.map { "|\($0.key)=\($0.value)" }.joined()
    }

    private func counter(_ label: String, _ dimensions: [String: String]) -> CoreMetrics.Counter {
        handle(counters, label, dimensions) { CoreMetrics.Counter(label: $0, dimensions: $1, factory: $2) }
    }

    private func timer(_ label: String, _ dimensions: [String: String]) -> CoreMetrics.Timer {
        handle(timers, label, dimensions) { CoreMetrics.Timer(label: $0, dimensions: $1, factory: $2) }
    }

    private func gauge(_ label: String, _ dimensions: [String: String]) -> CoreMetrics.Gauge {
        handle(gauges, label, dimensions) { CoreMetrics.Gauge(label: $0, dimensions: $1, factory: $2) }
    }

    private func handle<Handle>(
        _ cache: borrowing Mutex<[String: Handle]>, _ label: String, _ dimensions: [String: String],
        make: (String, [(String, String)], PrometheusMetricsFactory) -> Handle
    ) -> Handle {
        let key = Self.key(label, dimensions)
        return cache.withLock { cache in
            if let existing = cache[key] { return existing }
            let made = make(label, dimensions.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, factory)
            cache[key] = made
            return made
        }
    }
}

extension CoreMetrics.Timer {
    func record(seconds: Double) { recordNanoseconds(Int64(seconds * 1e9)) }
}
