import ArgumentParser
import Checkpoint
import Foundation
import Serving
import Store
import Tokenizers

@main
struct SLLM: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sllm",
        abstract: "Serverless LLM inference with near-instant cold starts.",
        discussion: """
            Models live in the data directory (--data-dir, $SLLM_HOME, default ~/.sllm) as
            loading-optimized checkpoints. Start with `sllm pull smollm2-135m`.
            """,
        version: Server.version,
        subcommands: [Pull.self, Convert.self, List.self, Inspect.self, Verify.self, Remove.self, Tokenize.self, Generate.self, Chat.self, Serve.self, Deploy.self, Update.self, Delete.self, Status.self, PS.self, Keys.self, StoreCommand.self, Bench.self]
    )

    /// Runs the command line; our own errors print as one `error: …` line and exit 1.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as CheckpointError {
            fail(error.description)
        } catch let error as StoreError {
            fail(error.description)
        } catch let error as TokenizerError {
            fail(error.description)
        } catch let error as ServingError {
            fail(error.message)
        } catch let error as CommandFailure {
            fail(error.message)
        } catch {
            exit(withError: error)
        }
    }

    private static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("error: \(message)\n".utf8))
        Foundation.exit(1)
    }
}

/// A failure a command reports itself, printed as `error: message`.
struct CommandFailure: Error {
    var message: String
    init(_ message: String) { self.message = message }
}
