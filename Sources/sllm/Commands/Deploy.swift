import ArgumentParser
import Checkpoint
import Foundation
import NIOCore
import NIOHTTP1
import Store

/// Scaling flags shared by `deploy` and `update`.
struct ScalingOptions: ParsableArguments {
    @Option(name: .customLong("min"), help: "Instances kept even when idle (0: scale to zero).") var minInstances: Int?
    @Option(name: .customLong("max"), help: "Most instances.") var maxInstances: Int?
    @Option(name: .customLong("target-concurrency"), help: "Requests batched per instance before another starts.")
    var targetConcurrency: Int?
    @Option(
        name: .customLong("keep-alive"), parsing: .unconditional,
        help: "Idle time before scale-down: 5m, 30s, 0 (at once), -1 (never).") var keepAlive: String?
    @Option(name: .customLong("queue-limit"), help: "Requests queued beyond the instances' slots; more get 429.")
    var queueLimit: Int?
    @Option(name: [.customShort("c"), .customLong("context")], help: "Context length per request.") var context: Int?
    @Option(
        name: .customLong("dram-replicas"),
        help: "Nodes that keep the checkpoint in their DRAM cache even while no instance runs (0: none on purpose).")
    var dramReplicas: Int?

    var body: [String: Any] {
        var body: [String: Any] = [:]
        body["min_instances"] = minInstances
        body["max_instances"] = maxInstances
        body["target_concurrency"] = targetConcurrency
        body["keep_alive"] = keepAlive
        body["queue_limit"] = queueLimit
        body["context_length"] = context
        body["dram_replicas"] = dramReplicas
        return body
    }
}

struct Deploy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Deploy a model on the running server (pulled first if it is not local).",
        discussion: """
            Examples:
              sllm deploy smollm2-135m --max 2 --target-concurrency 8 --keep-alive 10m
              sllm deploy ./model.gguf --name mine --min 1
            """)

    @OptionGroup var server: ServerOptions
    @OptionGroup var scaling: ScalingOptions
    @Flag(name: .shortAndLong, help: "Print only errors.") var quiet = false
    @Option(help: "Deployment name (the API's `model`; default: the model's name).") var name: String?
    @Flag(help: "Return at once instead of showing the pull's progress.") var noWait = false
    @Argument(help: "A model in the store, an alias, or anything `sllm pull` takes.") var model: String

    func run() async throws {
        var body = scaling.body
        // A local path is sent absolute: the server resolves paths against its own directory.
        if case .local(let path)? = try? ModelSource.parse(model).source, FileManager.default.fileExists(atPath: path) {
            body["model"] = absolutePath(path)
        } else {
            body["model"] = model
        }
        body["name"] = name
        let created = try await server.call(.POST, "/admin/deployments", body: body) as? [String: Any] ?? [:]
        let deployment =
            ((created["status"] as? [String: Any])?["spec"] as? [String: Any])?["name"] as? String ?? name ?? model
        guard !noWait else {
            if !quiet { print("deployed \(deployment) (\(created["state"] as? String ?? "?"))") }
            return
        }
        let bar = ProgressBar(enabled: !quiet)
        var poll = 40
        while true {
            let report = try await server.call(.GET, "/admin/deployments/\(deployment)") as? [String: Any] ?? [:]
            switch report["state"] as? String {
            case "pulling":
                // The server's own phase and bytes (download, then convert), as `sllm pull` shows them.
                let phase = report["pull_phase"] as? String ?? "pull"
                let done = (report["pull_bytes"] as? NSNumber)?.int64Value ?? 0
                let total = (report["pull_total_bytes"] as? NSNumber)?.int64Value ?? 0
                if phase != "start" {
                    bar.handler?(.init(phase: "\(deployment): \(phase)", completedBytes: done, totalBytes: total))
                }
                // Short polls at first, so a quick pull returns as soon as it ends (`sllm bench
                // deploy` compares with `sllm pull` of the same file), then every 250 ms, so a
                // long one does not fill the server's access log.
                // The end of a download is followed by a conversion that may take only a tenth of
                // a second: poll closely over the download's last tenth and after it, so the
                // conversion's phase is shown (a 250 ms poll once skipped both).
                let nearlyDownloaded = phase == "download" && total > 0 && done * 10 >= total * 9
                try await Task.sleep(for: .milliseconds(nearlyDownloaded || phase == "convert" ? 20 : poll))
                poll = min(250, poll * 5 / 4)
            case "failed":
                bar.finish()
                throw CommandFailure("deployment \(deployment): \(report["error"] as? String ?? "pull failed")")
            default:
                bar.finish()
                if !quiet { print("deployed \(deployment)") }
                return
            }
        }
    }
}

struct Update: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change a deployment's scaling (applies at once; context applies to new instances).",
        discussion: "Example: sllm update smollm2-135m --max 4 --keep-alive -1")

    @OptionGroup var server: ServerOptions
    @OptionGroup var scaling: ScalingOptions
    @Argument(help: "Deployment name.") var name: String

    func run() async throws {
        guard !scaling.body.isEmpty else {
            throw ValidationError(
                "nothing to change: give --min, --max, --target-concurrency, --keep-alive, --queue-limit or --context")
        }
        _ = try await server.call(.PATCH, "/admin/deployments/\(name)", body: scaling.body)
        print("updated \(name)")
    }
}

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delete a deployment: its instances stop and free their memory (the model stays in the store).")

    @OptionGroup var server: ServerOptions
    @Argument(help: "Deployment name.") var name: String

    func run() async throws {
        _ = try await server.call(.DELETE, "/admin/deployments/\(name)")
        print("deleted \(name)")
    }
}

struct Stop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Unload a deployment's idle instances now (it stays deployed and starts again on demand), as `ollama stop`; with --instance, stop one instance (once its requests end, when busy)."
    )

    @OptionGroup var server: ServerOptions
    @Argument(help: "Deployment name (with --instance: an instance id, as `sllm ps` lists them).") var name: String
    @Flag(
        help: "NAME is one instance: it stops now when idle, else takes no new request and stops once its requests end."
    )
    var instance = false

    func run() async throws {
        if instance {
            let reply =
                try await server.call(.POST, "/admin/instances/\(pathSegment(name))/stop") as? [String: Any] ?? [:]
            let serving = reply["in_flight"] as? Int ?? 0
            print(
                serving == 0
                    ? "stopped instance \(name)"
                    : "instance \(name) takes no new request and stops once its \(serving) request(s) end")
            return
        }
        let reply = try await server.call(.POST, "/admin/deployments/\(name)/stop") as? [String: Any] ?? [:]
        let stopped = reply["stopped"] as? String ?? "0", busy = reply["busy"] as? String ?? "0"
        print(
            "stopped \(stopped) instance(s) of \(name)"
                + (busy == "0" ? "" : "; \(busy) busy instance(s) keep serving and stop after their keep-alive"))
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Move a running instance to another node without interrupting its requests (live migration).",
        discussion: """
            A new instance of the same deployment starts on NODE (or, without --to, where the \
            scheduler places it among the other nodes); it computes the running requests' tokens \
            while the old instance goes on generating, then each request moves over between two \
            tokens and its stream continues there. The old instance stops once its requests left. \
            `sllm ps` shows instance ids and nodes.
            """)

    @OptionGroup var server: ServerOptions
    @Argument(help: "The instance to move (an id from `sllm ps`).") var instance: String
    @Option(name: .customLong("to"), help: "The node to move it to (a name from `sllm status`).") var node: String?
    @Flag(help: "Print the report as JSON.") var json = false

    func run() async throws {
        let path = "/admin/instances/\(pathSegment(instance))/migrate"
        let reply =
            try await server.call(.POST, path, body: node.map { ["node": $0] } ?? [:], timeout: .minutes(10))
            as? [String: Any] ?? [:]
        if json {
            let data = try JSONSerialization.data(withJSONObject: reply, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        func number(_ key: String) -> Double { (reply[key] as? NSNumber)?.doubleValue ?? 0 }
        let succeeded = reply["succeeded"] as? Bool ?? false
        print(
            "\(succeeded ? "migrated" : "migration failed:") \(reply["instance"] as? String ?? instance) on \(reply["from"] as? String ?? "?") -> \(reply["target"] as? String ?? "?") on \(reply["to"] as? String ?? "?")"
        )
        print(
            String(
                format: "  target loaded from %@ in %.2f s; %d warm round(s), %d tokens computed in %.2f s",
                reply["tier"] as? String ?? "?", number("load_seconds"), Int(number("rounds")),
                Int(number("warmed_tokens")), number("warm_seconds")))
        print(
            String(
                format:
                    "  %d request(s) moved (longest pause %.1f ms), %d came back, %d ended meanwhile; %.2f s in all",
                Int(number("moved")), number("longest_pause_seconds") * 1000, Int(number("came_back")),
                Int(number("ended_meanwhile")), number("seconds")))
        if !succeeded { throw ExitCode(1) }
    }
}
