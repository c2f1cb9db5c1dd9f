/// Weight types the engine computes on, with GGML's block layouts (bit-exact with llama.cpp).
///
/// - `q4_0`: 32 weights in 18 bytes: f16 scale `d`, 16 bytes of nibbles; `w = d * (q - 8)`.
/// - `q4_1`: 32 weights in 20 bytes: f16 `d`, f16 `m`, 16 bytes of nibbles; `w = d * q + m`.
/// - `q8_0`: 32 weights in 34 bytes: f16 `d`, 32 signed bytes; `w = d * q`.
/// Nibble `j` of byte `i` (low first) is weight `i` (low) or `i + 16` (high).
public enum WeightType: Sendable, Equatable {
    case f32, f16, bf16, q4_0, q4_1, q8_0

    /// Weights per block and bytes per block.
    public var block: (weights: Int, bytes: Int) {
        switch self {
        case .f32: (1, 4)
        case .f16, .bf16: (1, 2)
        case .q4_0: (32, 18)
        case .q4_1: (32, 20)
        case .q8_0: (32, 34)
        }
    }
}

@inline(__always) func loadHalf(_ base: UnsafeRawPointer, _ offset: Int) -> Float {
    Float(Float16(bitPattern: base.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
}

@inline(__always) func loadBFloat16(_ base: UnsafeRawPointer, _ offset: Int) -> Float {
    Float(bitPattern: UInt32(base.loadUnaligned(fromByteOffset: offset, as: UInt16.self)) << 16)
}
