import Foundation

/// The limits of one render. A chat template comes from a model file, which is untrusted input:
/// without limits, `{{ 'x' * 100000000000 }}` aborts on a failed allocation and
/// `{% for i in range(1000000000) %}` or a self-calling macro pins a core or overflows the stack.
/// Real chat templates stay orders of magnitude below every limit.
struct RenderBudget {
    /// Statements run, loop iterations and expressions evaluated: about a quarter of a second of
    /// one core here. SmolLM2's template takes about ten per message, so a conversation of
    /// twenty thousand messages fits.
    static let maxSteps = 250_000
    /// Bytes of strings the render creates (output, concatenations, repetitions, filters).
    static let maxBytes = 256 << 20
    /// Elements of lists the render creates (`range`, list concatenation, filters).
    static let maxItems = 16 << 20
    /// Nested macro calls.
    static let maxCallDepth = 64
    /// Widest `indent`/`tojson(indent=)`.
    static let maxIndent = 1024

    private(set) var steps = 0
    private(set) var bytes = 0
    private(set) var items = 0
    private(set) var callDepth = 0

    mutating func step() throws(TemplateError) {
        steps += 1
        if steps > Self.maxSteps {
            throw TemplateError("the template ran more than \(Self.maxSteps) steps (an endless or enormous loop?)")
        }
    }

    mutating func produce(bytes count: Int) throws(TemplateError) {
        bytes = bytes.addingReportingOverflow(max(0, count)).partialValue
        if count < 0 || count > Self.maxBytes || bytes > Self.maxBytes {
            throw TemplateError("the template produced more than \(Self.maxBytes >> 20) MiB of text")
        }
    }

    mutating func produce(items count: Double) throws(TemplateError) {
        guard count.isFinite, count <= Double(Self.maxItems), Double(items) + count <= Double(Self.maxItems) else {
            throw TemplateError("the template built lists of more than \(Self.maxItems) items")
        }
        items += Int(count)
    }

    /// Charges a value a filter or method created.
    mutating func produce(_ value: JinjaValue) throws(TemplateError) {
        switch value {
        case .string(let text): try produce(bytes: text.utf8.count)
        case .array(let values): try produce(items: Double(values.count))
        default: break
        }
    }

    /// Charges what a binary operator is about to create, before it allocates: string
    /// repetition and concatenation, list concatenation.
    mutating func charge(forResultOf op: String, _ a: JinjaValue, _ b: JinjaValue) throws(TemplateError) {
        switch (op, a, b) {
        case ("*", .string(let text), .int(let count)):
            let total = text.utf8.count.multipliedReportingOverflow(by: max(0, count))
            try produce(bytes: total.overflow ? Int.max : total.partialValue)
        case ("+", .string(let x), .string(let y)): try produce(bytes: x.utf8.count + y.utf8.count)
        case ("+", .array(let x), .array(let y)): try produce(items: Double(x.count + y.count))
        case ("~", _, _): try produce(bytes: Self.printedSize(a) + Self.printedSize(b))
        default: break
        }
    }

    mutating func enterCall(_ name: String) throws(TemplateError) {
        callDepth += 1
        if callDepth > Self.maxCallDepth {
            throw TemplateError("macro `\(name)` nested more than \(Self.maxCallDepth) calls deep (endless recursion?)")
        }
    }

    mutating func leaveCall() { callDepth -= 1 }

    /// About how many bytes printing `value` takes (strings, plus a few bytes per element and
    /// `indent` spaces per level for each element of JSON), walked only as far as `maxBytes`:
    /// printing a list that holds one huge string many times is refused before it allocates.
    static func printedSize(_ value: JinjaValue, indent: Int = 0) -> Int {
        var total = 0
        func walk(_ value: JinjaValue, level: Int) {
            guard total <= maxBytes else { return }
            switch value {
            case .string(let text): total += text.utf8.count + 2
            case .array(let values):
                for element in values {
                    total += 8 + indent * (level + 1)
                    walk(element, level: level + 1)
                    if total > maxBytes { return }
                }
            case .object(let object): walk(object: object, level: level)
            case .namespace(let namespace): walk(object: namespace.object, level: level)
            default: total += 24
            }
        }
        func walk(object: JinjaObject, level: Int) {
            for key in object.keys {
                total += key.utf8.count + 8 + indent * (level + 1)
                if let element = object[key] { walk(element, level: level + 1) }
                if total > maxBytes { return }
            }
        }
        walk(value, level: 0)
        return total
    }

    /// Throws unless printing `value` stays within `maxBytes`.
    static func checkPrintable(_ value: JinjaValue, indent: Int = 0, separatorBytes: Int = 0) throws(TemplateError) {
        var size = printedSize(value, indent: indent)
        if separatorBytes > 0, case .array(let values) = value {
            size =
                size.addingReportingOverflow(separatorBytes.multipliedReportingOverflow(by: values.count).partialValue)
                .partialValue
        }
        guard size <= maxBytes else {
            throw TemplateError("the template produced more than \(maxBytes >> 20) MiB of text")
        }
    }

    /// Throws unless replacing `target` by `replacement` in `text` stays within `maxBytes`.
    static func checkReplacement(in text: String, _ target: String, _ replacement: String) throws(TemplateError) {
        let growth = replacement.utf8.count - target.utf8.count
        guard growth > 0, !target.isEmpty else { return }
        let most = text.utf8.count / target.utf8.count
        guard text.utf8.count + most * growth > maxBytes else { return }
        let occurrences = text.components(separatedBy: target).count - 1
        guard text.utf8.count + occurrences * growth <= maxBytes else {
            throw TemplateError("the template produced more than \(maxBytes >> 20) MiB of text")
        }
    }

    static func indentWidth(_ width: Int) throws(TemplateError) -> Int {
        guard (0...maxIndent).contains(width) else {
            throw TemplateError("indent \(width) is outside 0...\(maxIndent)")
        }
        return width
    }
}

/// The value of an integer operation, or an error naming it when it overflows.
func checked(_ result: (partialValue: Int, overflow: Bool), _ expression: @autoclosure () -> String)
    throws(TemplateError) -> Int
{
    guard !result.overflow else { throw TemplateError("integer overflow: \(expression())") }
    return result.partialValue
}
