/// GPT-2's reversible map from bytes to printable Unicode scalars, used by byte-level BPE
/// vocabularies: printable Latin-1 bytes map to themselves, the others to U+0100 and up.
enum ByteLevel {
    /// `scalars[b]` is the scalar that stands for byte `b`.
    static let scalars: [Unicode.Scalar] = {
        var printable: [Int] = Array(33...126) + Array(161...172) + Array(174...255)
        var codes = printable
        var next = 0
        for byte in 0..<256 where !printable.contains(byte) {
            printable.append(byte)
            codes.append(256 + next)
            next += 1
        }
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        for (byte, code) in zip(printable, codes) { table[byte] = Unicode.Scalar(UInt32(code))! }
        return table
    }()

    /// The byte each scalar stands for.
    static let bytes: [Unicode.Scalar: UInt8] = {
        var map: [Unicode.Scalar: UInt8] = [:]
        for (byte, scalar) in scalars.enumerated() { map[scalar] = UInt8(byte) }
        return map
    }()

    /// `text`'s UTF-8 bytes spelled in the byte-level alphabet.
    static func encode(_ text: Substring.UnicodeScalarView) -> String {
        var result = String.UnicodeScalarView()
        for byte in String(text).utf8 { result.append(scalars[Int(byte)]) }
        return String(result)
    }

    /// The bytes a byte-level token spells (scalars outside the alphabet are kept as UTF-8).
    static func decode(_ token: String) -> [UInt8] {
        var out: [UInt8] = []
        for scalar in token.unicodeScalars {
            if let byte = bytes[scalar] { out.append(byte) } else { out += Array(String(scalar).utf8) }
        }
        return out
    }
}
