public import Checkpoint

/// The local SSD tier: checkpoint directories under `DATA_DIR/models/NAME`.
///
/// Writes go through ``CheckpointWriter`` (atomic), removal renames the directory away before
/// deleting it, so a reader never sees a half-present model.
public struct ModelStore: Sendable {
    /// The data directory (`--data-dir`, `SLLM_HOME`, default `~/.sllm`).
    public let root: String

    public init(root: String) {
        self.root = root
    }

    public var modelsDirectory: String { root + "/models" }
    public var downloadsDirectory: String { root + "/downloads" }

    /// Where the checkpoint of `name` lives (whether or not it exists).
    public func directory(for name: ModelName) -> String { modelsDirectory + "/" + name.rawValue }

    public func contains(_ name: ModelName) -> Bool {
        FileSystem.exists(directory(for: name) + "/" + CheckpointIndex.fileName)
    }

    /// Opens the checkpoint of `name`.
    public func reader(for name: ModelName) throws -> CheckpointReader {
        guard FileSystem.exists(directory(for: name)) else {
            throw StoreError(
                .notFound, "model `\(name)` is not in the store (\(modelsDirectory)); `sllm pull \(name)` fetches it")
        }
        return try CheckpointReader(directory: directory(for: name))
    }

    /// A model in the store, as `sllm list` shows it.
    public struct Entry: Sendable {
        public var name: String
        /// The index, or the error that kept it from opening.
        public var index: Result<CheckpointIndex, CheckpointError>
        public var diskByteCount: Int64
    }

    /// Every model in the store, sorted by name. Hidden `.partial` directories of conversions
    /// that were killed, and `.removing-` ones of interrupted removals, are cleaned up first.
    public func list() throws -> [Entry] {
        guard FileSystem.isDirectory(modelsDirectory) else { return [] }
        CheckpointWriter.removeStalePartials(in: modelsDirectory)
        // A removal killed between its rename and its delete leaves hidden trash behind.
        for name in try FileSystem.listDirectory(modelsDirectory) where name.hasPrefix(".removing-") {
            FileSystem.removeTree(modelsDirectory + "/" + name)
        }
        return try FileSystem.listDirectory(modelsDirectory).filter { !$0.hasPrefix(".") }.map { name in
            let path = modelsDirectory + "/" + name
            let index = Result { () throws(CheckpointError) in try CheckpointReader(directory: path).index }
            return Entry(name: name, index: index, diskByteCount: FileSystem.diskUsage(path))
        }
    }

    /// Deletes the model `name`: renamed to a hidden name first, so it disappears at once.
    public func remove(_ name: ModelName) throws {
        let path = directory(for: name)
        guard FileSystem.exists(path) else {
            throw StoreError(.notFound, "model `\(name)` is not in the store")
        }
        let trash = modelsDirectory + "/.removing-" + name.rawValue + "-" + FileSystem.randomSuffix()
        try FileSystem.rename(path, to: trash)
        FileSystem.removeTree(trash)
    }
}
