import AsyncHTTPClient
public import Checkpoint
public import Foundation
public import Logging
import NIOCore
import NIOHTTP1
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Downloads one file over HTTP(S) with parallel range requests, resumably.
///
/// Data goes to `PATH.partial`; which pieces are complete is kept in `PATH.partial.json`, so an
/// interrupted download continues where it stopped (if the server still reports the same size
/// and ETag). Only when every piece is in, and the SHA-256 matches when one is given, is the file
/// renamed to `PATH`. A server without range support gets one streaming request.
public struct HTTPDownloader: Sendable {
    /// Bytes per range request.
    public var pieceSize: Int = 8 << 20
    /// Range requests in flight at once.
    public var concurrency: Int = 4
    /// Attempts per piece before the download fails (left resumable).
    public var attempts: Int = 3
    /// Longest wait for the next bytes of a response (a server that sends its headers and then
    /// stalls fails the read instead of hanging the pull).
    public var readTimeout: Duration = .seconds(30)
    public var logger: Logger

    public init(logger: Logger = Logger(label: "sllm.download")) {
        self.logger = logger
    }

    struct State: Codable {
        var url: String
        var size: Int64
        var etag: String?
        var pieceSize: Int
        var done: [Bool]
    }

    /// Downloads `url` to `path`.
    ///
    /// - Returns: the size in bytes.
    /// - Throws: `StoreError` with code `download` (HTTP status, connection lost after retries,
    ///   short body) or `checksumMismatch`. The `.partial` files stay for a later resume, except
    ///   after a checksum mismatch, when they are removed.
    @discardableResult
    public func download(
        from url: URL, to path: String, sha256: String? = nil, progress: ProgressHandler? = nil
    ) async throws -> Int64 {
        let partial = path + ".partial"
        let statePath = partial + ".json"
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .seconds(10)
        configuration.timeout.read = .nanoseconds(
            Int64(readTimeout.components.seconds) * 1_000_000_000 + readTimeout.components.attoseconds / 1_000_000_000)
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        defer { client.shutdown { _ in } }

        var probe = HTTPClientRequest(url: url.absoluteString)
        probe.headers.add(name: "Range", value: "bytes=0-0")
        let response = try await execute(probe, client: client, what: "request")
        let size: Int64
        let ranged: Bool
        if response.status == .partialContent,
            let total = response.headers.first(name: "Content-Range")?.split(separator: "/").last.flatMap({ Int64($0) })
        {
            size = total
            ranged = true
            _ = try? await response.body.collect(upTo: 1024)
        } else if response.status == .ok {
            size = response.headers.first(name: "Content-Length").flatMap { Int64($0) } ?? -1
            ranged = false
            try await streamWhole(response, to: partial, size: size, progress: progress)
        } else {
            // 404 and 410 will not change on a retry: the source is gone for good.
            let code: StoreError.Code = [404, 410].contains(response.status.code) ? .notFound : .download
            throw StoreError(
                code, "GET \(url.absoluteString) answered \(response.status.code) \(response.status.reasonPhrase)")
        }

        if ranged {
            let etag = response.headers.first(name: "ETag")
            let pieces = Int((size + Int64(pieceSize) - 1) / Int64(pieceSize))
            var state = State(
                url: url.absoluteString, size: size, etag: etag, pieceSize: pieceSize,
                done: Array(repeating: false, count: pieces))
            if let data = FileManager.default.contents(atPath: statePath),
                let saved = try? JSONDecoder().decode(State.self, from: data),
                saved.url == state.url, saved.size == size, saved.etag == etag, saved.pieceSize == pieceSize,
                saved.done.count == pieces, FileSystem.fileSize(partial) == size
            {
                state = saved
                logger.info(
                    "resuming download",
                    metadata: ["url": "\(url)", "piecesDone": "\(saved.done.filter { $0 }.count)/\(pieces)"])
            } else {
                FileSystem.removeTree(partial)
                FileSystem.removeTree(statePath)
            }
            try await fetchPieces(
                url: url, partial: partial, statePath: statePath, state: state, client: client, progress: progress)
        }

        if let sha256 {
            let actual = try await runBlocking { try sha256Hex(ofFileAt: partial) }
            guard actual == sha256.lowercased() else {
                FileSystem.removeTree(partial)
                FileSystem.removeTree(statePath)
                throw StoreError(.checksumMismatch, "\(url.absoluteString): SHA-256 is \(actual), expected \(sha256)")
            }
        }
        try FileSystem.rename(partial, to: path)
        FileSystem.removeTree(statePath)
        return FileSystem.fileSize(path) ?? size
    }

    private func execute(_ request: HTTPClientRequest, client: HTTPClient, what: String) async throws
        -> HTTPClientResponse
    {
        do {
            return try await client.execute(request, timeout: .seconds(60))
        } catch {
            throw StoreError(.download, "\(what) to \(request.url) failed: \(error)")
        }
    }

    private func streamWhole(
        _ response: HTTPClientResponse, to partial: String, size: Int64, progress: ProgressHandler?
    ) async throws {
        FileSystem.removeTree(partial)
        let file = try openForWriting(partial)
        var offset: Int64 = 0
        do {
            for try await buffer in response.body {
                try Task.checkCancellation()
                try buffer.withUnsafeReadableBytes { try file.write($0, at: offset) }
                offset += Int64(buffer.readableBytes)
                progress?(Progress(phase: "download", completedBytes: offset, totalBytes: max(size, 0)))
            }
        } catch let error as CancellationError {
            throw error
        } catch {
            throw StoreError(
                .download,
                "download of \(response.headers.first(name: "Content-Location") ?? partial) broke off after \(offset) bytes: \(error)"
            )
        }
        guard size < 0 || offset == size else {
            throw StoreError(.download, "download ended after \(offset) of \(size) bytes")
        }
    }

    private func fetchPieces(
        url: URL, partial: String, statePath: String, state initial: State, client: HTTPClient,
        progress: ProgressHandler?
    ) async throws {
        let file = try openForWriting(partial)
        guard ftruncate(file.fd, off_t(initial.size)) == 0 else {
            throw StoreError.system("cannot size \(partial) to \(initial.size) bytes", "ftruncate")
        }
        let alreadyDone = Int64(
            initial.done.enumerated().filter { $0.element }.reduce(0) { $0 + pieceLength($1.offset, initial) })
        let shared = PieceTracker(state: initial, received: alreadyDone)
        let pending = initial.done.indices.filter { !initial.done[$0] }
        let fileBox = SendableFile(file)

        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            func startNext() {
                guard next < pending.count else { return }
                let piece = pending[next]
                next += 1
                group.addTask {
                    try await fetchPiece(piece, url: url, file: fileBox, state: initial, client: client) { count in
                        let received = shared.value.withLock { value in
                            value.received += Int64(count)
                            return value.received
                        }
                        progress?(Progress(phase: "download", completedBytes: received, totalBytes: initial.size))
                    }
                    try fileBox.file.sync()
                    shared.value.withLock { $0.state.done[piece] = true }
                    // One save at a time, each of the newest state: saves that raced once left
                    // an older record on disk than one already written.
                    try shared.saving.withLock { _ in try save(shared.value.withLock { $0.state }, to: statePath) }
                }
            }
            for _ in 0..<concurrency { startNext() }
            while try await group.next() != nil { startNext() }
        }
    }

    private func fetchPiece(
        _ piece: Int, url: URL, file: SendableFile, state: State, client: HTTPClient, received: @Sendable (Int) -> Void
    ) async throws {
        let start = Int64(piece) * Int64(state.pieceSize)
        let length = pieceLength(piece, state)
        do {
            try await RangeRequest.fetch(
                url, start: start, length: length, client: client, attempts: attempts, backoff: .milliseconds(100)
            ) { offset, bytes in
                try file.file.write(bytes, at: start + offset)
                received(bytes.count)
            } failed: { attempt, receivedBytes, error in
                received(-Int(receivedBytes))
                logger.warning(
                    "piece failed, retrying",
                    metadata: ["piece": "\(piece)", "attempt": "\(attempt)", "error": "\(error)"])
            }
        } catch let error as CancellationError {
            throw error
        } catch {
            throw StoreError(
                .download,
                "\(url.absoluteString): bytes \(start)-\(start + length - 1) failed \(attempts) times (last: \(error)); run the pull again to resume"
            )
        }
    }

    private func pieceLength(_ piece: Int, _ state: State) -> Int64 {
        let start = Int64(piece) * Int64(state.pieceSize)
        return min(Int64(state.pieceSize), state.size - start)
    }

    private func save(_ state: State, to path: String) throws {
        let data = try JSONEncoder().encode(state)
        let temporary = path + ".tmp-" + FileSystem.randomSuffix()
        guard FileManager.default.createFile(atPath: temporary, contents: data) else {
            throw StoreError(.io, "cannot write \(temporary)")
        }
        try FileSystem.rename(temporary, to: path)
    }

    private func openForWriting(_ path: String) throws -> Checkpoint.FileHandle {
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw StoreError.system("cannot open \(path)", "open") }
        return Checkpoint.FileHandle(fd: fd, path: path)
    }
}

/// Download state shared by the piece tasks; the mutex makes it Sendable.
private final class PieceTracker: Sendable {
    let value: Mutex<(state: HTTPDownloader.State, received: Int64)>
    let saving = Mutex(())
    init(state: HTTPDownloader.State, received: Int64) { value = Mutex((state, received)) }
}

/// A file written by several piece tasks at disjoint offsets through `pwrite`, which is thread-safe.
private struct SendableFile: @unchecked Sendable {
    let file: Checkpoint.FileHandle
    init(_ file: Checkpoint.FileHandle) { self.file = file }
}
