import Checkpoint
import Crypto

/// SHA-256 of a file, hex-encoded, read in 8 MiB pieces.
func sha256Hex(ofFileAt path: String) throws -> String {
    let file = try Checkpoint.FileHandle.openForReading(path)
    let size = try file.size()
    var hasher = SHA256()
    let chunk = 8 << 20
    var buffer = [UInt8](repeating: 0, count: chunk)
    var offset: Int64 = 0
    while offset < size {
        let count = Int(min(Int64(chunk), size - offset))
        try buffer.withUnsafeMutableBytes { try file.read(into: $0.baseAddress!, count: count, at: offset) }
        buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
        offset += Int64(count)
    }
    return hasher.finalize().map { byte in
        let hex = String(byte, radix: 16)
        return hex.count == 1 ? "0" + hex : hex
    }.joined()
}
