#if canImport(Glibc)
    import Glibc
#endif

/// A page-aligned heap buffer that owns its allocation.
///
/// Invariants: `base` is aligned to `alignment` (4 KiB by default) and valid for `byteCount`
/// bytes until deinit. Aligned so it can be the target of `O_DIRECT` reads.
package final class UnsafeAlignedBuffer: @unchecked Sendable {
    // Sendable because the pointer is immutable after init; users coordinate access to contents.
    package let base: UnsafeMutableRawPointer
    package let byteCount: Int

    package init(byteCount: Int, alignment: Int = 4096) {
        var pointer: UnsafeMutableRawPointer?
        let status = posix_memalign(&pointer, alignment, max(byteCount, 1))
        // Failure to allocate a bounded buffer is not recoverable input; treat it like Swift's own allocator.
        precondition(status == 0 && pointer != nil, "posix_memalign(\(byteCount)) failed")
        self.base = pointer!
        self.byteCount = byteCount
    }

    deinit { free(base) }

    package var buffer: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: base, count: byteCount) }
}
