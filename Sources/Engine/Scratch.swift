/// Grow-only scratch memory for one forward pass, reused between passes.
struct Scratch: ~Copyable {
    private(set) var pointer: UnsafeMutableRawPointer
    private(set) var capacity: Int

    init() {
        capacity = 64
        pointer = .allocate(byteCount: 64, alignment: 64)
    }

    deinit { pointer.deallocate() }

    mutating func floats(_ count: Int) -> UnsafeMutablePointer<Float> {
        bytes(count * 4).bindMemory(to: Float.self, capacity: count)
    }

    mutating func bytes(_ count: Int) -> UnsafeMutableRawPointer {
        if count > capacity {
            pointer.deallocate()
            capacity = max(count, capacity * 2)
            pointer = .allocate(byteCount: capacity, alignment: 64)
        }
        return pointer
    }
}
