import Glibc

/// The keys and values of one sequence, f16 like llama.cpp's default cache: for each layer and
/// KV head, `capacity` rows of `headDimension` keys, then the same for the values. Each KV head's
/// rows are contiguous, so threads that attend with different KV heads read disjoint memory
/// (with a head's 64 values beside the other heads' in one row, two threads each pulled whole
/// rows into their caches, and a decoding step at 4096 positions on two threads ran slower than
/// on one).
///
/// The memory is reserved for the whole context with `mmap` but only the pages that positions
/// reach are ever touched, so a short sequence costs what it uses (in whole pages per layer and
/// KV head: SmolLM2's 180 regions take 720 KiB for a sequence's first 32 positions).
final class KVCache: @unchecked Sendable {
    // Sendable: used only under the engine's forward lock.
    let capacity: Int
    let layers: Int
    let heads: Int
    let headDimension: Int
    let base: UnsafeMutablePointer<UInt16>
    private let byteCount: Int

    init(capacity: Int, layers: Int, heads: Int, headDimension: Int) throws(EngineError) {
        self.capacity = capacity
        self.layers = layers
        self.heads = heads
        self.headDimension = headDimension
        byteCount = max(1, 2 * layers * capacity * heads * headDimension * 2)
        let memory = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let memory, memory != MAP_FAILED else {
            throw EngineError(.outOfMemory, "cannot reserve \(byteCount) bytes for a KV cache of \(capacity) positions")
        }
        base = memory.bindMemory(to: UInt16.self, capacity: byteCount / 2)
    }

    deinit { munmap(base, byteCount) }

    /// Bytes one position takes across all layers (keys and values).
    static func bytesPerPosition(layers: Int, kvDimension: Int) -> Int { 2 * layers * kvDimension * 2 }

    /// The keys of KV head `head` in layer `layer`: a row of `headDimension` values per position.
    @inline(__always) func keys(layer: Int, head: Int) -> UnsafeMutablePointer<UInt16> {
        base + ((2 * layer) * heads + head) * capacity * headDimension
    }

    @inline(__always) func values(layer: Int, head: Int) -> UnsafeMutablePointer<UInt16> {
        base + ((2 * layer + 1) * heads + head) * capacity * headDimension
    }
}
