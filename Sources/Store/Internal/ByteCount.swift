import Foundation

/// `1.5 GiB`, `12.0 MiB`, `512 B`.
public func formatBytes(_ bytes: Int64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
}

/// Parses `4GiB`, `512M`, `1g`, `4096` into bytes.
public func parseByteCount(_ text: String) -> Int? {
    let lowered = text.lowercased().replacingOccurrences(of: " ", with: "")
    let suffixes: [(String, Int)] = [
        ("tib", 1 << 40), ("gib", 1 << 30), ("mib", 1 << 20), ("kib", 1 << 10),
        ("tb", 1 << 40), ("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10),
        ("t", 1 << 40), ("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10), ("b", 1),
    ]
    for (suffix, scale) in suffixes where lowered.hasSuffix(suffix) {
        guard let number = Double(lowered.dropLast(suffix.count)), number >= 0 else { return nil }
        let bytes = number * Double(scale)
        // Not-a-number, infinities and counts beyond Int are refused, not trapped on.
        guard bytes.isFinite, bytes < 0x1p62 else { return nil }
        return Int(bytes)
    }
    return Int(lowered).flatMap { $0 >= 0 ? $0 : nil }
}
