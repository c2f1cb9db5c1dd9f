import ArgumentParser
import Checkpoint
import Store

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the models in the local store.",
        discussion: "Columns: name, architecture, parameters, dtype mix by bytes, size on disk, source.",
        aliases: ["ls"])

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print JSON.")
    var json = false

    struct Row: Encodable {
        var name: String
        var architecture: String?
        var parameters: Int?
        var dtypes: String?
        var diskBytes: Int64
        var source: String?
        var error: String?
    }

    func run() async throws {
        _ = global.bootstrap()
        let rows = try global.store.list().map { entry in
            switch entry.index {
            case .success(let index):
                Row(
                    name: entry.name, architecture: index.config.architecture, parameters: index.parameterCount,
                    dtypes: ModelSummary.dtypeMix(index), diskBytes: entry.diskByteCount, source: index.source)
            case .failure(let error):
                Row(name: entry.name, diskBytes: entry.diskByteCount, error: error.description)
            }
        }
        if json {
            print(try ModelSummary.json(rows))
            return
        }
        if rows.isEmpty {
            print("no models in \(global.store.modelsDirectory); `sllm pull smollm2-135m` fetches the default one")
            return
        }
        var table = [["NAME", "ARCH", "PARAMS", "DTYPES", "SIZE", "SOURCE"]]
        for row in rows {
            table.append([
                row.name, row.architecture ?? "?", row.parameters.map(ModelSummary.parameters) ?? "?",
                row.dtypes ?? "?", formatBytes(row.diskBytes), row.error.map { "damaged: " + $0 } ?? row.source ?? "",
            ])
        }
        print(ModelSummary.table(table))
    }
}
