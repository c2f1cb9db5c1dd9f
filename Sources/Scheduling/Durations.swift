/// The longest duration a setting takes (ten years): beyond it timers would overflow the clock.
public let longestDuration = 10 * 365 * 86_400.0

/// Parses Go-style durations as Ollama accepts them: `5m`, `1h30m`, `90s`, `1.5s`, `500ms`.
public func parseDuration(_ text: String) -> Duration? {
    let units: [(String, Double)] = [("ms", 0.001), ("h", 3600), ("m", 60), ("s", 1)]
    var rest = Substring(text.lowercased())
    var total = 0.0
    guard !rest.isEmpty else { return nil }
    while !rest.isEmpty {
        let number = rest.prefix { $0.isNumber || $0 == "." }
        guard !number.isEmpty, let value = Double(number) else { return nil }
        rest = rest.dropFirst(number.count)
        guard let (unit, scale) = units.first(where: { rest.hasPrefix($0.0) }) else { return nil }
        rest = rest.dropFirst(unit.count)
        total += value * scale
    }
    return checkedDuration(seconds: total)
}

/// `seconds` as a duration, or nil when it is not finite, negative or longer than `longestDuration`.
public func checkedDuration(seconds: Double) -> Duration? {
    guard seconds.isFinite, seconds >= 0, seconds <= longestDuration else { return nil }
    return .milliseconds(Int64((seconds * 1000).rounded()))
}

/// `5m`, `1h30m`, `45s`, `1.5s`, `250ms`, `0s`.
public func formatDuration(_ duration: Duration) -> String {
    let (whole, attoseconds) = duration.components
    let milliseconds = whole * 1000 + attoseconds / 1_000_000_000_000_000
    if milliseconds % 1000 != 0 {
        if milliseconds < 1000 { return "\(milliseconds)ms" }
        let tenths = (milliseconds + 50) / 100
        return "\(tenths / 10).\(tenths % 10)s"
    }
    var seconds = milliseconds / 1000
    if seconds == 0 { return "0s" }
    var text = ""
    if seconds >= 3600 { text += "\(seconds / 3600)h"; seconds %= 3600 }
    if seconds >= 60 { text += "\(seconds / 60)m"; seconds %= 60 }
    if seconds > 0 { text += "\(seconds)s" }
    return text
}

extension Duration {
    /// The duration in seconds, as a `Double`.
    var secondsValue: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) * 1e-18
    }
}
