import ArgumentParser
import Checkpoint
import Store

struct Inspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a model's configuration, tokenizer and tensor table.",
        discussion: """
            MODEL is a name in the store or a checkpoint directory.

            Examples:
              sllm inspect smollm2-135m
              sllm inspect ./smollm2 --json
            """,
        aliases: ["show"])

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Model name or checkpoint directory.")
    var model: String

    @Flag(help: "Print the whole index as JSON.")
    var json = false

    @Flag(help: "Leave out the tensor table.")
    var noTensors = false

    func run() async throws {
        _ = global.bootstrap()
        let reader = try openCheckpoint(model, store: global.store)
        let index = reader.index
        if json {
            print(try ModelSummary.json(index))
            return
        }
        print(ModelSummary.describe(name: model, index: index, diskBytes: FileSystem.diskUsage(reader.directory)))
        let config = index.config
        print(
            """
            config:       rms eps \(config.rmsNormEpsilon), rope \(config.ropeStyle) base \(config.ropeFrequencyBase) dims \(config.ropeDimensionCount), head dim \(config.headDimension), tied embeddings \(config.tiedEmbeddings)\(config.ropeScaling.map { ", rope scaling \($0.mapValues(\.summary))" } ?? "")
            format:       version \(index.formatVersion), checksum blocks of \(formatBytes(Int64(index.checksumBlockSize)))
            files:        \(index.files.map { "\($0.name) (\(formatBytes(Int64($0.byteCount))))" }.joined(separator: ", "))
            """)
        if !noTensors {
            var table = [["TENSOR", "DTYPE", "SHAPE", "PARTITION", "OFFSET", "BYTES", "CRC32C"]]
            for tensor in index.tensors {
                table.append([
                    tensor.name, tensor.dtype.name, "[" + tensor.shape.map(String.init).joined(separator: ", ") + "]",
                    index.partitions[tensor.partition].file, String(tensor.offset), String(tensor.byteCount),
                    String(tensor.crc32c, radix: 16),
                ])
            }
            print("")
            print(ModelSummary.table(table))
        }
    }
}
