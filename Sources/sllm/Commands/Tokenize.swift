import ArgumentParser
import Checkpoint
import Foundation
import Store
import Tokenizers

struct Tokenize: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the token ids (and pieces) a model's tokenizer gives for a text.",
        discussion: """
            Example:
              sllm tokenize smollm2-135m "Hello world"
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Model name or checkpoint directory.")
    var model: String

    @Argument(help: "The text to tokenize.")
    var text: String

    @Flag(help: "Treat special-token text such as <|im_start|> as plain text.")
    var noParseSpecial = false

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        _ = global.bootstrap()
        let reader = try openCheckpoint(model, store: global.store)
        let tokenizer = try Tokenizer(checkpoint: reader.index, map: reader.mappedFile, read: reader.fileContents)
        let ids = tokenizer.encode(text, parseSpecial: !noParseSpecial)
        if json {
            print(try ModelSummary.json(["ids": ids]))
            return
        }
        print(ids.map(String.init).joined(separator: " "))
        for id in ids {
            print("\(id)\t\(tokenizer.decode([id], renderSpecial: true).debugDescription)")
        }
    }
}
