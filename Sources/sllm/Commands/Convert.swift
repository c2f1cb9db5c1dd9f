import ArgumentParser
import Checkpoint
import Foundation
import Store

struct Convert: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a GGUF file or a Hugging Face model directory into an sllm checkpoint.",
        discussion: """
            SRC is a .gguf file (v2/v3; quantized blocks are kept byte for byte) or a directory with
            config.json, *.safetensors (optionally model.safetensors.index.json) and tokenizer.json.
            DEST is the checkpoint directory to create; it appears only when complete.

            Examples:
              sllm convert SmolLM2-135M-Instruct.Q4_1.gguf ./smollm2
              sllm convert ./Qwen2.5-0.5B-Instruct ./qwen --partition-size 1GiB
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "GGUF file or Hugging Face model directory.")
    var source: String

    @Argument(help: "Checkpoint directory to create.")
    var destination: String

    @Option(help: "Largest partition file, e.g. 4GiB (a multiple of 4 KiB).")
    var partitionSize: String = "4GiB"

    @Option(help: "Checksum block size, e.g. 1MiB (a multiple of 4 KiB).")
    var checksumBlock: String = "1MiB"

    @Flag(help: "Replace DEST if it exists (atomically).")
    var force = false

    @Flag(help: "Print the resulting index as JSON.")
    var json = false

    func options() throws -> CheckpointWriter.Options {
        guard let partition = parseByteCount(partitionSize), partition >= 4096, partition % 4096 == 0 else {
            throw ValidationError("--partition-size \(partitionSize) is not a byte count that is a multiple of 4 KiB")
        }
        guard let block = parseByteCount(checksumBlock), block >= 4096, block % 4096 == 0, block <= 1 << 30 else {
            throw ValidationError("--checksum-block \(checksumBlock) is not a multiple of 4 KiB up to 1 GiB")
        }
        return CheckpointWriter.Options(
            maxPartitionByteCount: partition, checksumBlockSize: block, replaceExisting: force)
    }

    func validate() throws { _ = try options() }

    func run() async throws {
        _ = global.bootstrap()
        let bar = global.progressBar()
        let start = Date()
        let index = try Converter.convert(
            absolutePath(source), to: absolutePath(destination), options: try options(), progress: bar.handler)
        bar.finish()
        let seconds = Date().timeIntervalSince(start)
        if json {
            print(try ModelSummary.json(index))
        } else {
            print(
                ModelSummary.describe(
                    name: destination, index: index, diskBytes: FileSystem.diskUsage(absolutePath(destination))))
            print(
                String(
                    format: "converted in %.2f s (%@/s)", seconds,
                    formatBytes(Int64(Double(index.tensorByteCount) / max(seconds, 1e-9)))))
        }
    }
}
