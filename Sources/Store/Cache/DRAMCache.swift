public import Checkpoint
import Foundation
public import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The DRAM tier: whole checkpoints in shared memory, bounded by a byte budget, least recently
/// used first out.
///
/// Each entry is a directory `DIR/NAME-CRC/` holding one tmpfs file per partition, a `meta.json`
/// (written last, when the entry is complete and verified) and a `lock` file. Whoever uses an
/// entry holds a shared `flock` on `lock`; eviction needs an exclusive one, so an entry in use
/// by this or any other process (a restarted `sllm` re-adopts entries) is never evicted. The
/// state lives in the file system, so a restart finds the cache warm.
public final class DRAMCache: Sendable {
    /// Where entries live, normally under `/dev/shm`.
    public let directory: String
    /// Most bytes of checkpoint data the cache may hold.
    public let budgetBytes: Int
    private let counters = Mutex((hits: 0, misses: 0))
    private let logger: Logger

    struct Meta: Codable {
        var name: String
        var indexChecksum: UInt32
        var partitionBytes: [Int]
        var complete: Bool
    }

    public init(directory: String, budgetBytes: Int, logger: Logger = Logger(label: "sllm.cache")) throws {
        self.directory = directory
        self.budgetBytes = budgetBytes
        self.logger = logger
        try FileSystem.makeDirectories(directory)
    }

    /// The default location for a data directory: `/dev/shm/sllm-<hash of the data dir>`.
    public static func defaultDirectory(forDataDirectory root: String) -> String {
        let base = FileSystem.isDirectory("/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        return base + "/sllm-" + String(CRC32C.checksum(Array(root.utf8)), radix: 16)
    }

    static func key(name: String, indexChecksum: UInt32) -> String {
        name + "-" + String(indexChecksum, radix: 16)
    }

    // MARK: - Entries

    /// An entry in use: its partitions are mapped and a shared lock pins it.
    final class Pin: Sendable {
        let files: [UnsafeSharedMemoryFile]
        private let lockDescriptor: Int32

        init(files: [UnsafeSharedMemoryFile], lockDescriptor: Int32) {
            self.files = files
            self.lockDescriptor = lockDescriptor
        }

        deinit { close(lockDescriptor) }  // releases the flock
    }

    /// The complete entry for this exact checkpoint, pinned, or nil.
    func lookup(name: String, indexChecksum: UInt32) -> Pin? {
        let path = directory + "/" + Self.key(name: name, indexChecksum: indexChecksum)
        guard let meta = readMeta(path), meta.complete, meta.indexChecksum == indexChecksum else {
            record(hit: false)
            return nil
        }
        let lock = Glibc.open(path + "/lock", O_RDONLY | O_CLOEXEC)
        guard lock >= 0 else { return nil }
        guard flock(lock, LOCK_SH | LOCK_NB) == 0 else {
            close(lock)
            return nil
        }
        do {
            let files = try meta.partitionBytes.enumerated().map { number, bytes in
                try UnsafeSharedMemoryFile.openExisting(path + "/" + CheckpointIndex.partitionFileName(number), byteCount: bytes)
            }
            futimens(lock, nil)  // last use, for LRU
            record(hit: true)
            return Pin(files: files, lockDescriptor: lock)
        } catch {
            close(lock)
            logger.warning("discarding a damaged cache entry", metadata: ["entry": "\(path)", "error": "\(error)"])
            _ = remove(path: path)
            record(hit: false)
            return nil
        }
    }

    /// An entry being filled: exclusively locked until committed.
    final class Reservation: Sendable {
        let path: String
        let files: [UnsafeSharedMemoryFile]
        let lockDescriptor: Int32
        let meta: Meta

        init(path: String, files: [UnsafeSharedMemoryFile], lockDescriptor: Int32, meta: Meta) {
            self.path = path
            self.files = files
            self.lockDescriptor = lockDescriptor
            self.meta = meta
        }
    }

    /// Makes room (evicting least recently used entries nobody pins) and creates an entry to
    /// fill. Returns nil when the checkpoint cannot be cached: larger than the budget, or the
    /// budget is held by pinned entries; the caller then loads without caching.
    func reserve(name: String, indexChecksum: UInt32, partitionBytes: [Int]) throws -> Reservation? {
        let total = partitionBytes.reduce(0, +)
        guard total <= budgetBytes else { return nil }
        let key = Self.key(name: name, indexChecksum: indexChecksum)
        let path = directory + "/" + key
        // An incomplete entry left by a dead loader is debris; a live one is locked.
        if FileSystem.exists(path), !remove(path: path) { return nil }
        guard makeRoom(for: total) else { return nil }
        try FileSystem.makeDirectory(path)
        let lock = Glibc.open(path + "/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lock >= 0, flock(lock, LOCK_EX | LOCK_NB) == 0 else {
            if lock >= 0 { close(lock) }
            return nil
        }
        do {
            let files = try partitionBytes.enumerated().map { number, bytes in
                try UnsafeSharedMemoryFile.create(path + "/" + CheckpointIndex.partitionFileName(number), byteCount: bytes)
            }
            let meta = Meta(name: name, indexChecksum: indexChecksum, partitionBytes: partitionBytes, complete: false)
            return Reservation(path: path, files: files, lockDescriptor: lock, meta: meta)
        } catch {
            close(lock)
            FileSystem.removeTree(path)
            throw error
        }
    }

    /// Publishes a filled, verified entry and turns the reservation into a pin.
    func commit(_ reservation: Reservation) throws -> Pin {
        var meta = reservation.meta
        meta.complete = true
        let data = try JSONEncoder().encode(meta)
        let temporary = reservation.path + "/meta.json.tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: data) else {
            throw StoreError(.io, "cannot write \(temporary)")
        }
        try FileSystem.rename(temporary, to: reservation.path + "/meta.json")
        flock(reservation.lockDescriptor, LOCK_SH)
        return Pin(files: reservation.files, lockDescriptor: reservation.lockDescriptor)
    }

    /// Drops a reservation that was not filled (error or cancellation).
    func discard(_ reservation: Reservation) {
        FileSystem.removeTree(reservation.path)
        close(reservation.lockDescriptor)
    }

    /// Evicts least recently used unpinned entries until `bytes` more fit in the budget.
    private func makeRoom(for bytes: Int) -> Bool {
        var entries = listEntries()
        var used = entries.reduce(0) { $0 + $1.bytes }
        entries.sort { $0.lastUse < $1.lastUse }
        for entry in entries where used + bytes > budgetBytes {
            if remove(path: directory + "/" + entry.key) {
                logger.info("evicted from DRAM", metadata: ["model": "\(entry.name)", "bytes": "\(entry.bytes)"])
                used -= entry.bytes
            }
        }
        return used + bytes <= budgetBytes
    }

    /// Removes an entry unless someone holds it. Returns whether it is gone.
    private func remove(path: String) -> Bool {
        let lock = Glibc.open(path + "/lock", O_RDWR | O_CLOEXEC)
        if lock >= 0 {
            defer { close(lock) }
            guard flock(lock, LOCK_EX | LOCK_NB) == 0 else { return false }
            let trash = directory + "/.evicting-" + FileSystem.randomSuffix()
            guard Glibc.rename(path, trash) == 0 else { return false }
            FileSystem.removeTree(trash)
            return true
        }
        FileSystem.removeTree(path)
        return true
    }

    // MARK: - Status

    /// One entry as `sllm store status` shows it.
    public struct Entry: Sendable {
        public var key: String
        public var name: String
        public var bytes: Int
        public var complete: Bool
        public var pinned: Bool
        public var lastUse: Double
    }

    /// Every entry, complete or being filled.
    public func listEntries() -> [Entry] {
        ((try? FileSystem.listDirectory(directory)) ?? []).filter { !$0.hasPrefix(".") }.compactMap { key in
            let path = directory + "/" + key
            let meta = readMeta(path)
            var bytes = 0
            for name in (try? FileSystem.listDirectory(path)) ?? [] where name.hasPrefix("data-") {
                bytes += Int(FileSystem.fileSize(path + "/" + name) ?? 0)
            }
            let lastUse = FileSystem.modificationTime(path + "/lock") ?? 0
            var pinned = false
            let lock = Glibc.open(path + "/lock", O_RDWR | O_CLOEXEC)
            if lock >= 0 {
                pinned = flock(lock, LOCK_EX | LOCK_NB) != 0
                close(lock)
            }
            return Entry(key: key, name: meta?.name ?? key, bytes: bytes, complete: meta?.complete ?? false, pinned: pinned, lastUse: lastUse)
        }
    }

    /// Bytes held by all entries.
    public var usedBytes: Int { listEntries().reduce(0) { $0 + $1.bytes } }

    /// Hits and misses of lookups in this process.
    public var hitsAndMisses: (hits: Int, misses: Int) { counters.withLock { ($0.hits, $0.misses) } }

    /// Hits and misses of every process using this cache directory since it was created.
    public var sharedHitsAndMisses: (hits: Int, misses: Int) {
        guard let text = try? String(contentsOfFile: directory + "/.stats", encoding: .utf8) else { return (0, 0) }
        let numbers = text.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        return numbers.count == 2 ? (numbers[0], numbers[1]) : (0, 0)
    }

    /// Counts a lookup here and in the shared `.stats` file (read-modify-write under `flock`).
    private func record(hit: Bool) {
        counters.withLock { hit ? ($0.hits += 1) : ($0.misses += 1) }
        let fd = Glibc.open(directory + "/.stats", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        defer { close(fd) }
        guard flock(fd, LOCK_EX) == 0 else { return }
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = pread(fd, &buffer, 64, 0)
        let numbers = String(decoding: buffer.prefix(max(0, n)), as: UTF8.self).split(separator: " ")
            .compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        var (hits, misses) = numbers.count == 2 ? (numbers[0], numbers[1]) : (0, 0)
        if hit { hits += 1 } else { misses += 1 }
        let text = Array("\(hits) \(misses)\n".utf8)
        _ = ftruncate(fd, 0)
        _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    /// Evicts every entry of `name` that nobody uses. Returns the bytes freed.
    /// - Throws: `StoreError` when an entry of `name` is in use.
    @discardableResult
    public func evict(name: String) throws -> Int {
        var freed = 0
        for entry in listEntries() where entry.name == name {
            guard remove(path: directory + "/" + entry.key) else {
                throw StoreError(.io, "model `\(name)` is in use and cannot be evicted from DRAM")
            }
            freed += entry.bytes
        }
        return freed
    }

    /// Names of models whose entries someone holds (in this or another process).
    public func pinnedNames() -> Set<String> {
        Set(listEntries().filter(\.pinned).map(\.name))
    }

    /// Whether a complete entry of `name` is cached.
    public func contains(name: String) -> Bool {
        listEntries().contains { $0.name == name && $0.complete }
    }

    private func readMeta(_ path: String) -> Meta? {
        guard let data = FileManager.default.contents(atPath: path + "/meta.json") else { return nil }
        return try? JSONDecoder().decode(Meta.self, from: data)
    }
}
