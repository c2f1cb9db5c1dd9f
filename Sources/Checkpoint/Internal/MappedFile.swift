#if canImport(Glibc)
    import Glibc
#endif

/// A read-only memory map of a whole file, unmapped on deinit.
public final class MappedFile: @unchecked Sendable {
    // Sendable: the mapping is read-only and lives as long as the object.
    public let bytes: UnsafeRawBufferPointer
    public let path: String

    public init(path: String) throws(CheckpointError) {
        let handle = try FileHandle.openForReading(path)
        let size = try handle.size()
        self.path = path
        if size == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let base = mmap(nil, Int(size), PROT_READ, MAP_PRIVATE, handle.fd, 0), base != MAP_FAILED else {
            throw CheckpointError(.io, "cannot map \(path)", cause: Errno.current("mmap"))
        }
        bytes = UnsafeRawBufferPointer(start: base, count: Int(size))
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }
}
