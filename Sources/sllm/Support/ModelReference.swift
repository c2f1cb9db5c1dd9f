import Checkpoint
import Store

/// Opens a model given as a store name (`smollm2-135m`) or a checkpoint directory path.
func openCheckpoint(_ text: String, store: ModelStore) throws -> CheckpointReader {
    if text.contains("/") || (FileSystem.isDirectory(text) && FileSystem.exists(text + "/" + CheckpointIndex.fileName))
    {
        return try CheckpointReader(directory: absolutePath(text))
    }
    return try store.reader(for: try ModelName(text))
}
