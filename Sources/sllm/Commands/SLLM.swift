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
        subcommands: [
            Pull.self, Convert.self, List.self, Inspect.self, Verify.self, Remove.self, Tokenize.self, Generate.self,
            Chat.self, Serve.self, Deploy.self, Update.self, Delete.self, Stop.self, Migrate.self, Status.self, PS.self,
            Keys.self,
            StoreCommand.self, Bench.self, Simulate.self, Controller.self, WorkerCommand.self,
        ]
    )

    /// Runs the command line. Every error prints as one `error: …` line: our own errors exit 1,
    /// usage errors (unknown flags, bad values caught by the parser) exit 64.
    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if let first = arguments.first, let suggestion = suggestion(for: first) {
            FileHandle.standardError.write(
                Data(
                    "error: unknown command `\(first)`. Did you mean `\(suggestion)`? (`sllm --help` lists them)\n".utf8
                ))
            Foundation.exit(64)
        }
        do {
            var command = try parseAsRoot(arguments)
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
            let code = exitCode(for: error)
            var message = fullMessage(for: error)
            guard code != .success else {
                print(message)
                Foundation.exit(0)
            }
            if message.hasPrefix("Error: ") { message = "error: " + message.dropFirst(7) }
            FileHandle.standardError.write(Data((message.hasSuffix("\n") ? message : message + "\n").utf8))
            Foundation.exit(code.rawValue)
        }
    }

    /// The command names (and aliases) a mistyped first argument is compared with.
    static var commandNames: [String] {
        configuration.subcommands.flatMap { [$0._commandName] + $0.configuration.aliases }
    }

    /// The closest command to a first argument that is no command, no flag and no help request.
    static func suggestion(for word: String) -> String? {
        guard !word.hasPrefix("-"), word != "help", !commandNames.contains(word) else { return nil }
        let scored = commandNames.map { ($0, editDistance(word.lowercased(), $0)) }.min { $0.1 < $1.1 }
        guard let (name, distance) = scored, distance <= max(1, min(2, word.count / 3)) else { return nil }
        return name
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

/// Levenshtein distance (for "did you mean").
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var previous = Array(0...b.count)
    for i in 1...max(1, a.count) where !a.isEmpty {
        var current = [i] + Array(repeating: 0, count: b.count)
        for j in 1...max(1, b.count) where !b.isEmpty {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return a.isEmpty ? b.count : previous[b.count]
}
