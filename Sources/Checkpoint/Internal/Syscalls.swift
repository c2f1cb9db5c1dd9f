import CKernels

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// `O_DIRECT`, which Swift's Glibc module does not export.
package let openDirect: Int32 = sllm_o_direct()

/// Thin wrappers over the system calls that write checkpoints. Tests replace `write` to inject
/// failures such as `ENOSPC` at a chosen byte (see `CheckpointWriter.systemCalls`).
package struct SystemCalls: Sendable {
    /// `pwrite(2)`: returns bytes written or -1 with `errno` set.
    package var pwrite: @Sendable (Int32, UnsafeRawPointer, Int, Int64) -> Int

    package static let live = SystemCalls(pwrite: { fd, buffer, count, offset in
        Glibc.pwrite(fd, buffer, count, off_t(offset))
    })

    package init(pwrite: @escaping @Sendable (Int32, UnsafeRawPointer, Int, Int64) -> Int) {
        self.pwrite = pwrite
    }
}

/// A file descriptor that closes itself. Not shared across threads.
package final class FileHandle {
    package let fd: Int32
    package let path: String

    package init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }

    /// Opens `path` read-only.
    package static func openForReading(_ path: String) throws(CheckpointError) -> FileHandle {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let error = Errno.current("open \(path)")
            if error.rawValue == ENOENT { throw CheckpointError(.notFound, "no such file: \(path)", cause: error) }
            throw CheckpointError(.io, "cannot open \(path)", cause: error)
        }
        return FileHandle(fd: fd, path: path)
    }

    /// Creates `path`, failing if it exists.
    package static func create(_ path: String) throws(CheckpointError) -> FileHandle {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CheckpointError(.io, "cannot create \(path)", cause: Errno.current("open")) }
        return FileHandle(fd: fd, path: path)
    }

    /// The file's size in bytes.
    package func size() throws(CheckpointError) -> Int64 {
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw CheckpointError(.io, "cannot stat \(path)", cause: Errno.current("fstat"))
        }
        return Int64(info.st_size)
    }

    /// Reads exactly `count` bytes at `offset` into `buffer`; a short file is an `invalidFormat` error.
    package func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int64) throws(CheckpointError) {
        var done = 0
        while done < count {
            let n = pread(fd, buffer + done, count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw CheckpointError(
                    .io, "read failed in \(path) at offset \(offset + Int64(done))", cause: Errno.current("pread"))
            }
            if n == 0 {
                throw CheckpointError(
                    .invalidFormat,
                    "\(path) ends at byte \(offset + Int64(done)) but \(count - done) more bytes were expected (truncated file?)"
                )
            }
            done += n
        }
    }

    /// Reads `count` bytes at `offset` into a new array.
    package func readBytes(count: Int, at offset: Int64) throws(CheckpointError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        do {
            try bytes.withUnsafeMutableBytes { buffer in
                guard let base = buffer.baseAddress else { return }
                try read(into: base, count: count, at: offset)
            }
        } catch let error as CheckpointError {
            throw error
        } catch {
            throw CheckpointError(.io, "read failed in \(path)")
        }
        return bytes
    }

    /// Writes all of `buffer` at `offset` through `calls`.
    package func write(
        _ buffer: UnsafeRawBufferPointer, at offset: Int64, calls: SystemCalls = .live
    ) throws(CheckpointError) {
        guard let base = buffer.baseAddress else { return }
        var done = 0
        while done < buffer.count {
            let n = calls.pwrite(fd, base + done, buffer.count - done, offset + Int64(done))
            if n < 0 {
                if errno == EINTR { continue }
                let error = Errno.current("pwrite")
                if error.rawValue == ENOSPC {
                    throw CheckpointError(.io, "no space left on device while writing \(path)", cause: error)
                }
                throw CheckpointError(.io, "write failed in \(path)", cause: error)
            }
            done += n
        }
    }

    /// `fsync(2)`.
    package func sync() throws(CheckpointError) {
        guard fsync(fd) == 0 else {
            throw CheckpointError(.io, "fsync failed for \(path)", cause: Errno.current("fsync"))
        }
    }
}

/// File-system helpers used by the writer and the store.
package enum FileSystem {
    /// Sets close-on-exec on every open descriptor above 2, so child processes (`pip`, the
    /// runtime's crash reporter) inherit no socket: the networking library opens its sockets
    /// without the flag. Returns how many descriptors it marked.
    @discardableResult
    package static func markDescriptorsCloseOnExec() -> Int { Int(sllm_mark_descriptors_cloexec()) }

    /// Makes a fatal signal close every socket (the listener above all) before the runtime's
    /// crash reporter runs, so a crashed server frees its port at once.
    package static func installCrashSocketCloser() { _ = sllm_install_crash_socket_closer() }

    package static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    /// What `path` (links followed) is when it is not a regular file or a directory: `FIFO`,
    /// `socket`, `character device`, `block device`; nil for regular files, directories and
    /// paths that do not exist.
    package static func nonRegularFileType(_ path: String) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        switch info.st_mode & S_IFMT {
        case S_IFIFO: return "FIFO"
        case S_IFSOCK: return "socket"
        case S_IFCHR: return "character device"
        case S_IFBLK: return "block device"
        default: return nil
        }
    }

    package static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    package static func makeDirectory(_ path: String) throws(CheckpointError) {
        guard mkdir(path, 0o755) == 0 else {
            let error = Errno.current("mkdir \(path)")
            if error.rawValue == EEXIST {
                throw CheckpointError(.alreadyExists, "\(path) already exists", cause: error)
            }
            throw CheckpointError(.io, "cannot create directory \(path)", cause: error)
        }
    }

    /// Creates `path` and its missing parents.
    package static func makeDirectories(_ path: String) throws(CheckpointError) {
        if isDirectory(path) { return }
        let parent = directoryName(path)
        if parent != path, !parent.isEmpty { try makeDirectories(parent) }
        if mkdir(path, 0o755) != 0 && errno != EEXIST {
            throw CheckpointError(.io, "cannot create directory \(path)", cause: Errno.current("mkdir"))
        }
    }

    /// fsyncs a directory so that renames and creations inside it are durable.
    package static func syncDirectory(_ path: String) throws(CheckpointError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw CheckpointError(.io, "cannot open directory \(path)", cause: Errno.current("open")) }
        defer { close(fd) }
        guard fsync(fd) == 0 else {
            throw CheckpointError(.io, "fsync failed for \(path)", cause: Errno.current("fsync"))
        }
    }

    package static func rename(_ from: String, to: String) throws(CheckpointError) {
        guard Glibc.rename(from, to) == 0 else {
            throw CheckpointError(.io, "cannot rename \(from) to \(to)", cause: Errno.current("rename"))
        }
    }

    /// Removes a file or a directory tree; missing paths are fine.
    package static func removeTree(_ path: String) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            for name in (try? listDirectory(path)) ?? [] { removeTree(path + "/" + name) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }

    /// Names in a directory, without `.` and `..`, sorted.
    package static func listDirectory(_ path: String) throws(CheckpointError) -> [String] {
        guard let dir = opendir(path) else {
            let error = Errno.current("opendir \(path)")
            if error.rawValue == ENOENT { throw CheckpointError(.notFound, "no such directory: \(path)", cause: error) }
            throw CheckpointError(.io, "cannot list \(path)", cause: error)
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Bytes used by the regular files under `path`.
    package static func diskUsage(_ path: String) -> Int64 {
        var info = stat()
        guard lstat(path, &info) == 0 else { return 0 }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            return ((try? listDirectory(path)) ?? []).reduce(0) { $0 + diskUsage(path + "/" + $1) }
        }
        return Int64(info.st_blocks) * 512
    }

    /// Seconds since the epoch of the last modification of `path`.
    package static func modificationTime(_ path: String) -> Double? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9
    }

    /// Sets the modification time of `path` to now.
    package static func touch(_ path: String) {
        utimensat(AT_FDCWD, path, nil, 0)
    }

    package static func fileSize(_ path: String) -> Int64? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return Int64(info.st_size)
    }

    package static func directoryName(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    package static func baseName(_ path: String) -> String {
        var trimmed = Substring(path)
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return String(trimmed) }
        return String(trimmed[trimmed.index(after: slash)...])
    }

    /// `path` made absolute against the current directory.
    package static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buffer, buffer.count) != nil else { return path }
        let cwd = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return path == "." ? cwd : cwd + "/" + path
    }

    /// A short random hex string for temporary names.
    package static func randomSuffix() -> String {
        String(UInt64.random(in: 0...UInt64.max), radix: 16)
    }
}
