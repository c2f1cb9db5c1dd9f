/// Scalar reference kernels: the straightforward definition each vector kernel is tested against.
public enum ReferenceKernels {
    /// Expands `count` weights of `type` at `source` into floats.
    public static func dequantize(_ type: WeightType, _ source: UnsafeRawPointer, count: Int, into out: UnsafeMutablePointer<Float>) {
        switch type {
        case .f32:
            for i in 0..<count { out[i] = source.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) }
        case .f16:
            for i in 0..<count { out[i] = loadHalf(source, 2 * i) }
        case .bf16:
            for i in 0..<count { out[i] = loadBFloat16(source, 2 * i) }
        case .q4_0, .q4_1, .q8_0:
            let (weights, bytes) = type.block
            for block in 0..<(count / weights) {
                let b = source + block * bytes
                let o = out + block * weights
                switch type {
                case .q4_0:
                    let d = loadHalf(b, 0)
                    for i in 0..<16 {
                        let q = b.load(fromByteOffset: 2 + i, as: UInt8.self)
                        o[i] = d * Float(Int(q & 0x0F) - 8)
                        o[i + 16] = d * Float(Int(q >> 4) - 8)
                    }
                case .q4_1:
                    let d = loadHalf(b, 0), m = loadHalf(b, 2)
                    for i in 0..<16 {
                        let q = b.load(fromByteOffset: 4 + i, as: UInt8.self)
                        o[i] = d * Float(q & 0x0F) + m
                        o[i + 16] = d * Float(q >> 4) + m
                    }
                default:
                    let d = loadHalf(b, 0)
                    for i in 0..<32 { o[i] = d * Float(b.load(fromByteOffset: 2 + i, as: Int8.self)) }
                }
            }
        }
    }

    /// The dot product of `count` weights of `type` with float activations, through dequantization.
    public static func dot(_ type: WeightType, _ weights: UnsafeRawPointer, _ x: UnsafePointer<Float>, count: Int) -> Float {
        let expanded = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { expanded.deallocate() }
        dequantize(type, weights, count: count, into: expanded)
        var sum: Double = 0
        for i in 0..<count { sum += Double(expanded[i]) * Double(x[i]) }
        return Float(sum)
    }
}
