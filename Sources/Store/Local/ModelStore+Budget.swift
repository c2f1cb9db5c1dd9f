import Checkpoint

extension ModelStore {
    /// Removes least recently used checkpoints (by last load or pull) until the store holds at
    /// most `budgetBytes`, never touching the names in `protecting` (models in use).
    ///
    /// - Returns: the names removed, oldest first.
    @discardableResult
    public func evictLeastRecentlyUsed(toFit budgetBytes: Int, protecting: Set<String>) throws -> [String] {
        var entries = try list().map { entry in
            (
                name: entry.name, bytes: entry.diskByteCount,
                lastUse: FileSystem.modificationTime(modelsDirectory + "/" + entry.name) ?? 0
            )
        }
        var used = entries.reduce(Int64(0)) { $0 + $1.bytes }
        entries.sort { $0.lastUse < $1.lastUse }
        var removed: [String] = []
        for entry in entries where used > Int64(budgetBytes) && !protecting.contains(entry.name) {
            try remove(try ModelName(entry.name))
            used -= entry.bytes
            removed.append(entry.name)
        }
        return removed
    }

    /// Marks `name` as just used, for the SSD tier's LRU order.
    public func touch(_ name: ModelName) {
        FileSystem.touch(directory(for: name))
    }
}
