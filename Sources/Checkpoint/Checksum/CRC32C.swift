import CKernels

/// CRC-32C (Castagnoli), the checksum of every checkpoint block and tensor.
///
/// Hardware-assisted with SSE4.2 where available. `crc32c(b, seed: crc32c(a))` equals
/// `crc32c(a + b)`, so a stream can be hashed piece by piece.
public enum CRC32C {
    /// The CRC-32C of `bytes`, continuing from `seed` (0 to start).
    public static func checksum(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress else { return seed }
        return sllm_crc32c(seed, base, bytes.count)
    }

    /// The CRC-32C of `bytes`.
    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0) }
    }

    /// One CRC-32C per `blockSize` bytes of `bytes` (the last block may be shorter), appended to `out`.
    public static func blockChecksums(_ bytes: UnsafeRawBufferPointer, blockSize: Int, into out: inout [UInt32]) {
        guard let base = bytes.baseAddress, bytes.count > 0, blockSize > 0 else { return }
        let count = (bytes.count + blockSize - 1) / blockSize
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: count))
        out.withUnsafeMutableBufferPointer { buffer in
            sllm_crc32c_blocks(base, bytes.count, blockSize, buffer.baseAddress! + start)
        }
    }

    /// Whether the SSE4.2 instruction is used.
    public static var isHardwareAccelerated: Bool { sllm_crc32c_hardware() != 0 }
}
