import ArgumentParser
import Checkpoint
import Foundation
import Store

struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Re-hash every byte of a model and report the first bad tensor.",
        discussion: "Exits 1 and names the tensor (or file) whose checksum fails. MODEL is a name or a checkpoint directory.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Model name or checkpoint directory.")
    var model: String

    func run() async throws {
        _ = global.bootstrap()
        let bar = global.progressBar()
        let start = Date()
        let reader = try openCheckpoint(model, store: global.store)
        let bytes = try reader.verify(progress: bar.handler)
        bar.finish()
        let seconds = Date().timeIntervalSince(start)
        print(String(
            format: "ok: %@ verified, %d tensors, %d files, %@ in %.2f s (%@/s)", model, reader.index.tensors.count,
            reader.index.files.count, formatBytes(bytes), seconds, formatBytes(Int64(Double(bytes) / max(seconds, 1e-9)))))
    }
}
