import ArgumentParser
import Checkpoint
import Cluster
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import Store
import UnixSignals

struct StoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "The tiered checkpoint store: DRAM cache, local SSD, remotes.",
        discussion: """
            The DRAM cache lives in shared memory (/dev/shm), so it survives an sllm restart and is
            shared by every sllm process using the same data directory.

            Examples:
              sllm store status
              sllm store warm smollm2-135m
              sllm store load smollm2-135m --cold
              sllm store evict smollm2-135m
              sllm store serve --host 10.0.0.5
            """,
        subcommands: [Status.self, Warm.self, Evict.self, Load.self, Serve.self])

    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve this store's checkpoints over HTTP, read-only: a remote store for nodes' --remote.",
            discussion: """
                GET /NAME/FILE answers the files a checkpoint's index names (the index, its small files, its \
                partitions), whole or one byte range per request, verified as they are read; nothing else \
                (no listing, no paths, no writes). It asks for no token, as a public bucket: bind it to an \
                address only the cluster reaches.

                Example: sllm store serve --host 10.0.0.5 --port 8345
                         sllm worker --remote http://10.0.0.5:8345 --controller http://10.0.0.1:8343
                """)
        @OptionGroup var global: GlobalOptions
        @Option(help: "Address to bind.") var host = "127.0.0.1"
        @Option(help: "Port (0 picks a free one).") var port = 8345

        func run() async throws {
            _ = global.bootstrap()
            // Files are read from the store itself: the loader's DRAM cache stays empty.
            let loader: ModelLoader
            do {
                loader = ModelLoader(
                    store: global.store,
                    cache: try DRAMCache(
                        directory: DRAMCache.defaultDirectory(forDataDirectory: global.store.root), budgetBytes: 0,
                        owner: global.store.root))
            } catch {
                throw CommandFailure("store serve: \(error)")
            }
            let logger = Logger(label: "sllm.store")
            let (host, quiet, root) = (host, global.quiet, global.store.root)
            let app = Application(
                router: CheckpointRoutes.storeRouter(loader: loader, logger: logger),
                configuration: .init(address: .hostname(host, port: port), serverName: "sllm-store"),
                onServerRunning: { channel in
                    guard !quiet else { return }
                    FileHandle.standardError.write(
                        Data(
                            "sllm store serving on http://\(host):\(channel.localAddress?.port ?? 0) (checkpoints of \(root))\n"
                                .utf8))
                }, logger: logger)
            let group = ServiceGroup(
                configuration: .init(
                    services: [app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            do { try await group.run() } catch { throw CommandFailure("store serve: \(error)") }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the tiers, their budgets, what each holds and the DRAM hit rate.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var loader: LoaderOptions

        func run() async throws {
            _ = global.bootstrap()
            // Looking does not create: a cache that does not exist is shown as such.
            let directory = loader.cacheDirectory(for: global.store)
            guard FileSystem.isDirectory(directory) else {
                print("DRAM  \(directory)  (no cache yet: the first load creates it)")
                try printSSD(entries: [])
                return
            }
            let loader = try loader.makeLoader(store: global.store)
            let cache = loader.cache
            let entries = cache.listEntries()
            let (hits, misses) = cache.sharedHitsAndMisses
            let rate = hits + misses > 0 ? String(format: "%.0f%%", Double(hits) * 100 / Double(hits + misses)) : "n/a"
            let usage = cache.usage()
            print(
                "DRAM  \(cache.directory)  \(formatBytes(Int64(usage.totalBytes))) of \(formatBytes(Int64(cache.budgetBytes)))  hits \(hits), misses \(misses) (hit rate \(rate))"
            )
            print(
                "  in models \(formatBytes(Int64(usage.entryBytes))), pooled for reuse \(formatBytes(Int64(usage.pooledBytes))), orphaned \(formatBytes(Int64(usage.orphanBytes)))"
                    + (usage.orphanBytes > 0
                        ? " (left by a process that died mid-load; `sllm store evict --all` or the next `sllm serve` reclaims it)"
                        : ""))
            var rows = [["  MODEL", "BYTES", "STATE", "IN USE"]]
            for entry in entries {
                rows.append([
                    "  " + entry.name, formatBytes(Int64(entry.bytes)), entry.complete ? "cached" : "loading",
                    entry.pinned ? "yes" : "no",
                ])
            }
            if entries.isEmpty { print("  (empty)") } else { print(ModelSummary.table(rows)) }
            try printSSD(entries: entries)
        }

        private func printSSD(entries: [DRAMCache.Entry]) throws {
            let models = try global.store.list()
            let ssdBytes = models.reduce(Int64(0)) { $0 + $1.diskByteCount }
            print("SSD   \(global.store.modelsDirectory)  \(formatBytes(ssdBytes)) in \(models.count) model(s)")
            for model in models {
                let inDRAM = entries.contains { $0.name == model.name && $0.complete }
                print("  \(model.name)  \(formatBytes(model.diskByteCount))\(inDRAM ? "  (also in DRAM)" : "")")
            }
            let remotes = loader.remotes
            print("REMOTE \(remotes.isEmpty ? "(none configured; --remote URL)" : remotes.joined(separator: ", "))")
        }
    }

    struct Warm: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load a model into the DRAM cache ahead of a request.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var loader: LoaderOptions
        @Argument(help: "Model name.") var model: String

        func run() async throws {
            _ = global.bootstrap()
            let bar = global.progressBar()
            let loaded = try await loader.makeLoader(store: global.store).warm(
                try ModelName(model), progress: bar.handler)
            bar.finish()
            print(
                loaded.cached
                    ? "\(model) is in DRAM (\(formatBytes(Int64(loaded.byteCount))), from \(loaded.tier.rawValue))"
                    : "\(model) does not fit the DRAM budget (\(formatBytes(Int64(loaded.byteCount)))); not cached")
        }
    }

    struct Evict: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Drop a model from the DRAM cache (it stays on the SSD).",
            discussion: """
                Its memory stays in the cache's pool, allocated and mapped, so the next load of any
                model writes into it at disk speed; --release gives it back to the kernel.
                --all empties the cache (what instances use stays), returns the pooled memory and
                removes the caches of data directories that no longer exist.
                """)
        @OptionGroup var global: GlobalOptions
        @OptionGroup var loader: LoaderOptions
        @Flag(help: "Evict every model nobody uses, return the pooled memory, and remove orphaned caches.") var all =
            false
        @Flag(help: "Give the memory back to the kernel instead of keeping it pooled for the next load.") var release =
            false
        @Argument(help: "Model name.") var model: String?

        func validate() throws {
            if all == (model != nil) { throw ValidationError("name a model, or pass --all") }
        }

        func run() async throws {
            _ = global.bootstrap()
            let cache = try loader.makeLoader(store: global.store).cache
            if all {
                let (freed, inUse, reclaimed) = cache.evictAll()
                let orphans = DRAMCache.removeOrphans()
                print(
                    "evicted \(formatBytes(Int64(freed))) from DRAM"
                        + (inUse.isEmpty ? "" : "; in use and kept: \(inUse.joined(separator: ", "))")
                        + (reclaimed > 0
                            ? "; reclaimed \(formatBytes(Int64(reclaimed))) left by a process that died mid-load" : "")
                        + (orphans.isEmpty
                            ? "" : "; removed \(orphans.count) orphaned cache(s): \(orphans.joined(separator: ", "))"))
                return
            }
            guard let model else { return }
            let cached = cache.listEntries().contains { $0.name == model }
            guard try cached || global.store.contains(ModelName(model)) else {
                throw StoreError(
                    .notFound,
                    "model `\(model)` is neither in the store nor in the DRAM cache (`sllm list`, `sllm store status`)")
            }
            let freed = try cache.evict(name: model, releaseMemory: release)
            let pooled =
                release ? "memory returned to the kernel" : "\(formatBytes(Int64(cache.pooledBytes))) pooled for reuse"
            print(
                freed > 0
                    ? "evicted \(model) from DRAM (\(formatBytes(Int64(freed)))); \(pooled)"
                    : "\(model) was not in DRAM")
        }
    }

    struct Load: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load a model and report the tier, bandwidth and per-stage timings.",
            discussion:
                "The model stays in the DRAM cache afterwards, as with `sllm store warm`; `sllm store evict NAME --release` frees it."
        )
        @OptionGroup var global: GlobalOptions
        @OptionGroup var loader: LoaderOptions
        @Argument(help: "Model name.") var model: String
        @Flag(
            help:
                "Evict it from DRAM and from the page cache first (a cold SSD load); the slab pool stays, as after `sllm store evict`."
        )
        var cold = false
        @Flag(
            help:
                "With --cold: also give the pooled memory back, so the load sets up fresh shared memory (a first load after a reboot)."
        )
        var freshMemory = false

        func validate() throws {
            if freshMemory && !cold { throw ValidationError("--fresh-memory goes with --cold") }
        }
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            _ = global.bootstrap()
            let name = try ModelName(model)
            let loader = try loader.makeLoader(store: global.store)
            if cold {
                try loader.cache.evict(name: name.rawValue, releaseMemory: freshMemory)
                PageCache.evictTree(global.store.directory(for: name))
            }
            let bar = global.progressBar()
            let loaded = try await loader.load(name, progress: bar.handler)
            bar.finish()
            let t = loaded.timings
            if json {
                struct Timings: Encodable { var queueMs, readMs, ioMs, verifyMs, handOutMs, totalMs: Double }
                struct Report: Encodable {
                    var model: String; var tier: Tier; var bytes: Int; var cached: Bool; var timings: Timings
                }
                let timings = Timings(
                    queueMs: t.queue * 1000, readMs: t.read * 1000, ioMs: t.io * 1000, verifyMs: t.verify * 1000,
                    handOutMs: t.handOut * 1000, totalMs: t.total * 1000)
                print(
                    try ModelSummary.json(
                        Report(
                            model: model, tier: loaded.tier, bytes: loaded.byteCount, cached: loaded.cached,
                            timings: timings)))
                return
            }
            let rate = Double(loaded.byteCount) / max(t.total, 1e-9)
            print(
                "\(model): \(formatBytes(Int64(loaded.byteCount))) from \(loaded.tier.rawValue) in \(String(format: "%.3f", t.total * 1000)) ms (\(formatBytes(Int64(rate)))/s)\(loaded.cached ? "" : ", not cached")"
            )
            print(
                String(
                    format: "  queue %.3f ms, read %.3f ms (io %.3f, verify %.3f thread-ms), hand-out %.3f ms",
                    t.queue * 1000, t.read * 1000, t.io * 1000, t.verify * 1000, t.handOut * 1000))
        }
    }
}
