import ArgumentParser
import Checkpoint
import Cluster
import Foundation
import Serving
import Store

struct Remove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Remove models from the local store (and their DRAM-cache copies).",
        discussion: """
            Example: sllm rm smollm2-135m
            A model that a deployment serves is refused: `sllm delete` the deployment first, or
            pass --force (the deployment then fails its next cold start until the model is pulled
            again).
            """)

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Remove models that deployments use.")
    var force = false

    @Argument(help: "Model names.")
    var models: [String]

    func validate() throws {
        if models.isEmpty { throw ValidationError("name at least one model") }
        for model in models { _ = try ModelName(model) }
    }

    func run() async throws {
        _ = global.bootstrap()
        // The data directory's DRAM cache, if it has one (removing creates none).
        let cacheDirectory = DRAMCache.defaultDirectory(forDataDirectory: global.root)
        let cache =
            FileSystem.isDirectory(cacheDirectory)
            ? try DRAMCache(directory: cacheDirectory, budgetBytes: Int.max, owner: global.root) : nil
        for model in models {
            let name = try ModelName(model)
            guard global.store.contains(name) else {
                throw StoreError(.notFound, "model `\(model)` is not in the store (`sllm list` shows what is)")
            }
            let users = try await deployments(using: model)
            if !users.isEmpty && !force {
                throw CommandFailure(
                    "model `\(model)` is served by deployment \(users.map { "`\($0)`" }.joined(separator: ", ")); `sllm delete \(users[0])` first, or pass --force (its next cold start then fails until the model is pulled again)"
                )
            }
            try global.store.remove(name)
            // Its DRAM copy goes too (unless an instance holds it: it is dropped once released).
            let freed = (try? cache?.evict(name: model, releaseMemory: true)) ?? 0
            if !global.quiet {
                print(
                    "removed \(model)" + (freed > 0 ? " (and \(formatBytes(Int64(freed))) from DRAM)" : "")
                        + (users.isEmpty ? "" : "; deployment \(users.joined(separator: ", ")) has no model now"))
            }
        }
    }

    /// The deployments that serve `model`, from the state `sllm serve` keeps (its `state_url`,
    /// from the environment or the config file, else the data directory's SQLite file).
    private func deployments(using model: String) async throws -> [String] {
        let configuration = try Serve.layered(global: global, config: nil, flags: [:])
        guard let url = configuration.stateURL else {
            return try StoredDeployments.using(model: model, dataDirectory: global.root)
        }
        do {
            let state = try await PostgresStateStore.open(PostgresLocation(url: url))
            defer { state.close() }
            return try await state.deployments().filter { $0.model == model }.map(\.name)
        } catch let error as ServingError {
            throw CommandFailure("cannot check which deployments use `\(model)`: \(error.message)")
        }
    }
}
