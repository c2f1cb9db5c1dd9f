import Foundation
import Tokenizers

/// Builds JSON text by hand for the streaming hot path (one chunk per token), where a
/// `JSONEncoder` per chunk would cost more than the rest of the server's work.
struct JSONWriter {
    private(set) var text = "{"
    private var first = true

    init() {}

    private mutating func key(_ name: String) {
        if !first { text += "," }
        first = false
        text += JSONWriter.quote(name) + ":"
    }

    mutating func string(_ name: String, _ value: String?) {
        key(name)
        if let value { text += JSONWriter.quote(value) } else { text += "null" }
    }

    mutating func int(_ name: String, _ value: Int?) {
        key(name)
        text += value.map(String.init) ?? "null"
    }

    mutating func number(_ name: String, _ value: Double?) {
        key(name)
        if let value, value.isFinite {
            text += JSONWriter.format(value)
        } else {
            text += value == nil ? "null" : "-9999.0"
        }
    }

    mutating func bool(_ name: String, _ value: Bool) {
        key(name)
        text += value ? "true" : "false"
    }

    /// A value already rendered as JSON.
    mutating func raw(_ name: String, _ json: String) {
        key(name)
        text += json
    }

    mutating func object(_ name: String, _ build: (inout JSONWriter) -> Void) {
        var inner = JSONWriter()
        build(&inner)
        raw(name, inner.finished)
    }

    var finished: String { text + "}" }

    /// Renders values as a JSON array.
    static func array<T>(_ items: [T], _ render: (T) -> String) -> String {
        "[" + items.map(render).joined(separator: ",") + "]"
    }

    /// Swift's shortest round-tripping form (`12.5`, `-0.25`, `3.0`), valid JSON for finite values.
    static func format(_ value: Double) -> String { "\(value)" }

    /// A JSON string literal (the escaping the chat templates' `tojson` uses).
    static func quote(_ value: String) -> String { JSONText.quote(value) }
}
