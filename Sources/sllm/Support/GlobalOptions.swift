import ArgumentParser
import Foundation
import Logging
import Store

/// Options every subcommand takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: .customLong("data-dir"), help: "Data directory (default: $SLLM_HOME, else ~/.sllm).")
    var dataDirectory: String?

    @Flag(name: .shortAndLong, help: "Log debug detail to stderr.")
    var verbose = false

    @Flag(name: .shortAndLong, help: "Print only results and errors: no progress, no logs below error.")
    var quiet = false

    func validate() throws {
        if verbose && quiet { throw ValidationError("--verbose and --quiet exclude each other") }
    }

    /// The resolved data directory: flag, then `SLLM_HOME`, then `~/.sllm`.
    var root: String { dataDirectory.map(absolutePath) ?? Self.defaultRoot }

    /// The data directory without a flag: `SLLM_HOME`, then `~/.sllm`.
    static var defaultRoot: String {
        if let home = ProcessInfo.processInfo.environment["SLLM_HOME"], !home.isEmpty { return absolutePath(home) }
        return FileManager.default.homeDirectoryForCurrentUser.path + "/.sllm"
    }

    var store: ModelStore { ModelStore(root: root) }

    /// Sets up logging once for the process and returns the CLI's logger.
    func bootstrap() -> Logger {
        let level: Logger.Level = verbose ? .debug : quiet ? .error : .warning
        LoggingBootstrap.once(level: level)
        return Logger(label: "sllm")
    }

    /// A progress display for long work, silent with `--quiet`.
    func progressBar() -> ProgressBar { ProgressBar(enabled: !quiet) }
}

enum LoggingBootstrap {
    private static let done = NSLock()
    nonisolated(unsafe) private static var bootstrapped = false

    static func once(level: Logger.Level) {
        done.lock()
        defer { done.unlock() }
        guard !bootstrapped else { return }
        bootstrapped = true
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

func absolutePath(_ path: String) -> String {
    if path.hasPrefix("/") { return path }
    if path.hasPrefix("~/") { return FileManager.default.homeDirectoryForCurrentUser.path + path.dropFirst(1) }
    return FileManager.default.currentDirectoryPath + "/" + path
}
