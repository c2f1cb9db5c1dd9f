import CKernels
import Foundation
import Synchronization
import TestSupport
import Testing

/// The C kernels against straightforward definitions, on random blocks of every weight type.
@Suite struct KernelTests {
    static let types: [(name: String, id: Int32, block: Int, bytes: Int)] = [
        ("f32", Int32(SLLM_F32), 1, 4), ("f16", Int32(SLLM_F16), 1, 2), ("bf16", Int32(SLLM_BF16), 1, 2),
        ("q4_0", Int32(SLLM_Q4_0), 32, 18), ("q4_1", Int32(SLLM_Q4_1), 32, 20), ("q8_0", Int32(SLLM_Q8_0), 32, 34),
        ("q5_0", Int32(SLLM_Q5_0), 32, 22), ("q5_1", Int32(SLLM_Q5_1), 32, 24),
        ("q4_K", Int32(SLLM_Q4_K), 256, 144), ("q5_K", Int32(SLLM_Q5_K), 256, 176),
        ("q6_K", Int32(SLLM_Q6_K), 256, 210), ("q2_K", Int32(SLLM_Q2_K), 256, 84),
        ("q3_K", Int32(SLLM_Q3_K), 256, 110), ("iq4_nl", Int32(SLLM_IQ4_NL), 32, 18),
        ("iq4_xs", Int32(SLLM_IQ4_XS), 256, 136),
    ]

    static func half(_ value: Float) -> [UInt8] {
        withUnsafeBytes(of: Float16(value).bitPattern.littleEndian) { Array($0) }
    }

    /// Random weights of a type: sane f16 scales, random quants.
    static func randomRow(_ type: Int32, count: Int, using generator: inout SeededGenerator) -> [UInt8] {
        func random(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255, using: &generator) } }
        var out: [UInt8] = []
        switch Int(type) {
        case SLLM_F32:
            for _ in 0..<count { withUnsafeBytes(of: Float.random(in: -1...1, using: &generator)) { out += $0 } }
        case SLLM_F16:
            for _ in 0..<count { out += half(Float.random(in: -1...1, using: &generator)) }
        case SLLM_BF16:
            for _ in 0..<count {
                let bits = UInt16(truncatingIfNeeded: Float.random(in: -1...1, using: &generator).bitPattern >> 16)
                withUnsafeBytes(of: bits.littleEndian) { out += $0 }
            }
        case SLLM_Q4_0:
            for _ in 0..<(count / 32) { out += half(Float.random(in: 0.001...0.1, using: &generator)) + random(16) }
        case SLLM_Q4_1:
            for _ in 0..<(count / 32) {
                out +=
                    half(Float.random(in: 0.001...0.1, using: &generator))
                    + half(Float.random(in: -0.5...0.5, using: &generator)) + random(16)
            }
        case SLLM_Q5_0:
            for _ in 0..<(count / 32) {
                out += half(Float.random(in: 0.001...0.1, using: &generator)) + random(4) + random(16)
            }
        case SLLM_Q5_1:
            for _ in 0..<(count / 32) {
                out +=
                    half(Float.random(in: 0.001...0.1, using: &generator))
                    + half(Float.random(in: -0.5...0.5, using: &generator)) + random(4) + random(16)
            }
        case SLLM_Q8_0:
            // Quants of −127…127, as GGML's quantizer produces.
            for _ in 0..<(count / 32) {
                out += half(Float.random(in: 0.001...0.1, using: &generator))
                out += (0..<32).map { _ in UInt8(bitPattern: Int8.random(in: -127...127, using: &generator)) }
            }
        case SLLM_Q4_K:
            for _ in 0..<(count / 256) {
                out +=
                    half(Float.random(in: 0.001...0.01, using: &generator))
                    + half(Float.random(in: 0.001...0.01, using: &generator))
                out += random(12) + random(128)
            }
        case SLLM_Q5_K:
            for _ in 0..<(count / 256) {
                out +=
                    half(Float.random(in: 0.001...0.01, using: &generator))
                    + half(Float.random(in: 0.001...0.01, using: &generator))
                out += random(12) + random(32) + random(128)
            }
        case SLLM_Q2_K:
            for _ in 0..<(count / 256) {
                out += random(16) + random(64)
                out +=
                    half(Float.random(in: 0.001...0.01, using: &generator))
                    + half(Float.random(in: 0.001...0.01, using: &generator))
            }
        case SLLM_Q3_K:
            for _ in 0..<(count / 256) {
                out += random(32) + random(64) + random(12) + half(Float.random(in: 0.001...0.01, using: &generator))
            }
        case SLLM_IQ4_NL:
            for _ in 0..<(count / 32) { out += half(Float.random(in: 0.001...0.01, using: &generator)) + random(16) }
        case SLLM_IQ4_XS:
            for _ in 0..<(count / 256) {
                out += half(Float.random(in: 0.001...0.01, using: &generator)) + random(2) + random(4) + random(128)
            }
        case SLLM_Q6_K:
            for _ in 0..<(count / 256) {
                out += random(128) + random(64)
                out += (0..<16).map { _ in UInt8(bitPattern: Int8.random(in: -127...127, using: &generator)) }
                out += half(Float.random(in: 0.001...0.01, using: &generator))
            }
        default: break
        }
        return out
    }

    @Test(arguments: types.map(\.name))
    func gemmMatchesTheDequantizedDefinitionOnEveryPath(name: String) {
        let type = Self.types.first { $0.name == name }!
        var generator = SeededGenerator(seed: 7)
        let columns = type.block == 256 ? 512 : 608
        // 19 tokens: a chunk of 16 and a partial one, full and partial tiles of 8 and of 4.
        let rows = 9, tokens = 19
        let activationType = sllm_activation_type(type.id)
        let rowBytes = sllm_row_bytes(type.id, Int64(columns))
        let activationBytes = sllm_row_bytes(activationType, Int64(columns))
        #expect(rowBytes == columns / type.block * type.bytes)
        var weights: [UInt8] = []
        for _ in 0..<rows { weights += Self.randomRow(type.id, count: columns, using: &generator) }
        let inputs = (0..<(tokens * columns)).map { _ in Float.random(in: -2...2, using: &generator) }
        var activations = [UInt8](repeating: 0, count: tokens * activationBytes)
        inputs.withUnsafeBufferPointer { x in
            activations.withUnsafeMutableBytes { a in
                for t in 0..<tokens {
                    sllm_quantize_row(
                        activationType, x.baseAddress! + t * columns, a.baseAddress! + t * activationBytes,
                        Int64(columns))
                }
            }
        }
        // The definition: dequantize both sides, multiply in double.
        var expected = [Double](repeating: 0, count: rows * tokens)
        var w = [Float](repeating: 0, count: columns), a = [Float](repeating: 0, count: columns)
        weights.withUnsafeBytes { wb in
            activations.withUnsafeBytes { ab in
                for r in 0..<rows {
                    sllm_dequantize_row(type.id, wb.baseAddress! + r * rowBytes, &w, Int64(columns))
                    for t in 0..<tokens {
                        sllm_dequantize_row(activationType, ab.baseAddress! + t * activationBytes, &a, Int64(columns))
                        var sum = zip(w, a).reduce(0) { $0 + Double($1.0) * Double($1.1) }
                        if type.id == Int32(SLLM_Q4_1) || type.id == Int32(SLLM_Q5_1) {
                            // Q8_1 carries s = f16(d·Σq) for the min term: the kernel (and GGML) use
                            // m·s instead of the exact Σ m·d·q.
                            for block in 0..<(columns / 32) {
                                let wBlock = wb.baseAddress! + r * rowBytes + block * type.bytes
                                let aBlock = ab.baseAddress! + t * activationBytes + block * 36
                                let m = Double(
                                    Float16(bitPattern: wBlock.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
                                let s = Double(
                                    Float16(bitPattern: aBlock.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
                                let exact = (0..<32).reduce(0.0) { $0 + Double(a[block * 32 + $1]) }
                                sum += m * (s - exact)
                            }
                        }
                        expected[t * rows + r] = sum
                    }
                }
            }
        }
        for level in 0...sllm_kernel_level() {
            var out = [Float](repeating: .nan, count: rows * tokens)
            var reference = [Float](repeating: .nan, count: rows * tokens)
            weights.withUnsafeBytes { wb in
                activations.withUnsafeBytes { ab in
                    sllm_gemm_at_level(
                        level, type.id, wb.baseAddress!, rowBytes, 0, Int64(rows), ab.baseAddress!, activationBytes,
                        Int64(tokens), Int64(columns), &out, Int64(rows))
                    sllm_gemm_reference(
                        type.id, wb.baseAddress!, rowBytes, 0, Int64(rows), ab.baseAddress!, activationBytes,
                        Int64(tokens), Int64(columns), &reference, Int64(rows))
                    // One token at a time (the decoding kernels) gives the tiled results bit for bit.
                    for t in 0..<tokens {
                        var single = [Float](repeating: .nan, count: rows)
                        sllm_gemm_at_level(
                            level, type.id, wb.baseAddress!, rowBytes, 0, Int64(rows),
                            ab.baseAddress! + t * activationBytes, activationBytes, 1, Int64(columns), &single,
                            Int64(rows))
                        #expect(
                            single == Array(out[(t * rows)..<((t + 1) * rows)]),
                            "\(name) level \(level) token \(t) alone")
                    }
                }
            }
            for i in 0..<(rows * tokens) {
                let tolerance = 2e-4 * max(1, abs(expected[i]))
                #expect(
                    abs(Double(out[i]) - expected[i]) <= tolerance,
                    "\(name) level \(level) [\(i)]: \(out[i]) vs \(expected[i])")
                #expect(
                    abs(Double(reference[i]) - expected[i]) <= tolerance,
                    "\(name) reference [\(i)]: \(reference[i]) vs \(expected[i])")
            }
        }
    }

    @Test func activationQuantizationFollowsGGML() {
        // One block: the largest magnitude maps to ±127, halves round to even, Q8_1 carries d·Σq.
        let x = (0..<32).map { Float($0) - 16 }
        var q8_1 = [UInt8](repeating: 0, count: 36)
        sllm_quantize_row(Int32(SLLM_Q8_1), x, &q8_1, 32)
        let d = Float(Float16(bitPattern: UInt16(q8_1[0]) | UInt16(q8_1[1]) << 8))
        #expect(d == Float(Float16(16 / Float(127))))
        let qs = q8_1[4...].map { Int8(bitPattern: $0) }
        #expect(qs[0] == -127)
        for (i, value) in x.enumerated() {
            #expect(Int(qs[i]) == Int((value * (127 / 16)).rounded(.toNearestOrEven)))
        }
        let s = Float(Float16(bitPattern: UInt16(q8_1[2]) | UInt16(q8_1[3]) << 8))
        #expect(s == Float(Float16(16 / Float(127) * Float(qs.reduce(0) { $0 + Int($1) }))))
        // An all-zero block quantizes to zeros with d = 0.
        var zeros = [UInt8](repeating: 0xFF, count: 34)
        sllm_quantize_row(Int32(SLLM_Q8_0), [Float](repeating: 0, count: 32), &zeros, 32)
        #expect(zeros.allSatisfy { $0 == 0 })
    }

    /// The query heads that share a KV head go through its keys together; each must get exactly
    /// what it gets alone (which the model tests hold to llama.cpp's).
    @Test(arguments: [256, 200, 64, 36])
    func attentionOfAGroupIsEachQueryAlone(dim: Int) {
        var generator = SeededGenerator(seed: UInt64(dim))
        let queries = 5, keys = 300
        let q = (0..<(queries * dim)).map { _ in Float.random(in: -3...3, using: &generator) }
        var k = [UInt16](repeating: 0, count: keys * dim), v = k
        sllm_f32_to_f16((0..<(keys * dim)).map { _ in Float.random(in: -1...1, using: &generator) }, &k, Int64(k.count))
        sllm_f32_to_f16((0..<(keys * dim)).map { _ in Float.random(in: -1...1, using: &generator) }, &v, Int64(v.count))
        for n in [1, 7, keys] {
            var together = [Float](repeating: .nan, count: queries * dim)
            sllm_attention_f16_group(
                q, Int64(dim), Int64(queries), k, Int64(dim), v, Int64(dim), Int64(n), Int64(dim), 0.125, &together,
                Int64(dim))
            for j in 0..<queries {
                var alone = [Float](repeating: .nan, count: dim)
                q.withUnsafeBufferPointer { q in
                    sllm_attention_f16(
                        q.baseAddress! + j * dim, k, Int64(dim), v, Int64(dim), Int64(n), Int64(dim), 0.125, &alone)
                }
                let same = zip(alone, together[(j * dim)..<((j + 1) * dim)]).allSatisfy {
                    $0.bitPattern == $1.bitPattern
                }
                #expect(same, "dim \(dim), \(n) keys, query \(j)")
            }
        }
    }

    /// A pool worker that finds itself on its caller's CPU moves to another CPU of its mask, and
    /// its mask stays as it was.
    @Test func aWorkerOnItsCallersCPUStepsOffIt() {
        let result = Mutex<(before: Int32, after: Int32, masks: [Int32])?>(nil)
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            let allowed = sllm_allowed_cpus()
            let before = sllm_current_cpu()
            let after = sllm_pool_step_off(before)
            result.withLock { $0 = (before, after, [allowed, sllm_allowed_cpus()]) }
            done.signal()
        }
        thread.start()
        done.wait()
        guard let result = result.withLock({ $0 }) else { Issue.record("the thread did not run"); return }
        #expect(result.masks[0] == result.masks[1], "the mask is put back")
        if result.masks[0] >= 2 {
            #expect(result.after != result.before)
        } else {
            #expect(result.after == result.before, "one CPU allowed: nowhere to go")
        }
    }

    @Test func poolRunsEveryThreadAndSplitsRows() {
        for threads in [1, 2, 3, 5] {
            let pool = sllm_pool_create(Int32(threads))!
            defer { sllm_pool_destroy(pool) }
            #expect(sllm_pool_threads(pool) == Int32(threads))
            var generator = SeededGenerator(seed: UInt64(threads))
            let rows = 37, columns = 64
            let weights = (0..<(rows * columns)).map { _ in Float.random(in: -1...1, using: &generator) }
            let input = (0..<(2 * columns)).map { _ in Float.random(in: -1...1, using: &generator) }
            for _ in 0..<50 {
                var pooled = [Float](repeating: .nan, count: 2 * rows)
                var serial = [Float](repeating: .nan, count: 2 * rows)
                sllm_pool_gemm(
                    pool, Int32(SLLM_F32), weights, columns * 4, Int64(rows), input, columns * 4, 2, Int64(columns),
                    &pooled, Int64(rows))
                sllm_gemm(
                    Int32(SLLM_F32), weights, columns * 4, 0, Int64(rows), input, columns * 4, 2, Int64(columns),
                    &serial, Int64(rows))
                #expect(pooled == serial)
            }
        }
    }
}
