import CKernels
public import Checkpoint
import Foundation
public import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The DRAM tier: checkpoints in shared memory, bounded by a byte budget, least recently used
/// first out.
///
/// Memory is a pool of *slabs* of one size (tmpfs files under `DIR/slabs`, `slabBytes` each),
/// mapped once per process and reused: a model is laid into slabs as *segments*, runs of whole
/// tensors of one partition. A segment fits one slab, except one holding a tensor larger than a
/// slab, which gets as many standard slabs as it needs, mapped one after another into one
/// contiguous range; so every slab fits every load and the pool never fragments. Evicting a model
/// returns its slabs to the pool; the next load writes into pages that are already allocated,
/// so it runs at disk speed instead of paying the kernel to allocate and zero fresh pages (about
/// 1.2 GB/s on one thread on this VM). `PoolFiller` fills the pool ahead of any load.
///
/// Each model is an entry `DIR/entries/NAME-CRC/` with a `meta.json` (its segments; marked
/// complete only once every byte is verified) and a `lock` file. Whoever uses an entry holds a
/// shared `flock` on it; eviction needs an exclusive one, so an entry in use by this or any
/// other process is never evicted. The state lives in the file system: a restarted `sllm`
/// re-adopts a warm cache.
public final class DRAMCache: Sendable {
    /// Where the cache lives, normally under `/dev/shm`.
    public let directory: String
    /// Most bytes of slabs the cache may hold (in use or pooled).
    public let budgetBytes: Int
    /// Size of a pooled slab.
    public let slabBytes: Int
    private let mappings = Mutex<[String: UnsafeSharedMemoryFile]>([:])
    private let reserving = Mutex(())
    private let counters = Mutex((hits: 0, misses: 0))
    /// Loads of this process that are reading into the cache now; `PoolFiller` waits for zero.
    let loadsInFlight = Atomic<Int>(0)
    /// Hit and miss counters shared by every process using the directory (two u64 in `.counters`,
    /// added to atomically); nil when the file cannot be mapped.
    private let sharedCounters: UnsafeSharedMemoryFile?
    let logger: Logger

    struct Segment: Codable, Equatable {
        /// Its slabs, mapped one after another: one, or several for a tensor larger than a slab.
        var slabs: [String]
        var partition: Int
        /// Partition range held at the start of the slab.
        var offset: Int
        var byteCount: Int

        /// Whether all of `tensor`'s bytes lie in this segment.
        func holds(_ tensor: CheckpointIndex.TensorRecord) -> Bool {
            partition == tensor.partition && tensor.offset >= offset
                && tensor.offset + tensor.byteCount <= offset + byteCount
        }
    }

    struct Meta: Codable {
        var name: String
        var indexChecksum: UInt32
        var segments: [Segment]
        var complete: Bool
    }

    /// Opens (or creates) the cache at `directory`.
    ///
    /// The directory holds the weights every instance runs on, and a DRAM hit is never
    /// re-verified: only this user may write it. It is created with mode 0700; one with wider
    /// permissions is narrowed, and one owned by another user is refused.
    ///
    /// - Parameter owner: the data directory the cache serves, recorded in `DIR/owner` so that
    ///   `removeOrphans` can delete caches whose data directory is gone.
    public init(
        directory: String, budgetBytes: Int, slabBytes: Int = 32 << 20, owner: String? = nil,
        logger: Logger = Logger(label: "sllm.cache")
    ) throws {
        self.directory = directory
        self.budgetBytes = budgetBytes
        self.slabBytes = max(4096, slabBytes / 4096 * 4096)
        self.logger = logger
        try FileSystem.makeDirectories(FileSystem.directoryName(directory))
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw StoreError.system("cannot create the DRAM cache \(directory)", "mkdir")
        }
        try Self.restrictToThisUser(directory)
        try FileSystem.makeDirectories(directory + "/slabs")
        try FileSystem.makeDirectories(directory + "/entries")
        sharedCounters = try? UnsafeSharedMemoryFile.openOrCreate(directory + "/.counters", byteCount: 4096)
        if let owner, (try? String(contentsOfFile: directory + "/owner", encoding: .utf8)) != owner {
            let temporary = directory + "/owner." + FileSystem.randomSuffix()
            if FileManager.default.createFile(atPath: temporary, contents: Data(owner.utf8)) {
                try? FileSystem.rename(temporary, to: directory + "/owner")
            }
        }
    }

    /// Refuses a cache directory another user owns (it could plant weights) and narrows one
    /// this user owns to mode 0700.
    static func restrictToThisUser(_ directory: String) throws {
        var info = stat()
        guard lstat(directory, &info) == 0 else {
            throw StoreError.system("cannot stat the DRAM cache \(directory)", "lstat")
        }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw StoreError(.io, "the DRAM cache \(directory) is not a directory (a link?)")
        }
        guard info.st_uid == geteuid() else {
            throw StoreError(
                .io,
                "the DRAM cache \(directory) belongs to uid \(info.st_uid), not to this user (uid \(geteuid())); remove it or set --cache-dir / cache_dir"
            )
        }
        if info.st_mode & 0o077 != 0, chmod(directory, 0o700) != 0 {
            throw StoreError.system("cannot restrict the DRAM cache \(directory) to mode 0700", "chmod")
        }
    }

    /// Deletes the caches under `base` (`/dev/shm/sllm-*`) whose recorded data directory no
    /// longer exists and that nobody uses (no entry locked). Caches of live data directories,
    /// caches in use, and caches without an `owner` record are left alone. Returns the paths removed.
    @discardableResult
    public static func removeOrphans(in base: String = "/dev/shm", logger: Logger = Logger(label: "sllm.cache"))
        -> [String]
    {
        var removed: [String] = []
        for name in (try? FileSystem.listDirectory(base)) ?? [] where name.hasPrefix("sllm-") {
            let path = base + "/" + name
            var info = stat()
            guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR, info.st_uid == geteuid(),
                let owner = try? String(contentsOfFile: path + "/owner", encoding: .utf8), !owner.isEmpty,
                !FileSystem.exists(owner)
            else { continue }
            // In use: some process holds an entry's lock.
            let entries = ((try? FileSystem.listDirectory(path + "/entries")) ?? []).filter { !$0.hasPrefix(".") }
            var locks: [Int32] = []
            defer { locks.forEach { close($0) } }
            var busy = false
            for entry in entries {
                let lock = Glibc.open(path + "/entries/" + entry + "/lock", O_RDWR | O_CLOEXEC)
                guard lock >= 0 else { continue }
                locks.append(lock)
                if flock(lock, LOCK_EX | LOCK_NB) != 0 { busy = true; break }
            }
            guard !busy else { continue }
            FileSystem.removeTree(path)
            logger.info(
                "removed the DRAM cache of a data directory that no longer exists",
                metadata: ["cache": "\(path)", "dataDirectory": "\(owner)"])
            removed.append(path)
        }
        return removed
    }

    /// Evicts every entry nobody uses, reclaims what dead loaders left and deletes the pooled
    /// slabs. Returns the bytes of the entries evicted, the names of entries in use (they stay)
    /// and the orphaned bytes reclaimed.
    public func evictAll() -> (freed: Int, inUse: [String], reclaimed: Int) {
        let reclaimed = reclaim()
        var freed = 0
        var inUse: [String] = []
        for entry in listEntries() {
            if removeEntry(entriesDirectory + "/" + entry.key, patience: Self.releasePatience) {
                freed += entry.bytes
            } else {
                inUse.append(entry.name)
            }
        }
        trimPool()
        return (freed, inUse, reclaimed)
    }

    /// The default location for a data directory: `/dev/shm/sllm-<hash of the data dir>`.
    public static func defaultDirectory(forDataDirectory root: String) -> String {
        let base = FileSystem.isDirectory("/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        return base + "/sllm-" + String(CRC32C.checksum(Array(root.utf8)), radix: 16)
    }

    static func key(name: String, indexChecksum: UInt32) -> String {
        name + "-" + String(indexChecksum, radix: 16)
    }

    var slabsDirectory: String { directory + "/slabs" }
    var entriesDirectory: String { directory + "/entries" }

    // MARK: - Planning

    /// Lays the tensors of `index` into segments of at most `slabBytes` (whole tensors, in
    /// file order, 4 KiB-aligned), one segment of several slabs per tensor larger than a slab.
    static func plan(_ index: CheckpointIndex, slabBytes: Int) -> [Segment] {
        var segments: [Segment] = []
        for partition in index.partitions.indices {
            let tensors = index.tensors.filter { $0.partition == partition }.sorted { $0.offset < $1.offset }
            var current: Segment?
            for tensor in tensors {
                let end = alignUp(tensor.offset + tensor.byteCount)
                if var segment = current, end - segment.offset <= slabBytes {
                    segment.byteCount = end - segment.offset
                    current = segment
                    continue
                }
                if let segment = current { segments.append(segment) }
                current = Segment(
                    slabs: [], partition: partition, offset: tensor.offset, byteCount: end - tensor.offset)
            }
            if let segment = current { segments.append(segment) }
        }
        return segments
    }

    /// Bytes of slabs that caching `index` takes.
    public func footprint(of index: CheckpointIndex) -> Int {
        Self.plan(index, slabBytes: slabBytes).reduce(0) { $0 + slabCount(for: $1.byteCount) } * slabBytes
    }

    /// Slabs a segment of `bytes` takes.
    func slabCount(for bytes: Int) -> Int { max(1, (bytes + slabBytes - 1) / slabBytes) }

    private static func alignUp(_ value: Int) -> Int { (value + 4095) / 4096 * 4096 }

    // MARK: - Entries

    /// An entry in use: its segments' memory and a shared lock that pins it.
    final class Pin: Sendable {
        let segments: [Segment]
        /// The slab mappings, kept alive as long as the pin.
        let slabs: [UnsafeSharedMemoryFile]
        var bases: [UnsafeMutableRawPointer] { slabs.map(\.base) }
        private let lockDescriptor: Int32

        init(segments: [Segment], slabs: [UnsafeSharedMemoryFile], lockDescriptor: Int32) {
            self.segments = segments
            self.slabs = slabs
            self.lockDescriptor = lockDescriptor
        }

        deinit { close(lockDescriptor) }  // releases the flock
    }

    /// The complete entry for this exact checkpoint, pinned, or nil.
    func lookup(name: String, indexChecksum: UInt32) -> Pin? {
        let path = entriesDirectory + "/" + Self.key(name: name, indexChecksum: indexChecksum)
        guard let unlocked = readMeta(path), unlocked.complete, unlocked.indexChecksum == indexChecksum,
            let lock = sharedLock(path)
        else {
            record(hit: false)
            return nil
        }
        // Read again under the lock: the entry may have been replaced between the two.
        guard let meta = readMeta(path), meta.complete, meta.indexChecksum == indexChecksum else {
            close(lock)
            record(hit: false)
            return nil
        }
        do {
            let slabs = try meta.segments.map { try mapCheckedSegment($0) }
            futimens(lock, nil)  // last use, for LRU
            record(hit: true)
            // Slabs new to this process: their existing pages are mapped in the background, so
            // the engine's first pass does not take a page fault per 4 KiB; the hit returns now.
            _ = populate(slabs, threads: 2)
            return Pin(segments: meta.segments, slabs: slabs, lockDescriptor: lock)
        } catch {
            close(lock)
            logger.warning("discarding a damaged cache entry", metadata: ["entry": "\(path)", "error": "\(error)"])
            drop(path, meta)
            record(hit: false)
            return nil
        }
    }

    /// An entry being filled: exclusively locked until committed.
    final class Reservation: Sendable {
        let path: String
        let meta: Meta
        let slabs: [UnsafeSharedMemoryFile]
        var bases: [UnsafeMutableRawPointer] { slabs.map(\.base) }
        let lockDescriptor: Int32

        init(path: String, meta: Meta, slabs: [UnsafeSharedMemoryFile], lockDescriptor: Int32) {
            self.path = path
            self.meta = meta
            self.slabs = slabs
            self.lockDescriptor = lockDescriptor
        }
    }

    /// Finds slabs for every segment of `index` (pooled ones first, then new ones, evicting least
    /// recently used entries nobody pins) and creates the entry to fill. Returns nil when the
    /// checkpoint cannot be cached: larger than the budget, or the budget is held by pinned
    /// entries; the caller then loads without caching.
    func reserve(name: String, indexChecksum: UInt32, index: CheckpointIndex) throws -> Reservation? {
        var segments = Self.plan(index, slabBytes: slabBytes)
        let counts = segments.map { slabCount(for: $0.byteCount) }
        let needed = counts.reduce(0, +)
        guard needed * slabBytes <= budgetBytes else { return nil }
        return try withReserveLock { () -> Reservation? in
            let key = Self.key(name: name, indexChecksum: indexChecksum)
            let path = entriesDirectory + "/" + key
            // Being filled elsewhere, or damaged and still held.
            if FileSystem.exists(path), !removeEntry(path, patience: Self.releasePatience) { return nil }

            var (free, fileBytes) = standardFreeSlabs()
            // Make room: first drop pooled slabs this load does not need, then evict the least
            // recently used entries nobody holds, until the new slabs fit.
            while fileBytes + max(0, needed - free.count) * slabBytes > budgetBytes {
                if free.count > needed {
                    deleteSlab(free.removeLast())
                    fileBytes -= slabBytes
                } else {
                    let candidates = listEntries().filter(\.complete).sorted { $0.lastUse < $1.lastUse }
                    guard let victim = candidates.first(where: { removeEntry(entriesDirectory + "/" + $0.key) }) else {
                        return nil
                    }
                    logger.info("evicted from DRAM", metadata: ["model": "\(victim.name)", "bytes": "\(victim.bytes)"])
                    (free, fileBytes) = standardFreeSlabs()
                }
            }

            // Pool slabs are known by name, their sizes unread (`slabSize`); the few a load takes
            // are checked, and one whose file is not the size its name says (truncated, or left
            // by a crash of a build that named slabs before sizing them) is replaced.
            let intact = { (name: String) in
                FileSystem.fileSize(self.slabsDirectory + "/" + name) == Int64(self.slabBytes)
            }
            func usable(_ name: String?) throws -> String {
                if let name {
                    if intact(name) { return name }
                    deleteSlab(name)
                }
                return try createSlabFile()
            }
            // Slabs mapped in this process are the cheapest (their pages are mapped): a segment of
            // several slabs takes a contiguous mapping it finds whole, a one-slab segment a slab
            // mapped on its own; then any free slab; then new ones.
            let mappedKeys = mappings.withLock { Array($0.keys) }.sorted()
            let singlyMapped = Set(mappedKeys.filter { !$0.contains("+") })
            var unused = Set(free)
            var assigned = [[String]](repeating: [], count: segments.count)
            for i in segments.indices where counts[i] > 1 {
                if let span = mappedKeys.lazy.map({ $0.split(separator: "+").map(String.init) })
                    .first(where: { $0.count == counts[i] && $0.allSatisfy(unused.contains) && $0.allSatisfy(intact) })
                {
                    assigned[i] = span
                    unused.subtract(span)
                }
            }
            var mappedFree = unused.filter(singlyMapped.contains).sorted()
            var otherFree = unused.filter { !singlyMapped.contains($0) }.sorted()
            for i in segments.indices where assigned[i].isEmpty {
                for _ in 0..<counts[i] {
                    let name =
                        counts[i] == 1
                        ? (mappedFree.popLast() ?? otherFree.popLast()) : (otherFree.popLast() ?? mappedFree.popLast())
                    assigned[i].append(try usable(name))
                }
            }
            var slabs: [UnsafeSharedMemoryFile] = []
            for i in segments.indices {
                segments[i].slabs = assigned[i]
                slabs.append(try mapSegment(assigned[i]))
            }

            try FileSystem.makeDirectory(path)
            let lock = Glibc.open(path + "/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard lock >= 0, flock(lock, LOCK_EX | LOCK_NB) == 0 else {
                if lock >= 0 { close(lock) }
                FileSystem.removeTree(path)
                return nil
            }
            let meta = Meta(name: name, indexChecksum: indexChecksum, segments: segments, complete: false)
            do {
                try writeMeta(meta, to: path)
            } catch {
                close(lock)
                FileSystem.removeTree(path)
                throw error
            }
            return Reservation(path: path, meta: meta, slabs: slabs, lockDescriptor: lock)
        }
    }

    /// Runs `body` holding the cache's reservation lock, in this process and across processes
    /// (`DIR/.reserve.lock`): slabs change hands only under it.
    func withReserveLock<T>(_ body: () throws -> T) throws -> T {
        try reserving.withLock { _ in
            let guardFile = Glibc.open(directory + "/.reserve.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard guardFile >= 0 else { throw StoreError.system("cannot open \(directory)/.reserve.lock", "open") }
            defer { close(guardFile) }
            flock(guardFile, LOCK_EX)
            return try body()
        }
    }

    /// Allocates and maps the reservation's slab pages ahead of the load that fills them, on a
    /// thread of its own with `threads` threads under it, slab by slab in the order the load
    /// writes them; slabs already populated in this process are skipped. Populating keeps the
    /// data of pages the load has written, so it runs alongside the reads: a page fault per
    /// 4 KiB is taken off the reads' path, and nothing waits for it. Cancel it when the load ends.
    func startPopulating(_ reservation: Reservation, threads: Int) -> PopulateTask {
        populate(reservation.slabs, threads: threads)
    }

    /// Populates the mappings in `slabs` not yet populated in this process, in order, on a
    /// thread of its own with `threads` threads under it.
    @discardableResult
    func populate(_ slabs: [UnsafeSharedMemoryFile], threads: Int) -> PopulateTask {
        let task = PopulateTask()
        guard slabs.contains(where: { !$0.populated.load(ordering: .relaxed) }) else {
            task.finish()
            return task
        }
        let thread = Thread {
            for slab in slabs where !slab.populated.load(ordering: .relaxed) {
                guard !task.isCancelled else { break }
                MemoryPopulation.populate(slab.base, byteCount: slab.byteCount, threads: threads)
                slab.populated.store(true, ordering: .relaxed)
            }
            task.finish()
        }
        thread.name = "sllm-populate"
        thread.start()
        return task
    }

    /// A background population: cancellable, and awaitable for tests and benchmarks.
    final class PopulateTask: Sendable {
        private let cancelled = Atomic<Bool>(false)
        private let finished = DispatchSemaphore(value: 0)

        var isCancelled: Bool { cancelled.load(ordering: .relaxed) }
        func cancel() { cancelled.store(true, ordering: .relaxed) }
        fileprivate func finish() { finished.signal() }
        /// Blocks until the population has stopped (done or cancelled).
        func wait() {
            finished.wait()
            finished.signal()
        }
    }

    /// Publishes a filled, verified entry and turns the reservation into a pin.
    func commit(_ reservation: Reservation) throws -> Pin {
        var meta = reservation.meta
        meta.complete = true
        try writeMeta(meta, to: reservation.path)
        flock(reservation.lockDescriptor, LOCK_SH)
        return Pin(segments: meta.segments, slabs: reservation.slabs, lockDescriptor: reservation.lockDescriptor)
    }

    /// Drops a reservation that was not filled (error or cancellation); its slabs return to the pool.
    func discard(_ reservation: Reservation) {
        FileSystem.removeTree(reservation.path)
        close(reservation.lockDescriptor)
    }

    // MARK: - Slabs

    /// Creates a slab file of the standard size, not mapped; returns its name. The file is sized
    /// under a dot name and then renamed, so a slab's name always tells its size (`slabSize`);
    /// a dot file left by a crash is a stray that `reclaim` deletes.
    private func createSlabFile() throws -> String {
        let name = "s\(slabBytes >> 12)-" + FileSystem.randomSuffix()
        let path = slabsDirectory + "/" + name
        let partial = slabsDirectory + "/.new-" + name
        let fd = Glibc.open(partial, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError.system("cannot create \(partial)", "open") }
        defer { close(fd) }
        guard ftruncate(fd, off_t(slabBytes)) == 0 else {
            let failure = Errno(errno, operation: "ftruncate")
            unlink(partial)
            throw StoreError(.io, "cannot size \(partial) to \(slabBytes) bytes: \(failure)")
        }
        do {
            try FileSystem.rename(partial, to: path)
        } catch {
            unlink(partial)
            throw error
        }
        return name
    }

    /// A slab's size: from its name (`s<pages>-…`, given only once the file has that size), or
    /// from the file for a name of another form. Reading names instead of sizes keeps a load's
    /// reservation from stat-ing every pooled slab (a few hundred for a budget of gigabytes).
    private func slabSize(_ name: String) -> Int {
        if name.first == "s", let dash = name.firstIndex(of: "-"),
            let pages = Int(name[name.index(after: name.startIndex)..<dash]), pages > 0, pages <= Int.max >> 12
        {
            return pages << 12
        }
        return Int(FileSystem.fileSize(slabsDirectory + "/" + name) ?? 0)
    }

    /// A segment's memory in this process: its slab's mapping, or its slabs mapped one after
    /// another; mapped on first use and kept for the next user.
    private func mapSegment(_ names: [String]) throws -> UnsafeSharedMemoryFile {
        let key = names.joined(separator: "+")
        if let existing = mappings.withLock({ $0[key] }) { return existing }
        let file: UnsafeSharedMemoryFile
        if names.count == 1 {
            let path = slabsDirectory + "/" + names[0]
            guard let size = FileSystem.fileSize(path) else { throw StoreError(.notFound, "slab \(path) is missing") }
            guard size == Int64(slabSize(names[0])) else {
                throw StoreError(.io, "slab \(path) has \(size) bytes, not the \(slabSize(names[0])) its name says")
            }
            file = try UnsafeSharedMemoryFile.openWritable(path, byteCount: Int(size))
        } else {
            let paths = names.map { slabsDirectory + "/" + $0 }
            guard let size = FileSystem.fileSize(paths[0]) else {
                throw StoreError(.notFound, "slab \(paths[0]) is missing")
            }
            file = try UnsafeSharedMemoryFile.mapContiguous(paths, slabBytes: Int(size))
        }
        mappings.withLock { table in
            // A contiguous mapping sharing a slab with this one is stale (that slab changed
            // hands): forgotten here; whoever still pins it keeps it alive.
            if names.count > 1 {
                let members = Set(names)
                for other in table.keys
                where other.contains("+")
                    && other.split(separator: "+").contains(where: { members.contains(String($0)) })
                {
                    table[other] = nil
                }
            }
            table[key] = file
        }
        return file
    }

    /// The memory of a cached segment, mapped, after checking that each slab file still has the
    /// size it was mapped with and that they hold the whole segment. A slab truncated behind the
    /// cache's back (another process, a full disk) would raise SIGBUS on first touch; it is
    /// deleted and the lookup becomes a miss instead.
    func mapCheckedSegment(_ segment: Segment) throws -> UnsafeSharedMemoryFile {
        guard !segment.slabs.isEmpty else { throw StoreError(.io, "a segment of the entry has no slabs") }
        let mapping = try mapSegment(segment.slabs)
        let each = mapping.byteCount / segment.slabs.count
        for name in segment.slabs {
            let size = FileSystem.fileSize(slabsDirectory + "/" + name)
            guard size == Int64(each) else {
                deleteSlab(name)
                throw StoreError(
                    .io, "slab \(name) has \(size.map(String.init) ?? "no") bytes; it was mapped with \(each)")
            }
        }
        guard mapping.byteCount >= segment.byteCount else {
            throw StoreError(
                .io,
                "slabs \(segment.slabs.joined(separator: "+")) hold \(mapping.byteCount) bytes; the segment needs \(segment.byteCount)"
            )
        }
        return mapping
    }

    private func deleteSlab(_ name: String) {
        unlink(slabsDirectory + "/" + name)
        // The mappings die with their last user.
        mappings.withLock { table in
            for key in table.keys
            where key == name || (key.contains("+") && key.split(separator: "+").contains { $0 == name }) {
                table[key] = nil
            }
        }
    }

    private func slabNames() -> [String] {
        ((try? FileSystem.listDirectory(slabsDirectory)) ?? []).filter { !$0.hasPrefix(".") }
    }

    private func slabFileBytes() -> Int {
        slabNames().reduce(0) { $0 + slabSize($1) }
    }

    /// Slabs no entry references, with their sizes (entries left by dead loaders are cleared
    /// first), and the bytes of every slab file.
    private func freeSlabs() -> (free: [(name: String, size: Int)], fileBytes: Int) {
        var referenced = Set<String>()
        for key in (try? FileSystem.listDirectory(entriesDirectory)) ?? [] where key.hasPrefix(".removing-") {
            FileSystem.removeTree(entriesDirectory + "/" + key)  // an eviction interrupted after its rename
        }
        for key in (try? FileSystem.listDirectory(entriesDirectory)) ?? [] where !key.hasPrefix(".") {
            let path = entriesDirectory + "/" + key
            guard let meta = readMeta(path) else {
                _ = removeEntry(path)  // no meta: debris of a reservation that died
                continue
            }
            if !meta.complete && !isLocked(path) {
                _ = removeEntry(path)  // a loader died while filling it
                continue
            }
            meta.segments.forEach { referenced.formUnion($0.slabs) }
        }
        let slabs = slabNames().map { (name: $0, size: slabSize($0)) }
        return (slabs.filter { !referenced.contains($0.name) }, slabs.reduce(0) { $0 + $1.size })
    }

    /// The free slabs of the standard size, after deleting free slabs of any other size (left by
    /// an older slab size or cache format: no load can use them), and the bytes of the slab files
    /// left. Call under the reserve lock.
    private func standardFreeSlabs() -> (free: [String], fileBytes: Int) {
        var (free, fileBytes) = freeSlabs()
        var standard: [String] = []
        for slab in free {
            if slab.size == slabBytes {
                standard.append(slab.name)
            } else {
                deleteSlab(slab.name)
                fileBytes -= slab.size
            }
        }
        return (standard.sorted(), fileBytes)
    }

    /// Deletes pooled slabs nobody uses, giving their memory back. Returns the bytes freed.
    @discardableResult
    public func trimPool() -> Int {
        (try? withReserveLock {
            let free = freeSlabs().free
            free.forEach { deleteSlab($0.name) }
            return free.reduce(0) { $0 + $1.size }
        }) ?? 0
    }

    /// Gives back up to `bytes` of pooled slabs (memory pressure); returns the bytes freed.
    @discardableResult
    public func releasePooled(_ bytes: Int) -> Int {
        (try? withReserveLock {
            var freed = 0
            for slab in freeSlabs().free where freed < bytes {
                deleteSlab(slab.name)
                freed += slab.size
            }
            return freed
        }) ?? 0
    }

    /// Adds one standard slab to the pool when the slab files stay within `limit` bytes (and the
    /// budget), and returns its mapping, not yet populated; nil when there is no room.
    func addPooledSlab(limit: Int) throws -> UnsafeSharedMemoryFile? {
        try withReserveLock { () -> UnsafeSharedMemoryFile? in
            guard slabFileBytes() + slabBytes <= min(limit, budgetBytes) else { return nil }
            return try mapSegment([try createSlabFile()])
        }
    }

    /// Where the cache's shared memory goes, from its files alone (nothing is changed).
    public struct Usage: Sendable, Equatable {
        /// Slab bytes held by entries: complete ones, and ones a live loader is filling.
        public var entryBytes = 0
        /// Free slabs of the standard size, allocated and ready for the next load.
        public var pooledBytes = 0
        /// Slab bytes that belong to neither: held by entries whose loader died mid-load, slabs of
        /// another size, stray files. `reclaim()` returns them.
        public var orphanBytes = 0
        public var totalBytes: Int { entryBytes + pooledBytes + orphanBytes }
    }

    /// The cache's memory by owner. Reads only: `sllm store status` shows it as it is.
    public func usage() -> Usage {
        var held = Set<String>()
        var dead = Set<String>()
        for key in (try? FileSystem.listDirectory(entriesDirectory)) ?? [] where !key.hasPrefix(".") {
            let path = entriesDirectory + "/" + key
            guard let meta = readMeta(path) else { continue }
            let slabs = meta.segments.flatMap(\.slabs)
            if meta.complete || isLocked(path) { held.formUnion(slabs) } else { dead.formUnion(slabs) }
        }
        var usage = Usage()
        for name in (try? FileSystem.listDirectory(slabsDirectory)) ?? [] {
            let size = Int(FileSystem.fileSize(slabsDirectory + "/" + name) ?? 0)
            if held.contains(name) {
                usage.entryBytes += size
            } else if !dead.contains(name) && !name.hasPrefix(".") && size == slabBytes {
                usage.pooledBytes += size
            } else {
                usage.orphanBytes += size
            }
        }
        return usage
    }

    /// Returns what crashed processes left: entries whose loader died (their slabs go back to
    /// the pool), slabs of another size and stray files (deleted); then trims the pool to the
    /// budget. Returns the orphaned bytes there were.
    @discardableResult
    public func reclaim() -> Int {
        let orphaned = usage().orphanBytes
        _ = try? withReserveLock {
            _ = standardFreeSlabs()
            for name in (try? FileSystem.listDirectory(slabsDirectory)) ?? [] where name.hasPrefix(".") {
                unlink(slabsDirectory + "/" + name)
            }
            var free = standardFreeSlabs().free
            while slabFileBytes() > budgetBytes, let victim = free.popLast() { deleteSlab(victim) }
        }
        if orphaned > 0 {
            logger.info(
                "reclaimed shared memory left by a process that died mid-load", metadata: ["bytes": "\(orphaned)"])
        }
        return orphaned
    }

    // MARK: - Entry files

    /// A shared lock on the entry at `path` (its users hold one; eviction needs an exclusive
    /// one), or nil when the entry is missing or being filled or removed. Closing the
    /// descriptor releases it.
    func sharedLock(_ path: String) -> Int32? {
        let lock = Glibc.open(path + "/lock", O_RDONLY | O_CLOEXEC)
        guard lock >= 0 else { return nil }
        // An exclusive holder is a removal (the entry goes) or a probe of whether anyone holds
        // the entry (`isLocked`, `sllm store status`), which lets go at once: a few tries ride
        // out a probe, so a status call never turns a hit into a cold load.
        var tries = 1
        while flock(lock, LOCK_SH | LOCK_NB) != 0 {
            guard tries < 10 else {
                close(lock)
                return nil
            }
            tries += 1
            usleep(500)
        }
        // The lock must still be the entry's: a removal may have renamed and deleted the entry
        // between the open and the lock, and its slabs may already serve another model.
        var held = stat()
        var current = stat()
        guard fstat(lock, &held) == 0, stat(path + "/lock", &current) == 0, held.st_ino == current.st_ino,
            held.st_dev == current.st_dev
        else {
            close(lock)
            return nil
        }
        return lock
    }

    private func isLocked(_ path: String) -> Bool {
        let lock = Glibc.open(path + "/lock", O_RDWR | O_CLOEXEC)
        guard lock >= 0 else { return false }
        defer { close(lock) }
        return flock(lock, LOCK_EX | LOCK_NB) != 0
    }

    /// How long a removal that must happen (a damaged entry, an explicit eviction) waits for the
    /// entry's lock. A lock its holder has just let go can stay held for a moment: a process
    /// spawned at that instant shares the lock's open file until its `exec` closes it.
    static let releasePatience: Duration = .milliseconds(50)

    /// Removes an entry unless someone holds it (its slabs return to the pool), waiting up to
    /// `patience` for a holder to let go. Returns whether it is gone.
    func removeEntry(_ path: String, patience: Duration = .zero) -> Bool {
        let lock = Glibc.open(path + "/lock", O_RDWR | O_CLOEXEC)
        if lock >= 0 {
            defer { close(lock) }
            let deadline = ContinuousClock.now + patience
            while flock(lock, LOCK_EX | LOCK_NB) != 0 {
                guard ContinuousClock.now < deadline else { return false }
                usleep(1000)
            }
            let trash = entriesDirectory + "/.removing-" + FileSystem.randomSuffix()
            guard Glibc.rename(path, trash) == 0 else { return false }
            FileSystem.removeTree(trash)
            return true
        }
        FileSystem.removeTree(path)
        return true
    }

    /// Takes a damaged or corrupt entry out of use: removed, or, while someone still holds it,
    /// marked incomplete so no later lookup hits it (it goes once released). Returns whether it
    /// was removed.
    @discardableResult
    func drop(_ path: String, _ meta: Meta) -> Bool {
        guard !removeEntry(path, patience: Self.releasePatience) else { return true }
        var incomplete = meta
        incomplete.complete = false
        try? writeMeta(incomplete, to: path)
        return false
    }

    func writeMeta(_ meta: Meta, to path: String) throws {
        let data = try JSONEncoder().encode(meta)
        let temporary = path + "/meta.json.tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: data) else {
            throw StoreError(.io, "cannot write \(temporary)")
        }
        try FileSystem.rename(temporary, to: path + "/meta.json")
    }

    func readMeta(_ path: String) -> Meta? {
        guard let data = FileManager.default.contents(atPath: path + "/meta.json") else { return nil }
        return try? JSONDecoder().decode(Meta.self, from: data)
    }

    // MARK: - Status

    /// One entry as `sllm store status` shows it.
    public struct Entry: Sendable {
        public var key: String
        public var name: String
        /// Bytes of its segments.
        public var bytes: Int
        public var complete: Bool
        public var pinned: Bool
        public var lastUse: Double
    }

    /// Every entry, complete or being filled.
    public func listEntries() -> [Entry] {
        ((try? FileSystem.listDirectory(entriesDirectory)) ?? []).filter { !$0.hasPrefix(".") }.compactMap { key in
            let path = entriesDirectory + "/" + key
            guard let meta = readMeta(path) else { return nil }
            return Entry(
                key: key, name: meta.name, bytes: meta.segments.reduce(0) { $0 + $1.byteCount },
                complete: meta.complete,
                pinned: isLocked(path), lastUse: FileSystem.modificationTime(path + "/lock") ?? 0)
        }
    }

    /// Bytes of shared memory the cache holds: slabs in use and pooled.
    public var usedBytes: Int { slabFileBytes() }

    /// Bytes of pooled slabs no model uses.
    public var pooledBytes: Int { usage().pooledBytes }

    /// Hits and misses of lookups in this process.
    public var hitsAndMisses: (hits: Int, misses: Int) { counters.withLock { ($0.hits, $0.misses) } }

    /// Hits and misses of every process using this cache directory.
    public var sharedHitsAndMisses: (hits: Int, misses: Int) {
        guard let counters = sharedCounters?.base.assumingMemoryBound(to: UInt64.self) else { return (0, 0) }
        return (Int(sllm_atomic_load_u64(counters)), Int(sllm_atomic_load_u64(counters + 1)))
    }

    /// Counts a lookup here and in the shared counters (one atomic add, no file I/O).
    private func record(hit: Bool) {
        counters.withLock { hit ? ($0.hits += 1) : ($0.misses += 1) }
        if let counters = sharedCounters?.base.assumingMemoryBound(to: UInt64.self) {
            _ = sllm_atomic_add_u64(counters + (hit ? 0 : 1), 1)
        }
    }

    /// Evicts every entry of `name` that nobody uses; its slabs go back to the pool, or are
    /// deleted with `releaseMemory`. Returns the bytes of the entries evicted.
    /// - Throws: `StoreError` when an entry of `name` is in use.
    @discardableResult
    public func evict(name: String, releaseMemory: Bool = false) throws -> Int {
        var freed = 0
        for entry in listEntries() where entry.name == name {
            guard removeEntry(entriesDirectory + "/" + entry.key, patience: Self.releasePatience) else {
                throw StoreError(.io, "model `\(name)` is in use and cannot be evicted from DRAM")
            }
            freed += entry.bytes
        }
        if releaseMemory { trimPool() }
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
}
