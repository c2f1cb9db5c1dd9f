import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// One byte range of a remote file, fetched with HTTP range requests and retried when a request
/// fails or a connection breaks: what the downloader (into a file) and the remote checkpoint
/// tier (into memory) both need.
enum RangeRequest {
    /// Fetches bytes `start ..< start + length` of `url`.
    ///
    /// Every attempt starts the range over: `sink(offsetInRange, bytes)` receives each buffer in
    /// order, and when an attempt fails after `received` bytes, `failed(attempt, received, error)`
    /// runs before the next one (so a caller can roll back progress or log). Cancellation ends it
    /// at once.
    ///
    /// - Throws: the last attempt's error after `attempts` failures, or `CancellationError`.
    static func fetch(
        _ url: URL, start: Int64, length: Int64, client: HTTPClient = .shared,
        headers: [(name: String, value: String)] = [],
        attempts: Int, backoff: Duration,
        sink: (Int64, UnsafeRawBufferPointer) throws -> Void,
        failed: (_ attempt: Int, _ received: Int64, _ error: any Error) -> Void = { _, _, _ in }
    ) async throws {
        var lastError: any Error = StoreError(.download, "\(url.absoluteString): no attempt was made")
        for attempt in 1...max(1, attempts) {
            try Task.checkCancellation()
            var request = HTTPClientRequest(url: url.absoluteString)
            for header in headers { request.headers.add(name: header.name, value: header.value) }
            request.headers.add(name: "Range", value: "bytes=\(start)-\(start + length - 1)")
            var received: Int64 = 0
            do {
                let response = try await client.execute(request, timeout: .seconds(120))
                guard response.status == .partialContent else {
                    throw StoreError(.download, "\(url.absoluteString): range request answered \(response.status.code)")
                }
                for try await buffer in response.body {
                    let count = Int(min(Int64(buffer.readableBytes), length - received))
                    if count == 0 { continue }
                    try buffer.withUnsafeReadableBytes {
                        try sink(received, UnsafeRawBufferPointer(rebasing: $0[0..<count]))
                    }
                    received += Int64(count)
                }
                guard received == length else {
                    throw StoreError(.download, "\(url.absoluteString): got \(received) of \(length) bytes at \(start)")
                }
                return
            } catch let error as CancellationError {
                throw error
            } catch {
                lastError = error
                failed(attempt, received, error)
                if attempt < attempts { try await Task.sleep(for: backoff * attempt) }
            }
        }
        throw lastError
    }
}
