import ArgumentParser
import Checkpoint
import Foundation
import Store

/// Options of the tiered loader, shared by `store` and `bench load`.
struct LoaderOptions: ParsableArguments {
    @Option(
        name: .customLong("dram-cache"),
        help: "DRAM cache budget, e.g. 8GiB (default: 8GiB or 40% of memory, whichever is less; env SLLM_DRAM_CACHE).")
    var dramCache: String?

    @Option(
        name: .customLong("cache-dir"),
        help: "Where the DRAM cache lives (default: /dev/shm/sllm-<hash of the data dir>).")
    var cacheDirectory: String?

    @Option(help: "Reader threads (default: half the cores, at least 1).")
    var threads: Int?

    @Option(help: "Slab size of the DRAM cache = largest read of the pipeline, e.g. 32MiB.")
    var chunkSize: String = "32MiB"

    @Flag(
        inversion: .prefixedNo,
        help:
            "Read the SSD tier with O_DIRECT instead of buffered reads with kernel readahead (default: buffered, measured faster here)."
    )
    var directIO = false

    @Option(name: .customLong("remote"), help: "Base URL of a remote store (BASE/NAME/index); repeatable.")
    var remotes: [String] = []

    func validate() throws {
        if let dramCache, parseByteCount(dramCache) == nil {
            throw ValidationError("--dram-cache \(dramCache) is not a byte count")
        }
        guard let chunk = parseByteCount(chunkSize), chunk >= 4096, chunk % 4096 == 0 else {
            throw ValidationError("--chunk-size \(chunkSize) is not a multiple of 4 KiB")
        }
        if let threads, threads < 1 || threads > 256 { throw ValidationError("--threads must be 1...256") }
        for remote in remotes where URL(string: remote)?.host == nil {
            throw ValidationError("--remote \(remote) is not a URL")
        }
    }

    var budgetBytes: Int {
        if let dramCache, let bytes = parseByteCount(dramCache) { return bytes }
        if let text = ProcessInfo.processInfo.environment["SLLM_DRAM_CACHE"], let bytes = parseByteCount(text) {
            return bytes
        }
        return min(8 << 30, Int(Double(ProcessInfo.processInfo.physicalMemory) * 0.4))
    }

    /// The DRAM cache directory for `store`: the flag, else the data directory's default.
    func cacheDirectory(for store: ModelStore) -> String {
        cacheDirectory.map(absolutePath) ?? DRAMCache.defaultDirectory(forDataDirectory: store.root)
    }

    func makeLoader(store: ModelStore) throws -> ModelLoader {
        let cache = try DRAMCache(
            directory: cacheDirectory(for: store),
            budgetBytes: budgetBytes, slabBytes: parseByteCount(chunkSize)!, owner: store.root)
        let configuration = ModelLoader.Configuration(
            threads: threads, directIO: directIO,
            remotes: remotes.compactMap { URL(string: $0) })
        return ModelLoader(store: store, cache: cache, configuration: configuration)
    }
}
