import ArgumentParser
import Store

struct Remove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Remove models from the local store.",
        discussion: "Example: sllm rm smollm2-135m")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Model names.")
    var models: [String]

    func validate() throws {
        if models.isEmpty { throw ValidationError("name at least one model") }
        for model in models { _ = try ModelName(model) }
    }

    func run() async throws {
        _ = global.bootstrap()
        for model in models {
            try global.store.remove(try ModelName(model))
            if !global.quiet { print("removed \(model)") }
        }
    }
}
