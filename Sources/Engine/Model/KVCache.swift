import Glibc

/// The keys and values of one sequence, f16 like llama.cpp's default cache: for each layer,
/// `capacity` rows of `kvDimension` keys, then as many rows of values.
///
/// The memory is reserved for the whole context with `mmap` but only the pages that positions
/// reach are ever touched, so a short sequence costs what it uses.
final class KVCache: @unchecked Sendable {
    // Sendable: used only under the engine's forward lock.
    let capacity: Int
    let layers: Int
    let kvDimension: Int
    let base: UnsafeMutablePointer<UInt16>
    private let byteCount: Int

    init(capacity: Int, layers: Int, kvDimension: Int) throws(EngineError) {
        self.capacity = capacity
        self.layers = layers
        self.kvDimension = kvDimension
        byteCount = max(1, 2 * layers * capacity * kvDimension * 2) + Self.shiftBytes
        let memory = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let memory, memory != MAP_FAILED else {
            throw EngineError(.outOfMemory, "cannot reserve \(byteCount) bytes for a KV cache of \(capacity) positions")
        }
        base = (memory + Self.shiftBytes).bindMemory(to: UInt16.self, capacity: (byteCount - Self.shiftBytes) / 2)
    }

    deinit { munmap(UnsafeMutableRawPointer(base) - Self.shiftBytes, byteCount) }

    /// The rows start 16 bytes past the page: with page-aligned rows the attention loop's loads
    /// stalled (a C benchmark of 30 layers × 4096 cached keys of SmolLM2's shape: one head 1.4×
    /// and a KV head's three query heads together 2.5× slower; likely 4 KiB aliasing with the
    /// kernels' accumulators). The values read are the same, so are the results.
    static let shiftBytes = 16

    /// Bytes one position takes across all layers (keys and values).
    static func bytesPerPosition(layers: Int, kvDimension: Int) -> Int { 2 * layers * kvDimension * 2 }

    @inline(__always) func keys(layer: Int) -> UnsafeMutablePointer<UInt16> {
        base + (2 * layer) * capacity * kvDimension
    }

    @inline(__always) func values(layer: Int) -> UnsafeMutablePointer<UInt16> {
        base + (2 * layer + 1) * capacity * kvDimension
    }
}
