import Crypto
import Foundation
import TestSupport
import Testing

@testable import Checkpoint
@testable import Store

@Suite(.serialized) struct HTTPDownloaderTests {
    static let payload: [UInt8] = (0..<(3 << 20) + 12345).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }
    static var sha256: String { SHA256.hash(data: payload).map { String(format: "%02x", $0) }.joined() }

    func withServer(_ body: (RangeHTTPServer, TemporaryDirectory) async throws -> Void) async throws {
        let server = RangeHTTPServer()
        server.add("model.gguf", Self.payload)
        try server.start()
        let directory = try TemporaryDirectory("download")
        defer {
            server.stop()
            directory.remove()
        }
        try await body(server, directory)
    }

    func downloader() -> HTTPDownloader {
        var downloader = HTTPDownloader()
        downloader.pieceSize = 256 << 10
        downloader.concurrency = 4
        return downloader
    }

    /// A server that sends its headers and then nothing fails the read after `readTimeout`
    /// (it hung for ever), keeping what arrived for a resume.
    @Test func aStalledServerFailsTheReadInsteadOfHanging() async throws {
        try await withServer { server, directory in
            server.stall(afterTotalBytes: 1 << 20)
            var stalled = downloader()
            stalled.readTimeout = .seconds(1)
            stalled.attempts = 1
            await #expect {
                try await stalled.download(from: server.url("model.gguf"), to: directory.file("model.gguf"))
            } throws: { error in
                (error as? StoreError)?.code == .download
            }
            // Nothing that looks whole is left behind.
            #expect(!directoryEntries(directory.path).contains("model.gguf"))
            server.stall(afterTotalBytes: nil)
            let size = try await downloader().download(
                from: server.url("model.gguf"), to: directory.file("model.gguf"), sha256: Self.sha256)
            #expect(size == Int64(Self.payload.count))
        }
    }

    @Test func aMissingFileIsNotFoundForGood() async throws {
        try await withServer { server, directory in
            await #expect {
                try await downloader().download(from: server.url("nothing.gguf"), to: directory.file("x"))
            } throws: { error in
                (error as? StoreError)?.code == .notFound && (error as? StoreError)?.message.contains("404") == true
            }
        }
    }

    @Test func parallelRangesReassembleTheFile() async throws {
        try await withServer { server, directory in
            let path = directory.file("model.gguf")
            let size = try await downloader().download(from: server.url("model.gguf"), to: path, sha256: Self.sha256)
            #expect(size == Int64(Self.payload.count))
            #expect(try readFile(path) == Self.payload)
            #expect(server.requests > 10)
            #expect(directoryEntries(directory.path) == ["model.gguf"])
        }
    }

    @Test func aServerWithoutRangesIsStreamedWhole() async throws {
        try await withServer { server, directory in
            server.rangesSupported = false
            let path = directory.file("model.gguf")
            try await downloader().download(from: server.url("model.gguf"), to: path)
            #expect(try readFile(path) == Self.payload)
            #expect(server.requests == 1)
        }
    }

    @Test func droppedConnectionsAreRetried() async throws {
        try await withServer { server, directory in
            server.breakConnections(count: 3, afterBytes: 1000)
            let path = directory.file("model.gguf")
            try await downloader().download(from: server.url("model.gguf"), to: path, sha256: Self.sha256)
            #expect(try readFile(path) == Self.payload)
        }
    }

    @Test func aFailedDownloadResumesWithoutRefetchingDonePieces() async throws {
        try await withServer { server, directory in
            let path = directory.file("model.gguf")
            var flaky = downloader()
            flaky.concurrency = 1
            flaky.attempts = 1
            // After 4 pieces every connection breaks.
            server.breakConnections(afterTotalBytes: 4 * flaky.pieceSize)
            let pieces = (Self.payload.count + flaky.pieceSize - 1) / flaky.pieceSize
            await #expect(throws: StoreError.self) {
                try await flaky.download(from: server.url("model.gguf"), to: path)
            }
            #expect(!FileSystem.exists(path))
            #expect(FileSystem.exists(path + ".partial"))
            #expect(FileSystem.exists(path + ".partial.json"))

            server.breakConnections(afterTotalBytes: nil)
            let before = server.bytesServed
            try await downloader().download(from: server.url("model.gguf"), to: path, sha256: Self.sha256)
            #expect(try readFile(path) == Self.payload)
            let refetched = server.bytesServed - before
            #expect(
                refetched < Self.payload.count - 3 * flaky.pieceSize,
                "fetched \(refetched) of \(Self.payload.count) again (\(pieces) pieces)")
            #expect(!FileSystem.exists(path + ".partial.json"))
        }
    }

    /// Pieces finishing together each record their progress; a record written later never
    /// carries fewer pieces than one written before it (out-of-order saves once left a resume
    /// refetching pieces it had, and failed `aKilledDownloadResumes` on a loaded machine).
    @Test func theRecordOfDonePiecesNeverGoesBackwards() async throws {
        try await withServer { server, directory in
            let path = directory.file("model.gguf")
            var many = downloader()
            many.pieceSize = 16 << 10
            many.concurrency = 16
            many.attempts = 1
            many.readTimeout = .seconds(3)
            // The 1-byte probe and then 128 whole pieces are sent; every later request stalls.
            server.stall(afterTotalBytes: 128 * many.pieceSize)
            await #expect(throws: StoreError.self) {
                try await many.download(from: server.url("model.gguf"), to: path)
            }
            let served = (server.bytesServed - 1) / many.pieceSize
            #expect(served == 128)
            let data = try #require(FileManager.default.contents(atPath: path + ".partial.json"))
            let state = try JSONDecoder().decode(HTTPDownloader.State.self, from: data)
            #expect(state.done.filter { $0 }.count == served)
        }
    }

    @Test func aChecksumMismatchLeavesNothing() async throws {
        try await withServer { server, directory in
            let path = directory.file("model.gguf")
            let error = await #expect(throws: StoreError.self) {
                try await downloader().download(
                    from: server.url("model.gguf"), to: path, sha256: String(repeating: "0", count: 64))
            }
            #expect(error?.code == .checksumMismatch)
            #expect(directoryEntries(directory.path).isEmpty)
        }
    }

    @Test func aMissingFileIsAnHTTPError() async throws {
        try await withServer { server, directory in
            let error = await #expect(throws: StoreError.self) {
                try await downloader().download(from: server.url("nope.gguf"), to: directory.file("x"))
            }
            #expect(error?.description.contains("404") == true)
        }
    }
}
