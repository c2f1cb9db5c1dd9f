import TestSupport
import Testing

@testable import Engine

@Suite struct KernelTests {
    /// Random blocks of `type` for `count` weights: scales are sane f16 values, quants random.
    static func randomWeights(_ type: WeightType, count: Int, seed: UInt64) -> [UInt8] {
        var generator = SeededGenerator(seed: seed)
        let (weights, bytes) = type.block
        var out: [UInt8] = []
        func half(_ value: Float) -> [UInt8] { withUnsafeBytes(of: Float16(value).bitPattern.littleEndian) { Array($0) } }
        switch type {
        case .f32:
            for _ in 0..<count { withUnsafeBytes(of: Float.random(in: -1...1, using: &generator)) { out += $0 } }
        case .f16:
            for _ in 0..<count { out += half(Float.random(in: -1...1, using: &generator)) }
        case .bf16:
            for _ in 0..<count {
                let bits = UInt16(truncatingIfNeeded: Float.random(in: -1...1, using: &generator).bitPattern >> 16)
                withUnsafeBytes(of: bits.littleEndian) { out += $0 }
            }
        case .q4_0, .q4_1, .q8_0:
            for _ in 0..<(count / weights) {
                var block = half(Float.random(in: 0.001...0.1, using: &generator))
                if type == .q4_1 { block += half(Float.random(in: -0.5...0.5, using: &generator)) }
                while block.count < bytes { block.append(UInt8.random(in: 0...255, using: &generator)) }
                out += block
            }
        }
        return out
    }

    @Test(arguments: [WeightType.f32, .f16, .bf16, .q4_0, .q4_1, .q8_0])
    func vectorDotProductsMatchTheReference(type: WeightType) {
        var generator = SeededGenerator(seed: 99)
        for (trial, count) in [32, 64, 576, 1536, 4096].enumerated() {
            let weights = Self.randomWeights(type, count: count, seed: UInt64(trial + 1))
            let x = (0..<count).map { _ in Float.random(in: -2...2, using: &generator) }
            weights.withUnsafeBytes { w in
                x.withUnsafeBufferPointer { xs in
                    let reference = ReferenceKernels.dot(type, w.baseAddress!, xs.baseAddress!, count: count)
                    let vector = Kernels.dot(type, w.baseAddress!, xs.baseAddress!, count: count)
                    // Float32 accumulation in a different order than the f64 reference.
                    #expect(abs(vector - reference) <= 1e-4 * max(1, abs(reference)) * Float(count).squareRoot(), "\(type) n=\(count): \(vector) vs \(reference)")
                }
            }
        }
    }

    @Test func q4BlocksDequantizeByTheGGMLLayout() {
        // d = 1, m = 0.5: nibble q of byte i gives weight i (low) and i + 16 (high).
        var block: [UInt8] = withUnsafeBytes(of: Float16(1).bitPattern.littleEndian) { Array($0) }
        block += withUnsafeBytes(of: Float16(0.5).bitPattern.littleEndian) { Array($0) }
        block += (0..<16).map { UInt8($0) | UInt8(15 - $0) << 4 }
        var out = [Float](repeating: 0, count: 32)
        block.withUnsafeBytes { b in out.withUnsafeMutableBufferPointer { ReferenceKernels.dequantize(.q4_1, b.baseAddress!, count: 32, into: $0.baseAddress!) } }
        #expect(out[0] == 0.5 && out[15] == 15.5 && out[16] == 15.5 && out[31] == 0.5)
    }
}
