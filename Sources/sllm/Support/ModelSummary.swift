import Checkpoint
import Foundation
import Store

/// Renders what a checkpoint holds, for `pull`, `list`, `convert` and `inspect`.
enum ModelSummary {
    /// `q4_1 85%, f32 15%` by bytes, largest first.
    static func dtypeMix(_ index: CheckpointIndex) -> String {
        var bytes: [DType: Int] = [:]
        for tensor in index.tensors { bytes[tensor.dtype, default: 0] += tensor.byteCount }
        let total = max(1, bytes.values.reduce(0, +))
        return bytes.sorted { $0.value > $1.value }
            .map { "\($0.key) \(String(format: "%.0f", Double($0.value) * 100 / Double(total)))%" }
            .joined(separator: ", ")
    }

    /// `134.5M`, `7.2B`.
    static func parameters(_ count: Int) -> String {
        if count >= 1_000_000_000 { return String(format: "%.1fB", Double(count) / 1e9) }
        if count >= 1_000_000 { return String(format: "%.1fM", Double(count) / 1e6) }
        if count >= 1_000 { return String(format: "%.1fK", Double(count) / 1e3) }
        return String(count)
    }

    /// Tokenizer line: kind, vocabulary size, specials, template.
    static func tokenizer(_ index: CheckpointIndex) -> String {
        var parts = ["\(index.tokenizer.format) tokenizer", "vocab \(index.config.vocabularySize)"]
        parts.append(
            index.tokenizer.chatTemplate == nil
                ? "no chat template" : "chat template \(index.tokenizer.chatTemplate!.count) chars")
        return parts.joined(separator: ", ")
    }

    /// A few lines describing the model.
    static func describe(name: String, index: CheckpointIndex, diskBytes: Int64?) -> String {
        let config = index.config
        var lines = [
            "model:        \(name)",
            "architecture: \(config.architecture) (\(config.blockCount) layers, hidden \(config.embeddingLength), heads \(config.headCount)/\(config.headCountKV) kv, ffn \(config.feedForwardLength), context \(config.contextLength))",
            "parameters:   \(parameters(index.parameterCount)) in \(index.tensors.count) tensors",
            "dtypes:       \(dtypeMix(index))",
            "tokenizer:    \(tokenizer(index))",
            "source:       \(index.source) (\(index.sourceFormat))",
        ]
        if let diskBytes {
            lines.append("size:         \(formatBytes(diskBytes)) on disk in \(index.partitions.count) partition(s)")
        }
        return lines.joined(separator: "\n")
    }

    /// Aligned text columns.
    static func table(_ rows: [[String]]) -> String {
        guard let header = rows.first else { return "" }
        var widths = header.map(\.count)
        for row in rows {
            for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) }
        }
        return rows.map { row in
            row.enumerated().map { i, cell in
                i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }

    /// Encodes a value as pretty, sorted JSON for `--json`: snake_case keys everywhere (as the
    /// HTTP API), durations as `…_ms`.
    static func json(_ value: some Encodable) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }
}
