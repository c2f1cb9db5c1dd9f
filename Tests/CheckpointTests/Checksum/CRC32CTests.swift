import CKernels
import TestSupport
import Testing

@testable import Checkpoint

@Suite struct CRC32CTests {
    @Test func knownVectorMatchesTheStandard() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([]) == 0)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
    }

    @Test func hardwareAndTableAgreeOnRandomInputs() {
        var generator = SeededGenerator(seed: 42)
        for _ in 0..<200 {
            let count = Int.random(in: 0...5000, using: &generator)
            let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let offset = Int.random(in: 0...min(7, count), using: &generator)
            bytes.withUnsafeBytes { raw in
                let slice = UnsafeRawBufferPointer(rebasing: raw[offset...])
                let table = sllm_crc32c_software(0, slice.baseAddress ?? raw.baseAddress!, slice.count)
                #expect(CRC32C.checksum(slice) == table)
            }
        }
    }

    @Test func streamingEqualsOneShot() {
        let bytes = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        bytes.withUnsafeBytes { raw in
            let first = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<3333]))
            let both = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[3333...]), seed: first)
            #expect(both == CRC32C.checksum(raw))
        }
    }

    @Test(arguments: [4096, 8192, 12288])
    func blockChecksumsEqualSerialPerBlock(blockSize: Int) {
        let count = blockSize * 7 + 100
        let bytes = (0..<count).map { UInt8(truncatingIfNeeded: ($0 * 7919) >> 3) }
        var blocks: [UInt32] = []
        bytes.withUnsafeBytes { CRC32C.blockChecksums($0, blockSize: blockSize, into: &blocks) }
        #expect(blocks.count == 8)
        for (i, checksum) in blocks.enumerated() {
            let end = min(count, (i + 1) * blockSize)
            #expect(checksum == CRC32C.checksum(Array(bytes[(i * blockSize)..<end])))
        }
    }
}

@Suite struct CRC32CStripedTests {
    @Test(arguments: [786_432, 786_433, 1_000_003, 4 << 20])
    func longBuffersUseCombinedStripesAndMatchTheTable(count: Int) {
        var generator = SeededGenerator(seed: UInt64(count))
        let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes.withUnsafeBytes { raw in
            let table = sllm_crc32c_software(0, raw.baseAddress!, raw.count)
            #expect(CRC32C.checksum(raw) == table)
            // Continuing from a seed works across the striped path too.
            let half = count / 2
            let first = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<half]))
            #expect(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[half...]), seed: first) == table)
        }
    }

    @Test func combineJoinsTwoChecksums() {
        let a = Array("hello, ".utf8), b = Array("world".utf8)
        #expect(sllm_crc32c_combine(CRC32C.checksum(a), CRC32C.checksum(b), b.count) == CRC32C.checksum(a + b))
    }
}
