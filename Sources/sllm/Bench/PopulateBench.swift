import ArgumentParser
import Checkpoint
import Foundation
import Store

#if canImport(Glibc)
    import Glibc
#endif

struct PopulateBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "populate",
        abstract: "Ways of setting up fresh shared memory for a load, against mapping memory that already exists.",
        discussion: """
            Each run makes a new tmpfs file of --size bytes (in --dir, default /dev/shm) ready
            to be written, one way after the other, in rotating order:
              mmap MAP_POPULATE (one thread, in the kernel), madvise(MADV_POPULATE_WRITE) from 1, 2
              and 4 threads, fallocate from 1 and 2 threads then a populated map, an atomic touch
              of every page from 2 threads; and, as the ceiling, mapping a file whose pages exist
              (a pooled slab seen by a new process).
            GB/s (1e9 bytes per second), median (min–max). The DRAM cache's slabs use the winner.
            """)

    @Option(
        help: "Bytes per run (e.g. 1GiB).",
        transform: { text in
            guard let bytes = parseByteCount(text), bytes >= 4096 else {
                throw ValidationError("--size must be a byte count of at least 4KiB")
            }
            return bytes
        })
    var size: Int = 1 << 30

    @OptionGroup var bench: BenchOptions
    var runs: Int { bench.runs ?? 5 }
    var json: String? { bench.json }

    struct Row: Encodable {
        var method: String
        var gigabytesPerSecond: Sample
    }

    func run() async throws {
        let methods = MemoryPopulation.Method.allCases
        var rates = Array(repeating: [Double](), count: methods.count)
        for run in 0..<runs {
            for step in methods.indices {
                let index = (step + run) % methods.count
                let seconds = try MemoryPopulation.time(
                    methods[index], byteCount: size, directory: bench.directory(or: "/dev/shm"))
                rates[index].append(Double(size) / seconds / 1e9)
            }
        }
        let rows = zip(methods, rates).map { Row(method: $0.description, gigabytesPerSecond: Sample(values: $1)) }
        print(
            "\nSetting up \(formatBytes(Int64(size))) of fresh tmpfs memory for writing, GB/s, median (min–max) of \(runs):"
        )
        for row in rows {
            print(
                "  \(row.method.padding(toLength: 40, withPad: " ", startingAt: 0)) \(row.gigabytesPerSecond.formatted(2))"
            )
        }
        let fresh = rows.dropLast()
        if let best = fresh.max(by: { $0.gigabytesPerSecond.median < $1.gigabytesPerSecond.median }),
            let first = rows.first
        {
            print(
                String(
                    format: "  fastest for fresh memory: %@, %.2fx mmap MAP_POPULATE", best.method,
                    best.gigabytesPerSecond.median / first.gigabytesPerSecond.median))
        }
        try writeReport(rows, to: json)
    }
}
