import ArgumentParser
import CKernels
import Checkpoint
import Foundation
import Store

struct HashBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash",
        abstract: "Checksum throughput on one core vs the disk's O_DIRECT sequential read bandwidth (fio).",
        discussion: """
            Hashes an in-memory buffer with CRC-32C as the writer and `verify` do (1 MiB blocks,
            three hashed at a time) and as the loader does (one checksum per tensor: three stripes
            hashed together and combined), and runs fio sequential O_DIRECT reads
            (psync with 32 MiB blocks; libaio at queue depth 8) on a file in --dir, interleaved.
            Prints medians with (min–max) and the ratio hash / best fio.
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var bench: BenchOptions
    var runs: Int { bench.runs ?? 5 }
    var json: String? { bench.json }

    @Option(help: "Bytes hashed per run.")
    var bufferSize: String = "512MiB"

    @Option(help: "Size of fio's test file.")
    var fioSize: String = "2GiB"

    struct Report: Encodable {
        var hardwareCRC: Bool
        var blockHashGBps: Sample
        var streamHashGBps: Sample
        var tableHashGBps: Sample
        var fioPsyncGBps: Sample?
        var fioLibaioGBps: Sample?
        var ratioToBestFio: Double?
    }

    func validate() throws {
        guard let size = parseByteCount(bufferSize), size >= 1 << 20 else {
            throw ValidationError("--buffer-size must be at least 1MiB")
        }
        guard parseByteCount(fioSize) != nil else { throw ValidationError("--fio-size \(fioSize) is not a byte count") }
    }

    func run() async throws {
        _ = global.bootstrap()
        let size = parseByteCount(bufferSize)!
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
        defer { buffer.deallocate() }
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for i in 0..<(size / 8) {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            buffer.storeBytes(of: state, toByteOffset: i * 8, as: UInt64.self)
        }
        let bytes = UnsafeRawBufferPointer(buffer)
        let fio = Fio.find()
        let directory = bench.directory(or: global.root + "/bench")
        try FileSystem.makeDirectories(directory)
        let fioFile = directory + "/fio-seqread.dat"
        if fio == nil && !global.quiet {
            print("fio not found on PATH: run scripts/install-bench-tools.sh to compare with the disk")
        }

        var blocks: [Double] = [], stream: [Double] = [], table: [Double] = [], psync: [Double] = [],
            libaio: [Double] = []
        var checksums: [UInt32] = []
        checksums.reserveCapacity(size >> 20 + 1)
        for run in 1...runs {
            checksums.removeAll(keepingCapacity: true)
            blocks.append(
                Double(size) / 1e9 / measure { CRC32C.blockChecksums(bytes, blockSize: 1 << 20, into: &checksums) })
            stream.append(Double(size) / 1e9 / measure { _ = CRC32C.checksum(bytes) })
            let slice = min(size, 64 << 20)
            table.append(Double(slice) / 1e9 / measure { _ = sllm_crc32c_software(0, bytes.baseAddress!, slice) })
            if let fio {
                psync.append(
                    try fio.sequentialRead(
                        file: fioFile, size: parseByteCount(fioSize)!, blockSize: "32m", engine: "psync", depth: 1,
                        readOnly: false))
                libaio.append(
                    try fio.sequentialRead(
                        file: fioFile, size: parseByteCount(fioSize)!, blockSize: "32m", engine: "libaio", depth: 8,
                        readOnly: false))
            }
            if !global.quiet { FileHandle.standardError.write(Data("run \(run)/\(runs) done\n".utf8)) }
        }
        let best = max(Sample(values: psync).median.nanToZero, Sample(values: libaio).median.nanToZero)
        let report = Report(
            hardwareCRC: CRC32C.isHardwareAccelerated, blockHashGBps: Sample(values: blocks),
            streamHashGBps: Sample(values: stream),
            tableHashGBps: Sample(values: table), fioPsyncGBps: fio == nil ? nil : Sample(values: psync),
            fioLibaioGBps: fio == nil ? nil : Sample(values: libaio),
            ratioToBestFio: best > 0 ? Sample(values: blocks).median / best : nil)
        var rows = [["MEASURE", "GB/s median (min–max)"]]
        rows.append([
            "CRC-32C 1 core, 1 MiB blocks (writer, verify)\(report.hardwareCRC ? "" : " [no SSE4.2]")",
            report.blockHashGBps.formatted(),
        ])
        rows.append(["CRC-32C 1 core, one buffer (loader, per tensor)", report.streamHashGBps.formatted()])
        rows.append(["CRC-32C 1 core, table (no SSE4.2)", report.tableHashGBps.formatted()])
        if let psync = report.fioPsyncGBps { rows.append(["fio O_DIRECT seq read, psync bs=32M", psync.formatted()]) }
        if let libaio = report.fioLibaioGBps {
            rows.append(["fio O_DIRECT seq read, libaio bs=32M qd=8", libaio.formatted()])
        }
        print(
            "sllm bench hash: \(runs) runs, \(formatBytes(Int64(size))) hashed per run\(fio == nil ? "" : ", fio file \(fioFile)")"
        )
        print(ModelSummary.table(rows))
        if let ratio = report.ratioToBestFio {
            print(
                String(
                    format: "checksum / best fio read: %.1fx (verification keeps up with the disk: %@)", ratio,
                    ratio >= 1 ? "yes" : "NO"))
        }
        try writeReport(report, to: json)
    }
}

extension Double {
    var nanToZero: Double { isNaN ? 0 : self }
}
