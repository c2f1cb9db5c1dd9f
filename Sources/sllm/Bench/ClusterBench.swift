import ArgumentParser
import AsyncHTTPClient
import Checkpoint
import Foundation
import Lab
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import Scheduling
import Simulation
import Store

/// `sllm bench cluster`: many models on a few nodes under a bursty workload, per placement
/// policy, against a KServe-like baseline, on hosts made of network namespaces.
struct ClusterBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract:
            "A bursty many-model workload on a cluster of namespaced hosts, per placement policy and against a KServe-like baseline.",
        discussion: """
            Builds hosts from network namespaces (needs root and iproute2): a controller, a remote \
            store (`sllm store serve`, its link shaped to --store-rate) and --nodes workers (links \
            shaped to --link), every worker with a DRAM cache for --dram-models checkpoints and \
            memory for --instances-per-node instances. --deployments copies of the model, under \
            distinct names, are in the remote store and each on the SSD of --ssd-copies nodes \
            (round robin), and are deployed scale-to-zero (--keep-alive). One trace of \
            requests (Zipf popularity over the deployments, Gamma inter-arrival times with \
            coefficient of variation --cv) is replayed against each policy with fresh processes: \
            one-token completions, so the time to the answer is the time to first token. \
            `kserve` is the baseline: least-loaded placement, no peer fetch, and workers that keep \
            no checkpoint once its instance stops (as a pod's emptyDir: every cold start downloads \
            from the remote store).
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Model whose copies are deployed (pulled if missing).") var model = ModelSource.defaultModel.name
    @Option(help: "Worker nodes.") var nodes = 4
    @Option(help: "Deployments (copies of the model under distinct names).") var deployments = 24
    @Option(help: "Requests in the trace.") var requests = 240
    @Option(help: "Mean requests per second.") var rate = 4.0
    @Option(help: "Coefficient of variation of the inter-arrival times (Gamma).") var cv = 4.0
    @Option(help: "Zipf exponent of the deployments' popularity.") var zipf = 1.0
    @Option(name: .customLong("store-rate"), help: "The remote store's link, both ways (tc rate).")
    var storeRate = "1600mbit"
    @Option(help: "Each worker's link, both ways (tc rate).") var link = "8gbit"
    @Option(name: .customLong("dram-models"), help: "Checkpoints each node's DRAM cache holds.") var dramModels = 3
    @Option(name: .customLong("instances-per-node"), help: "Instances each node's memory budget holds.")
    var instancesPerNode = 2
    @Option(name: .customLong("keep-alive"), help: "Idle time before an instance stops.") var keepAlive = "2s"
    @Option(
        name: .customLong("ssd-copies"),
        help: "Nodes whose SSD holds each checkpoint at the start (round robin; 0: every store empty). Not for kserve.")
    var ssdCopies = 1
    @Option(help: "Comma-separated: locality, random, round-robin, least-loaded, kserve.")
    var policies = "locality,random,round-robin,least-loaded,kserve"
    @Option(help: "Rounds (each runs every policy, in a rotated order).") var rounds = 1
    @Option(help: "Seed of the trace.") var seed: UInt64 = 1
    @Option(help: "Write the figures as JSON here.") var json: String?
    @Flag(help: "Keep the scratch directory (every process's log) and print where it is.") var keep = false

    static let known = ["locality", "random", "round-robin", "least-loaded", "kserve"]

    var policyList: [String] { policies.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }

    func validate() throws {
        guard (2...12).contains(nodes), (1...200).contains(deployments), (1...100_000).contains(requests),
            rate > 0, rate <= 1000, cv > 0, cv <= 100, zipf >= 0, zipf <= 10, (1...64).contains(dramModels),
            (1...64).contains(instancesPerNode), (1...20).contains(rounds), (0...nodes).contains(ssdCopies)
        else {
            throw ValidationError(
                "--nodes 2...12, --deployments 1...200, --requests 1...100000, --rate (0, 1000], --cv (0, 100], --zipf 0...10, --dram-models and --instances-per-node 1...64, --rounds 1...20, --ssd-copies 0...nodes"
            )
        }
        if let bad = policyList.first(where: { !Self.known.contains($0) }) {
            throw ValidationError("--policies: `\(bad)` is not one of \(Self.known.joined(separator: ", "))")
        }
        if policyList.isEmpty { throw ValidationError("--policies names none") }
        guard parseDuration(keepAlive) != nil else {
            throw ValidationError("--keep-alive \(keepAlive) is not a duration")
        }
    }

    /// One request of the trace: when it is sent (seconds from the start) and to which deployment.
    struct Arrival {
        var at: Double
        var deployment: Int
    }

    /// What one request saw.
    struct Outcome {
        var seconds: Double
        var cold: Bool
        var failure: String?
        /// A cold request's phases as the server reports them (`timings`).
        var phases: ColdPhases?
    }

    /// Where a cold request's wait went, by the server's own account (seconds).
    struct ColdPhases: Encodable {
        var tier: String
        var queue: Double
        var load: Double
        var engineInit: Double
        /// When the request was sent, seconds after the replay began (so a load's span is
        /// `at + queue` to `at + queue + load`: `sllm simulate --validate` measures the store's
        /// capacity from the fetches that overlapped).
        var at: Double
    }

    /// One policy's run.
    struct Run: Encodable {
        var policy: String
        var round: Int
        var ttft: Sample
        var coldTTFT: Sample
        var warmTTFT: Sample
        var coldStarts: Int
        var failed: Int
        var failures: [String]
        /// Checkpoint bytes loaded per tier, and fetched bytes per kind of source (the controller's counters).
        var loadedBytes: [String: Int]
        var fetchedBytes: [String: Int]
        /// Every start's load as the worker measured it (the scheduler's decision log): what
        /// `sllm simulate --validate` calibrates the tiers' speeds from.
        var loads: [Load]
        var coldPhases: [ColdPhases]
    }

    struct Load: Encodable {
        var tier: String
        var bytes: Int
        var seconds: Double
    }

    func run() async throws {
        _ = global.bootstrap()
        if let reason = NetworkLab.unavailable { throw CommandFailure("bench cluster: \(reason)") }
        let name = try await ensurePulled(model, global: global)
        let index = try global.store.reader(for: name).index
        let weights = index.partitions.reduce(0) { $0 + $1.byteCount }
        let trace = makeTrace()
        let gaps = zip(trace.dropFirst(), trace).map { $0.at - $1.at }
        let mean = gaps.reduce(0, +) / Double(max(1, gaps.count))
        let deviation = (gaps.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(max(1, gaps.count))).squareRoot()
        var perDeployment = [Int](repeating: 0, count: deployments)
        for arrival in trace { perDeployment[arrival.deployment] += 1 }
        let names = (1...deployments).map { String(format: "bench-%02d", $0) }

        let scratch = FileManager.default.temporaryDirectory.path + "/sllm-bench-cluster-\(getpid())"
        defer {
            if keep { print("logs kept in \(scratch)") } else { try? FileManager.default.removeItem(atPath: scratch) }
        }
        // The remote store: every deployment's checkpoint is a copy (a link) of the model's.
        try FileManager.default.createDirectory(atPath: scratch + "/store/models", withIntermediateDirectories: true)
        for copy in names {
            try FileManager.default.createSymbolicLink(
                atPath: scratch + "/store/models/\(copy)", withDestinationPath: global.store.directory(for: name))
        }
        let token = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        try Data(token.utf8).write(to: URL(fileURLWithPath: scratch + "/token"))

        let workers = (1...nodes).map { "node-\($0)" }
        let lab = try NetworkLab(hosts: ["ctl", "store"] + workers)
        defer { lab.remove() }
        try lab.shape("store", rate: storeRate)
        for host in workers { try lab.shape(host, rate: link) }
        let storeURL = "http://\(lab.host("store").address):8345"
        let store = try ServerProcess.start(
            on: "store", of: lab,
            [
                "store", "serve", "--data-dir", scratch + "/store", "--host", lab.host("store").address, "--port",
                "8345",
            ],
            log: scratch + "/store.log")
        defer { store.stop() }
        let http = BenchHTTP()
        defer { try? http.shutdown() }

        print(
            "\(deployments) deployments (copies of \(name), \(formatBytes(Int64(weights))) each) on \(nodes) nodes, each checkpoint on \(ssdCopies) node SSD\(ssdCopies == 1 ? "" : "s") and in the remote store at \(storeRate); node links \(link); each node: DRAM cache for \(dramModels) checkpoints, memory for \(instancesPerNode) instances; keep-alive \(keepAlive)"
        )
        print(
            String(
                format:
                    "trace: %d one-token completions over %.0f s (mean %.2f req/s), inter-arrival CV %.1f (asked %.1f), Zipf %.1f: the top deployment gets %d, the last %d",
                trace.count, trace.last?.at ?? 0, Double(trace.count) / max(trace.last?.at ?? 1, 1e-9),
                deviation / mean,
                cv, zipf, perDeployment.max() ?? 0, perDeployment.min() ?? 0))

        var runs: [Run] = []
        let policies = policyList
        for round in 0..<rounds {
            for offset in 0..<policies.count {
                let policy = policies[(offset + round) % policies.count]
                let directory = scratch + "/round-\(round)-\(policy)"
                let run = try await replay(
                    trace, policy: policy, names: names, weights: weights, lab: lab, storeURL: storeURL,
                    directory: directory, scratch: scratch, http: http, round: round)
                runs.append(run)
                print(
                    "\(policy.padding(toLength: 13, withPad: " ", startingAt: 0)) round \(round + 1): cold TTFT p50 \(Self.seconds(run.coldTTFT.percentile(0.5))) p99 \(Self.seconds(run.coldTTFT.percentile(0.99))); all p99 \(Self.seconds(run.ttft.percentile(0.99))); \(run.coldStarts) cold starts, \(run.failed) failed"
                )
            }
        }
        report(runs, policies: policies)
        try writeReport(
            Report(
                config: Configuration(
                    nodes: nodes, deployments: deployments, requests: requests, rate: rate, cv: cv, zipf: zipf,
                    seed: seed, storeRate: storeRate, link: link, keepAlive: keepAlive, ssdCopies: ssdCopies,
                    weightBytes: weights, instanceBytes: Self.instanceBytes(weights: weights),
                    memoryBudgetBytes: Self.instanceBytes(weights: weights) * instancesPerNode,
                    dramCacheBytes: dramCacheBytes(weights: weights)), runs: runs), to: json)
    }

    /// The trace: Gamma inter-arrival times of coefficient of variation `cv`, scaled so the
    /// trace's mean rate is exactly `rate`, each request to a deployment drawn by Zipf
    /// popularity: the simulator's synthetic workload, so `sllm simulate --validate` replays it.
    func makeTrace() -> [Arrival] {
        SyntheticWorkload(requests: requests, rate: rate, cv: cv, zipf: zipf, models: deployments, seed: seed)
            .generate().map { Arrival(at: $0.at, deployment: $0.model) }
    }

    /// What `sllm simulate --validate` needs to replay the run.
    struct Configuration: Encodable {
        var nodes: Int
        var deployments: Int
        var requests: Int
        var rate: Double
        var cv: Double
        var zipf: Double
        var seed: UInt64
        var storeRate: String
        var link: String
        var keepAlive: String
        var ssdCopies: Int
        var weightBytes: Int
        var instanceBytes: Int
        var memoryBudgetBytes: Int
        var dramCacheBytes: Int

        enum CodingKeys: String, CodingKey {
            case nodes, deployments, requests, rate, cv, zipf, seed
            case storeRate = "store_rate"
            case link
            case keepAlive = "keep_alive"
            case ssdCopies = "ssd_copies"
            case weightBytes = "weight_bytes"
            case instanceBytes = "instance_bytes"
            case memoryBudgetBytes = "memory_budget_bytes"
            case dramCacheBytes = "dram_cache_bytes"
        }
    }

    struct Report: Encodable {
        var config: Configuration
        var runs: [Run]
    }

    /// An instance: the weights and a 256-token KV cache, with room to spare.
    static func instanceBytes(weights: Int) -> Int { weights + (48 << 20) }

    /// Each worker's DRAM cache.
    func dramCacheBytes(weights: Int) -> Int { weights * dramModels + (16 << 20) }

    /// Starts the cluster afresh for `policy`, deploys every copy, replays the trace and stops it.
    func replay(
        _ trace: [Arrival], policy: String, names: [String], weights: Int, lab: NetworkLab, storeURL: String,
        directory: String, scratch: String, http: BenchHTTP, round: Int
    ) async throws -> Run {
        let baseline = policy == "kserve"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let controllerURL = "http://\(lab.host("ctl").address):8343"
        let controller = try ServerProcess.start(
            on: "ctl", of: lab,
            [
                "controller", "--data-dir", directory + "/ctl", "--host", lab.host("ctl").address, "--port", "8343",
                "--auth", "off", "--default-model", "", "--token-file", scratch + "/token", "--placement",
                baseline ? "least-loaded" : policy,
            ] + (baseline ? ["--no-peer-fetch"] : []), log: directory + "/ctl.log")
        defer { controller.stop() }
        let instanceBytes = Self.instanceBytes(weights: weights)
        var processes: [ServerProcess] = []
        defer { processes.forEach { $0.stop() } }
        // The checkpoints already on the nodes' SSDs (none for the baseline: it keeps nothing).
        for (index, copy) in names.enumerated() where !baseline {
            for replica in 0..<ssdCopies {
                let models = directory + "/node-\((index + replica) % nodes + 1)/models"
                try FileManager.default.createDirectory(atPath: models, withIntermediateDirectories: true)
                try FileManager.default.createSymbolicLink(
                    atPath: models + "/" + copy,
                    withDestinationPath: try FileManager.default.destinationOfSymbolicLink(
                        atPath: scratch + "/store/models/" + copy))
            }
        }
        for host in (1...nodes).map({ "node-\($0)" }) {
            processes.append(
                try ServerProcess.start(
                    on: host, of: lab,
                    [
                        "worker", "--data-dir", directory + "/" + host, "--node", host, "--host",
                        lab.host(host).address,
                        "--port", "8344", "--controller", controllerURL, "--token-file", scratch + "/token",
                        "--threads", "1", "--memory-budget", String(instanceBytes * instancesPerNode), "--cache-dir",
                        directory + "/\(host)-cache", "--dram-cache", String(dramCacheBytes(weights: weights)),
                        "--remote", storeURL,
                    ] + (baseline ? ["--no-keep-fetched"] : []), log: directory + "/\(host).log"))
        }
        try await waitForNodes(http, controller: controllerURL, count: nodes, log: controller.log)
        for copy in names {
            _ = try await http.json(
                .POST, controllerURL + "/admin/deployments",
                [
                    "model": copy, "name": copy, "keep_alive": keepAlive, "max_instances": 1,
                    "context_length": 256,
                ])
        }
        let client = http.client
        let start = ContinuousClock.now
        let outcomes = await withTaskGroup(of: Outcome.self) { group in
            for arrival in trace {
                group.addTask {
                    try? await Task.sleep(until: start + .seconds(arrival.at), clock: .continuous)
                    return await Self.complete(
                        client, controllerURL + "/v1/completions", model: names[arrival.deployment],
                        sentAt: (ContinuousClock.now - start) / .seconds(1))
                }
            }
            return await group.reduce(into: [Outcome]()) { $0.append($1) }
        }
        let metrics = try await Self.metrics(client, controllerURL + "/metrics")
        let loads = try await Self.loads(client, controllerURL + "/admin/decisions?limit=1000")
        let served = outcomes.filter { $0.failure == nil }
        let failures = Dictionary(grouping: outcomes.compactMap(\.failure), by: { $0 }).map { "\($1.count)× \($0)" }
        return Run(
            policy: policy, round: round, ttft: Sample(values: served.map(\.seconds)),
            coldTTFT: Sample(values: served.filter(\.cold).map(\.seconds)),
            warmTTFT: Sample(values: served.filter { !$0.cold }.map(\.seconds)),
            coldStarts: served.filter(\.cold).count, failed: outcomes.count - served.count,
            failures: failures.sorted(),
            loadedBytes: metrics.filter { $0.key.hasPrefix("sllm_load_bytes_total") }.reduce(into: [:]) {
                $0[Self.label($1.key)] = Int($1.value)
            },
            fetchedBytes: metrics.filter { $0.key.hasPrefix("sllm_fetched_bytes_total") }.reduce(into: [:]) {
                $0[Self.label($1.key)] = Int($1.value)
            }, loads: loads, coldPhases: served.compactMap(\.phases))
    }

    /// The loads of the controller's decision log that ended with a start.
    static func loads(_ client: HTTPClient, _ url: String) async throws -> [Load] {
        let response = try await client.execute(HTTPClientRequest(url: url), timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 64 << 20)
        guard response.status == .ok,
            let records = try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [[String: Any]]
        else {
            throw CommandFailure("bench cluster: the controller's decision log could not be read (\(response.status))")
        }
        return records.compactMap { record in
            func value(_ keys: String...) -> Any? { keys.lazy.compactMap { record[$0] }.first }
            guard let tier = value("tier") as? String,
                let bytes = (value("checkpointBytes", "checkpoint_bytes") as? NSNumber)?.intValue,
                let seconds = (value("actualSeconds", "actual_seconds") as? NSNumber)?.doubleValue, seconds > 0
            else { return nil }
            return Load(tier: tier, bytes: bytes, seconds: seconds)
        }
    }

    /// One one-token completion: the time to its answer, and whether it waited for a cold start.
    static func complete(_ client: HTTPClient, _ url: String, model: String, sentAt: Double) async -> Outcome {
        let started = ContinuousClock.now
        do {
            var request = HTTPClientRequest(url: url)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(
                ByteBuffer(
                    bytes: try JSONSerialization.data(withJSONObject: [
                        "model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0,
                    ])))
            let response = try await client.execute(request, timeout: .seconds(300))
            let body = try await response.body.collect(upTo: 1 << 20)
            let seconds = (ContinuousClock.now - started) / .seconds(1)
            let json = try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any]
            guard response.status == .ok else {
                let message = ((json?["error"] as? [String: Any])?["message"] as? String) ?? ""
                return Outcome(
                    seconds: seconds, cold: false, failure: "HTTP \(response.status.code) \(message.prefix(80))")
            }
            let timings = json?["timings"] as? [String: Any]
            let cold = timings?["cold_start"] as? Bool ?? false
            func ms(_ key: String) -> Double { ((timings?[key] as? NSNumber)?.doubleValue ?? 0) / 1000 }
            return Outcome(
                seconds: seconds, cold: cold, failure: nil,
                phases: cold
                    ? ColdPhases(
                        tier: timings?["tier"] as? String ?? "", queue: ms("queue_ms"), load: ms("load_ms"),
                        engineInit: ms("init_ms"), at: sentAt) : nil)
        } catch {
            return Outcome(seconds: (ContinuousClock.now - started) / .seconds(1), cold: false, failure: "\(error)")
        }
    }

    /// The controller's Prometheus counters, by their line's name and labels.
    static func metrics(_ client: HTTPClient, _ url: String) async throws -> [String: Double] {
        let response = try await client.execute(HTTPClientRequest(url: url), timeout: .seconds(30))
        let text = String(buffer: try await response.body.collect(upTo: 16 << 20))
        var values: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            if parts.count >= 2, let value = Double(parts[1]) { values[String(parts[0])] = value }
        }
        return values
    }

    /// The value of a metric line's one label (`name{tier="ssd"}` → `ssd`).
    static func label(_ key: String) -> String {
        guard let open = key.firstIndex(of: "\""), let close = key.lastIndex(of: "\""), open < close else {
            return key
        }
        return String(key[key.index(after: open)..<close])
    }

    static func seconds(_ value: Double) -> String { value.isNaN ? "n/a" : String(format: "%.3f s", value) }

    /// The table: per policy, the median over rounds of each figure (min–max when several).
    func report(_ runs: [Run], policies: [String]) {
        print("")
        print(
            "POLICY         COLD TTFT p50          COLD TTFT p99          ALL TTFT p99           COLD STARTS  FAILED  LOADED FROM (dram/ssd/peer/remote)           FETCHED (peer/remote)"
        )
        var coldP99: [String: Double] = [:]
        for policy in policies {
            let mine = runs.filter { $0.policy == policy }
            guard let last = mine.last else { continue }
            let p50 = Sample(values: mine.map { $0.coldTTFT.percentile(0.5) })
            let p99 = Sample(values: mine.map { $0.coldTTFT.percentile(0.99) })
            let all = Sample(values: mine.map { $0.ttft.percentile(0.99) })
            coldP99[policy] = p99.median
            let loaded = ["dram", "ssd", "peer", "remote"].map { formatBytes(Int64(last.loadedBytes[$0] ?? 0)) }
            let fetched = ["peer", "remote"].map { formatBytes(Int64(last.fetchedBytes[$0] ?? 0)) }
            print(
                "\(policy.padding(toLength: 14, withPad: " ", startingAt: 0)) \(Self.cell(p50)) \(Self.cell(p99)) \(Self.cell(all)) \(String(mine.map(\.coldStarts).sorted()[mine.count / 2]).padding(toLength: 12, withPad: " ", startingAt: 0)) \(String(mine.map(\.failed).reduce(0, +)).padding(toLength: 7, withPad: " ", startingAt: 0)) \(loaded.joined(separator: " / ").padding(toLength: 44, withPad: " ", startingAt: 0)) \(fetched.joined(separator: " / "))"
            )
            for failure in Set(mine.flatMap(\.failures)).sorted().prefix(3) { print("    failed: \(failure)") }
        }
        if let locality = coldP99["locality"] {
            if let random = coldP99["random"] {
                let ratio = random / locality
                print(
                    String(
                        format: "locality's cold-start p99 is 1/%.1f of random's: %@ the ≤ 1/5 goal", ratio,
                        ratio >= 5 ? "meets" : "misses"))
            }
            if let baseline = coldP99["kserve"] {
                let ratio = baseline / locality
                print(
                    String(
                        format:
                            "locality's cold-start p99 is %.1f× better than the KServe-like baseline's: %@ the ≥ 10× goal",
                        ratio, ratio >= 10 ? "meets" : "misses"))
            }
        }
        print("(bytes: the last round's; times: the median over rounds, min–max in brackets when several)")
    }

    static func cell(_ sample: Sample) -> String {
        let text =
            sample.values.count > 1
            ? String(format: "%.3f (%.3f–%.3f)", sample.median, sample.minimum, sample.maximum)
            : String(format: "%.3f s", sample.median)
        return text.padding(toLength: 22, withPad: " ", startingAt: 0)
    }
}
