import ArgumentParser
import Checkpoint
import Foundation
import Store

struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Re-hash every byte of a model and report the first bad tensor.",
        discussion: """
            Exits 1 and names the tensor (or file) whose checksum fails. MODEL is a name or a checkpoint directory.
            --dram checks the DRAM-cache copies instead (of MODEL, or of every cached model), and drops a corrupt one
            (`sllm serve` also does this in the background: dram_scrub_rate, dram_scrub_interval).
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var loader: LoaderOptions

    @Flag(help: "Verify the DRAM-cache copy instead of the SSD one.")
    var dram = false

    @Argument(help: "Model name or checkpoint directory (with --dram: optional, default every cached model).")
    var model: String?

    func validate() throws {
        if !dram && model == nil { throw ValidationError("name a model (or pass --dram to check every cached one)") }
    }

    func run() async throws {
        _ = global.bootstrap()
        if dram { return try verifyDRAM() }
        guard let model else { return }
        let bar = global.progressBar()
        let start = Date()
        let reader = try openCheckpoint(model, store: global.store)
        let bytes = try reader.verify(progress: bar.handler)
        bar.finish()
        let seconds = Date().timeIntervalSince(start)
        print(
            String(
                format: "ok: %@ verified, %d tensors, %d files, %@ in %.2f s (%@/s)", model, reader.index.tensors.count,
                reader.index.files.count, formatBytes(bytes), seconds,
                formatBytes(Int64(Double(bytes) / max(seconds, 1e-9)))))
    }

    private func verifyDRAM() throws {
        let cache = try loader.makeLoader(store: global.store).cache
        let results: [DRAMVerification]
        if let model {
            let reader = try global.store.reader(for: try ModelName(model))
            results = cache.verify(name: model, reader: reader).map { [$0] } ?? []
            if results.isEmpty {
                print("\(model) is not in the DRAM cache: nothing to verify")
                return
            }
        } else {
            results = cache.verifyAll(store: global.store)
            if results.isEmpty { print("the DRAM cache holds no model: nothing to verify") }
        }
        var corrupt: [String] = []
        for result in results {
            if let tensor = result.corruptTensor {
                corrupt.append(
                    "\(result.model): tensor `\(tensor)` fails its checksum in DRAM; "
                        + (result.evicted
                            ? "the copy was dropped" : "the copy is in use and was marked so no load uses it again"))
            } else {
                print("ok: \(result.model) in DRAM, \(result.tensors) tensors, \(formatBytes(Int64(result.bytes)))")
            }
        }
        if !corrupt.isEmpty { throw CommandFailure(corrupt.joined(separator: "\nerror: ")) }
    }
}
