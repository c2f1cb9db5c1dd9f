import Foundation
import Store

/// Parses Go-style durations as Ollama accepts them: `5m`, `1h30m`, `90s`, `1.5s`, `500ms`.
func parseDuration(_ text: String) -> Duration? {
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

/// The longest duration a setting takes (ten years): beyond it timers would overflow the clock.
let longestDuration = 10 * 365 * 86_400.0

/// `seconds` as a duration, or nil when it is not finite, negative or longer than `longestDuration`.
func checkedDuration(seconds: Double) -> Duration? {
    guard seconds.isFinite, seconds >= 0, seconds <= longestDuration else { return nil }
    return .milliseconds(Int64((seconds * 1000).rounded()))
}

/// `5m`, `1h30m`, `45s`, `1.5s`, `0s`.
func formatDuration(_ duration: Duration) -> String {
    let milliseconds = Int64((duration.seconds * 1000).rounded())
    if milliseconds % 1000 != 0 { return milliseconds < 1000 ? "\(milliseconds)ms" : String(format: "%.1fs", Double(milliseconds) / 1000) }
    var seconds = milliseconds / 1000
    if seconds == 0 { return "0s" }
    var text = ""
    if seconds >= 3600 { text += "\(seconds / 3600)h"; seconds %= 3600 }
    if seconds >= 60 { text += "\(seconds / 60)m"; seconds %= 60 }
    if seconds > 0 { text += "\(seconds)s" }
    return text
}
