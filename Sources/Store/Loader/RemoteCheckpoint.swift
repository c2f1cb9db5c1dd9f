import AsyncHTTPClient
import Checkpoint
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A checkpoint being fetched from a remote store (`BASE/NAME/index`, `BASE/NAME/data-0000`, …:
/// any HTTP server with range support over a data directory's `models/`, or another node).
///
/// The index and small files come first, into a hidden directory in the local store. Then the
/// loader's reader threads fetch partition chunks with range requests straight into the
/// destination memory, and each verified chunk is also written to the SSD file, so a remote cold
/// start streams into memory while it fills the SSD tier. `install()` publishes the checkpoint
/// in the store (atomic rename) once every byte is in and verified; `abandon()` removes it.
final class RemoteCheckpoint: Sendable {
    let reader: CheckpointReader
    let source: RemoteChunkSource
    let temporary: String
    let destination: String

    private init(reader: CheckpointReader, source: RemoteChunkSource, temporary: String, destination: String) {
        self.reader = reader
        self.source = source
        self.temporary = temporary
        self.destination = destination
    }

    static func open(_ name: ModelName, store: ModelStore, remotes: [URL], logger: Logger) async throws
        -> RemoteCheckpoint
    {
        var failures: [String] = []
        for base in remotes {
            let root = base.appendingPathComponent(name.rawValue)
            let indexURL = root.appendingPathComponent(CheckpointIndex.fileName)
            let indexBytes: [UInt8]
            do {
                guard let bytes = try await get(indexURL, limit: 1 << 28) else {
                    failures.append("\(indexURL.absoluteString): HTTP 404")
                    continue
                }
                indexBytes = bytes
            } catch {
                failures.append("\(indexURL.absoluteString): \(error)")
                continue
            }
            let index = try CheckpointIndex.decode(indexBytes, path: indexURL.absoluteString)

            try FileSystem.makeDirectories(store.modelsDirectory)
            let destination = store.directory(for: name)
            let temporary =
                store.modelsDirectory + "/." + name.rawValue + ".partial-\(getpid())-" + FileSystem.randomSuffix()
            try FileSystem.makeDirectory(temporary)
            do {
                for file in index.files {
                    let url = root.appendingPathComponent(file.name)
                    guard let bytes = try await get(url, limit: 64 << 20) else {
                        throw StoreError(.download, "\(url.absoluteString): HTTP 404")
                    }
                    guard bytes.count == file.byteCount, CRC32C.checksum(bytes) == file.crc32c else {
                        throw StoreError(
                            .checksumMismatch, "\(url.absoluteString) does not match its checksum in the index")
                    }
                    let handle = try Checkpoint.FileHandle.create(temporary + "/" + file.name)
                    try bytes.withUnsafeBytes { try handle.write($0, at: 0) }
                    try handle.sync()
                }
                var descriptors: [Int32] = []
                for partition in index.partitions {
                    let fd = Glibc.open(temporary + "/" + partition.file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
                    guard fd >= 0, ftruncate(fd, off_t(partition.byteCount)) == 0 else {
                        throw StoreError.system("cannot create \(temporary)/\(partition.file)", "open")
                    }
                    descriptors.append(fd)
                }
                let handle = try Checkpoint.FileHandle.create(temporary + "/" + CheckpointIndex.fileName)
                try indexBytes.withUnsafeBytes { try handle.write($0, at: 0) }
                let source = RemoteChunkSource(
                    urls: index.partitions.map { root.appendingPathComponent($0.file) }, descriptors: descriptors,
                    logger: logger)
                let reader = try CheckpointReader(directory: temporary)
                logger.info(
                    "fetching from a remote store", metadata: ["model": "\(name)", "remote": "\(base.absoluteString)"])
                return RemoteCheckpoint(reader: reader, source: source, temporary: temporary, destination: destination)
            } catch {
                FileSystem.removeTree(temporary)
                throw error
            }
        }
        throw StoreError(
            .notFound, "model `\(name)` is neither in the store nor on a remote (\(failures.joined(separator: "; ")))")
    }

    /// GETs a small file, retrying broken connections; nil on 404.
    private static func get(_ url: URL, limit: Int) async throws -> [UInt8]? {
        var lastError: (any Error)?
        for attempt in 1...3 {
            do {
                let response = try await HTTPClient.shared.execute(
                    HTTPClientRequest(url: url.absoluteString), timeout: .seconds(60))
                if response.status == .notFound { return nil }
                guard response.status == .ok else {
                    throw StoreError(.download, "\(url.absoluteString): HTTP \(response.status.code)")
                }
                return [UInt8](buffer: try await response.body.collect(upTo: limit))
            } catch let error as StoreError {
                throw error
            } catch {
                lastError = error
                try await Task.sleep(for: .milliseconds(50 * attempt))
            }
        }
        throw StoreError(.download, "\(url.absoluteString): \(lastError.map { "\($0)" } ?? "failed")")
    }

    /// fsyncs every file and renames the checkpoint into the store. Returns its reader there.
    func install() throws -> CheckpointReader {
        try source.syncAll()
        let index = Checkpoint.FileHandle(
            fd: Glibc.open(temporary + "/" + CheckpointIndex.fileName, O_RDONLY | O_CLOEXEC), path: temporary)
        try index.sync()
        try FileSystem.syncDirectory(temporary)
        if FileSystem.exists(destination) { FileSystem.removeTree(destination) }
        try FileSystem.rename(temporary, to: destination)
        try FileSystem.syncDirectory(FileSystem.directoryName(destination))
        return try CheckpointReader(directory: destination)
    }

    func abandon() { FileSystem.removeTree(temporary) }
}

/// Reads chunks with HTTP range requests (bridged to the reader threads, which block) and
/// writes each one to the SSD copy as well.
final class RemoteChunkSource: ChunkSource {
    let urls: [URL]
    private let descriptors: [Int32]
    private let logger: Logger
    var isDirect: Bool { false }

    init(urls: [URL], descriptors: [Int32], logger: Logger) {
        self.urls = urls
        self.descriptors = descriptors
        self.logger = logger
    }

    deinit { descriptors.forEach { close($0) } }

    func syncAll() throws {
        for fd in descriptors where fsync(fd) != 0 {
            throw StoreError.system("fsync failed", "fsync")
        }
    }

    func read(partition: Int, offset: Int, length: Int, into destination: UnsafeMutableRawPointer) throws {
        let url = urls[partition]
        let target = UncheckedSendable(destination)
        let outcome = Mutex<Result<Void, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            do {
                try await RangeRequest.fetch(
                    url, start: Int64(offset), length: Int64(length), attempts: 3, backoff: .milliseconds(50)
                ) { at, bytes in
                    (target.value + Int(at)).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
                }
                outcome.withLock { $0 = .success(()) }
            } catch {
                outcome.withLock { $0 = .failure(error) }
            }
            done.signal()
        }
        done.wait()
        try outcome.withLock { $0! }.get()
        var written = 0
        while written < length {
            let n = pwrite(descriptors[partition], destination + written, length - written, off_t(offset + written))
            guard n > 0 else { throw StoreError.system("write to the local store failed", "pwrite") }
            written += n
        }
    }
}
