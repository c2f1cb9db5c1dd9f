/// Vectorised dot products of a weight row with float activations, computed on the blocks in
/// place (no dequantized copy). Each has a scalar reference in ``ReferenceKernels``.
public enum Kernels {
    public static func dot(_ type: WeightType, _ weights: UnsafeRawPointer, _ x: UnsafePointer<Float>, count: Int) -> Float {
        switch type {
        case .f32: dotF32(weights, x, count)
        case .f16: dotConverted(weights, x, count, width: 2) { loadHalf($0, $1) }
        case .bf16: dotConverted(weights, x, count, width: 2) { loadBFloat16($0, $1) }
        case .q4_0: dotQ4(weights, x, count, blockBytes: 18, hasMin: false)
        case .q4_1: dotQ4(weights, x, count, blockBytes: 20, hasMin: true)
        case .q8_0: dotQ8_0(weights, x, count)
        }
    }

    @inline(__always) static func load16(_ x: UnsafePointer<Float>) -> SIMD16<Float> {
        UnsafeRawPointer(x).loadUnaligned(as: SIMD16<Float>.self)
    }

    static func dotF32(_ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD16<Float>()
        var i = 0
        while i + 16 <= n {
            acc += w.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self) * load16(x + i)
            i += 16
        }
        var sum = acc.sum()
        while i < n {
            sum += w.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) * x[i]
            i += 1
        }
        return sum
    }

    static func dotConverted(_ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int, width: Int, _ load: (UnsafeRawPointer, Int) -> Float) -> Float {
        var acc = SIMD16<Float>()
        var i = 0
        while i + 16 <= n {
            var v = SIMD16<Float>()
            for j in 0..<16 { v[j] = load(w, width * (i + j)) }
            acc += v * load16(x + i)
            i += 16
        }
        var sum = acc.sum()
        while i < n {
            sum += load(w, width * i) * x[i]
            i += 1
        }
        return sum
    }

    /// Q4_0 / Q4_1: per block, d·Σ q·x (+ m·Σ x for Q4_1; − 8d·Σ x for Q4_0).
    static func dotQ4(_ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int, blockBytes: Int, hasMin: Bool) -> Float {
        var sum: Float = 0
        let dataOffset = hasMin ? 4 : 2
        for block in 0..<(n / 32) {
            let b = w + block * blockBytes
            let xs = x + block * 32
            let packed = b.loadUnaligned(fromByteOffset: dataOffset, as: SIMD16<UInt8>.self)
            let low = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: packed & 0x0F))
            let high = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: packed &>> 4))
            let x0 = load16(xs), x1 = load16(xs + 16)
            let qx = (low * x0 + high * x1).sum()
            let sx = (x0 + x1).sum()
            let d = loadHalf(b, 0)
            sum += hasMin ? d * qx + loadHalf(b, 2) * sx : d * (qx - 8 * sx)
        }
        return sum
    }

    static func dotQ8_0(_ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var sum: Float = 0
        for block in 0..<(n / 32) {
            let b = w + block * 34
            let xs = x + block * 32
            let q0 = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: b.loadUnaligned(fromByteOffset: 2, as: SIMD16<Int8>.self)))
            let q1 = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: b.loadUnaligned(fromByteOffset: 18, as: SIMD16<Int8>.self)))
            sum += loadHalf(b, 0) * (q0 * load16(xs) + q1 * load16(xs + 16)).sum()
        }
        return sum
    }
}
