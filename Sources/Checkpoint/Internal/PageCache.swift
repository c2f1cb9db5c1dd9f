#if canImport(Glibc)
    import Glibc
#endif

/// Page-cache control for benchmarks: evict a file's pages, measure how much of it is resident.
public enum PageCache {
    /// Writes back and drops the cached pages of `path` (`fdatasync` + `POSIX_FADV_DONTNEED`).
    public static func evict(_ path: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        fdatasync(fd)
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
    }

    /// Evicts every regular file under `path`.
    public static func evictTree(_ path: String) {
        if FileSystem.isDirectory(path) {
            for name in (try? FileSystem.listDirectory(path)) ?? [] { evictTree(path + "/" + name) }
        } else {
            evict(path)
        }
    }

    /// The fraction (0...1) of `path`'s pages in the page cache, from `mincore(2)`.
    public static func residentFraction(_ path: String) -> Double {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_size > 0 else { return 0 }
        let size = Int(info.st_size)
        guard let map = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else { return 0 }
        defer { munmap(map, size) }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let pages = (size + page - 1) / page
        var vector = [UInt8](repeating: 0, count: pages)
        guard mincore(map, size, &vector) == 0 else { return 0 }
        return Double(vector.reduce(0) { $0 + Int($1 & 1) }) / Double(pages)
    }
}
