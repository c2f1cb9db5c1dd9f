/// Splits a server-sent event stream into its events' data, as bytes arrive in chunks of any
/// size: an event ends with a blank line (`\n\n`, `\r\n\r\n` or `\r\r`); its `data:` lines are
/// joined with newlines (comments, `event:`, `id:` and `retry:` lines are skipped). What
/// `sllm status --watch` reads `/admin/events` with.
public struct EventStreamParser: Sendable {
    /// The most bytes one event may take before the stream is refused.
    public let limit: Int
    private var pending: [UInt8] = []
    /// Where the search for the end of the current event goes on (bytes before it hold none).
    private var scanned = 0

    public init(limit: Int = 64 << 20) { self.limit = limit }

    /// An event that outgrew ``limit``.
    public struct TooLarge: Error, CustomStringConvertible {
        public var limit: Int
        public var description: String { "the server sent an event over \(limit >> 20) MiB" }
    }

    /// Adds bytes; returns the data of every event they complete (an event without data gives none).
    public mutating func feed(_ bytes: some Sequence<UInt8>) throws(TooLarge) -> [String] {
        pending.append(contentsOf: bytes)
        var events: [String] = []
        var start = 0
        var index = max(scanned, 0)
        while index < pending.count {
            // A line ends with \n, \r\n or \r; a blank line (two ends in a row) ends the event.
            if let end = Self.blankLineEnd(in: pending, at: index) {
                let data = Self.data(of: pending[start..<index])
                if let data { events.append(data) }
                start = end
                index = end
            } else {
                index += 1
            }
        }
        pending.removeFirst(start)
        // The last bytes may be the start of a blank line still arriving: look at them again.
        scanned = max(0, pending.count - 3)
        guard pending.count <= limit else { throw TooLarge(limit: limit) }
        return events
    }

    /// Where the bytes after a line end followed by an empty line start, when `index` begins one.
    private static func blankLineEnd(in bytes: [UInt8], at index: Int) -> Int? {
        guard let first = lineEnd(in: bytes, at: index), let second = lineEnd(in: bytes, at: first) else { return nil }
        return second
    }

    /// Where the bytes after the line end at `index` start (\r\n, \n or \r); nil when none is
    /// there, or a \r is the last byte (its \n may be on the way).
    private static func lineEnd(in bytes: [UInt8], at index: Int) -> Int? {
        guard index < bytes.count else { return nil }
        switch bytes[index] {
        case 10: return index + 1
        case 13:
            guard index + 1 < bytes.count else { return nil }
            return bytes[index + 1] == 10 ? index + 2 : index + 1
        default: return nil
        }
    }

    /// The data of one event's lines, nil when it has none.
    private static func data(of block: ArraySlice<UInt8>) -> String? {
        let text = String(decoding: block, as: UTF8.self)
        var lines: [Substring] = []
        for line in text.split(
            omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r" || $0 == "\r\n" })
        {
            guard line.hasPrefix("data:") else { continue }
            let value = line.dropFirst(5)
            lines.append(value.hasPrefix(" ") ? value.dropFirst() : value)
        }
        return lines.isEmpty ? nil : lines.joined(separator: "\n")
    }
}
