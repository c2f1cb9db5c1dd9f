public import Checkpoint
public import Foundation

extension Tokenizer {
    /// The tokenizer a checkpoint carries: its tokenizer files (read through `read`, which the
    /// store checksum-verifies) and its chat template.
    public convenience init(checkpoint index: CheckpointIndex, read: (String) throws -> Data) throws {
        let files = index.files.filter { Tokenizer.checkpointFileNames.contains($0.name) }
        try self.init(checkpointFiles: Set(files.map(\.name)), chatTemplate: index.tokenizer.chatTemplate, read: read)
    }

    /// `init(checkpoint:read:)` for a checkpoint on disk: its `vocabulary.bin` is mapped (`map`,
    /// which checksum-verifies) and used in place; the JSON forms are read (`read`).
    public convenience init(
        checkpoint index: CheckpointIndex, map: (String) throws -> MappedFile, read: (String) throws -> [UInt8]
    ) throws {
        if index.files.contains(where: { $0.name == "vocabulary.bin" }) {
            let table = try Tokenizer.table { try VocabularyTable(mapped: try map("vocabulary.bin")) }
            try self.init(vocabulary: table, chatTemplate: index.tokenizer.chatTemplate)
        } else {
            try self.init(checkpoint: index) { Data(try read($0)) }
        }
    }

    /// What identifies a checkpoint's tokenizer: its files' names, checksums and sizes, and its
    /// chat template. Checkpoints with equal keys have equal tokenizers (a cache's key).
    public static func key(of index: CheckpointIndex) -> String {
        let files = index.files.filter { Tokenizer.checkpointFileNames.contains($0.name) }
        let template = index.tokenizer.chatTemplate
        return (files.map { "\($0.name):\($0.crc32c):\($0.byteCount)" }.sorted() + [String(template?.hashValue ?? 0)])
            .joined(separator: "|")
    }
}
