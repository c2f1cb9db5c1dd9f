import ArgumentParser
import Foundation
import Scheduling
import Simulation
import Store

/// `sllm simulate`: the scheduler's own code (placement, autoscaler state machine, memory
/// admission, migration planner) run against simulated nodes on a simulated clock.
struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Simulate a cluster serving a workload with the scheduler's own code, per placement policy.",
        discussion: """
            A discrete-event simulation: every model is a scale-to-zero deployment driven by the \
            controller's autoscaler state machine; instance starts are placed by the policy's \
            placement code on every node's facts, room is made by the memory admission code, and \
            under locality+migration the migration planner may first move a busy instance. \
            Simulated nodes load checkpoints at the calibrated tier speeds (remote fetches share \
            the store's link), keep them in DRAM and SSD caches, and run requests at calibrated \
            prefill and decode speeds. The defaults are `sllm bench cluster`'s configuration; \
            --validate replays a bench cluster JSON report's configuration and trace and compares \
            the cold-start TTFT percentiles. See docs/experiments.md.
            """)

    @Option(help: "Nodes.") var nodes = 4
    @Option(help: "Models, each a deployment.") var models = 24
    @Option(
        name: .customLong("model-size"),
        help: "Checkpoint size, or a mix SIZE:WEIGHT,… (each model draws its size; e.g. 92MiB:0.5,1GiB:0.4,4GiB:0.1).")
    var modelSize = "92MiB"
    @Option(name: .customLong("instance-extra"), help: "Memory an instance holds beyond its checkpoint.")
    var instanceExtra = "48MiB"
    @Option(help: "Each node's memory for instances (default: --instances-per-node of the first size).")
    var memory: String?
    @Option(name: .customLong("instances-per-node"), help: "Instances of the first size a node's memory holds.")
    var instancesPerNode = 2
    @Option(name: .customLong("dram-cache"), help: "Each node's DRAM checkpoint cache (default: --dram-models).")
    var dramCache: String?
    @Option(name: .customLong("dram-models"), help: "Checkpoints of the first size each DRAM cache holds.")
    var dramModels = 3
    @Option(help: "Each node's SSD for checkpoints.") var ssd = "1TiB"
    @Option(help: "Each node's link (tc units: 8gbit; or bytes per second: 1GB/s).") var link = "8gbit"
    @Option(name: .customLong("store-rate"), help: "The remote store's link, shared by its fetches.")
    var storeRate = "1600mbit"
    @Option(name: .customLong("ssd-copies"), help: "Nodes whose SSD holds each checkpoint at the start.")
    var ssdCopies = 1
    @Option(name: .customLong("keep-alive"), help: "Idle time before an instance stops.") var keepAlive = "2s"
    @Option(name: .customLong("max-instances"), help: "Most instances per deployment.") var maxInstances = 1
    @Option(help: "Requests one instance serves at once.") var concurrency = 4
    @Option(name: .customLong("queue-limit"), help: "Requests waiting per deployment beyond the slots.")
    var queueLimit = 512

    @Option(help: "Requests of the synthetic workload (ignored with --duration or --trace).") var requests = 240
    @Option(help: "Simulated time of the synthetic workload (e.g. 1h): requests = rate × duration.")
    var duration: String?
    @Option(help: "Mean requests per second.") var rate = 2.0
    @Option(help: "Coefficient of variation of the inter-arrival times (Gamma).") var cv = 4.0
    @Option(help: "Zipf exponent of the models' popularity.") var zipf = 1.0
    @Option(help: "Prompt tokens: N, or MEDIAN:SIGMA (log-normal).") var prompt = "1"
    @Option(help: "Generated tokens: N, or MEDIAN:SIGMA (log-normal).") var output = "1"
    @Option(help: "Seed of the workload and of random placement.") var seed: UInt64 = 1
    @Option(help: "Replay this trace file instead of a synthetic workload.") var trace: String?
    @Option(help: "The trace's format: azure-llm, azure-functions, burstgpt.") var format = "azure-llm"
    @Option(help: "Replay the trace this many times faster.") var speedup = 1.0

    @Option(help: "Comma-separated: locality+migration, locality, random, round-robin, least-loaded, kserve.")
    var policies = "locality+migration,locality,random,kserve"
    @Option(help: "Repeat for each value of one setting: rate=1,2,4, models=…, nodes=… or cv=….")
    var sweep: String?
    @Option(help: "Node speeds as JSON (see docs/experiments.md); default: this project's measurements.")
    var calibration: String?
    @Option(help: "Replay the configuration and trace of this `sllm bench cluster --json` report and compare.")
    var validate: String?
    @Option(help: "Write summary.csv, cdf.csv and SVG plots into this directory.") var out: String?
    @Option(help: "Also write the summary as JSON to this file.") var json: String?

    func run() throws {
        var base = try settings()
        if let validate { return try compare(with: validate, base: &base) }
        let points = try sweepPoints()
        let policyList = try Self.policies(policies)
        var rows: [SummaryRow] = []
        var cdfs: [(point: String, policy: String, values: [Double])] = []
        for (name, value) in points {
            var point = base
            if let name { try point.set(name, to: value) }
            let (cluster, scaling, workload) = try point.build()
            let label = name.map { "\($0)=\(Self.number(value))" } ?? "base"
            print(point.describe(cluster: cluster, requests: workload, label: name == nil ? nil : label))
            print(SummaryRow.header)
            for policy in policyList {
                let result = try Simulator(
                    cluster: cluster, policy: policy, scaling: scaling, requests: workload, seed: point.seed
                ).run()
                let row = SummaryRow(point: label, sweep: name, value: value, result: result)
                print(row.line)
                if !row.failures.isEmpty {
                    let causes = row.failures.sorted { $0.key < $1.key }.map { "\($1) \($0)" }
                    print("    failed: " + causes.joined(separator: ", "))
                }
                rows.append(row)
                cdfs.append((label, policy.rawValue, result.coldStartup))
            }
            print("")
        }
        try write(rows: rows, cdfs: cdfs, sweep: points.first?.name)
    }
}
