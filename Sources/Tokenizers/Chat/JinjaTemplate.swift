import Foundation

/// An error in a chat template: a syntax error when it is parsed, or a runtime error (including
/// the template's own `raise_exception`) when it renders. The target's one error type,
/// ``TokenizerError``, of kind `.template`.
public typealias TemplateError = TokenizerError

/// A Jinja template in the subset real chat templates use, rendered as Hugging Face's
/// `apply_chat_template` does with Python's jinja2 (`trim_blocks`, `lstrip_blocks`, loop controls,
/// `tojson` as `json.dumps` without ASCII escaping).
///
/// Statements: `if`/`elif`/`else`, `for` (with `else`, an `if` filter, tuple targets and the `loop`
/// variable), `set` (including `ns.attr` and block `set`), `break`/`continue`, `generation`,
/// `macro` with positional and keyword arguments. Expressions: literals, lists, dicts, attribute,
/// subscript and slice, calls, arithmetic, `~`, comparisons, `in`, `and`/`or`/`not`, tests
/// (`is defined` …), filters, and `x if c else y`.
public struct JinjaTemplate: Sendable {
    let body: [Node]

    public init(_ source: String) throws(TemplateError) {
        let tokens = try JinjaLexer.tokens(of: source)
        var parser = JinjaParser(tokens: tokens)
        body = try parser.parseAll()
    }

    /// Renders with `context` as the global variables.
    public func render(_ context: [String: JinjaValue]) throws(TemplateError) -> String {
        var interpreter = JinjaInterpreter(globals: context)
        var out = ""
        do {
            try interpreter.run(body, into: &out)
        } catch let signal as LoopSignal {
            throw TemplateError("\(signal) outside a loop")
        } catch let error as TemplateError {
            throw error
        } catch {
            throw TemplateError("\(error)")
        }
        return out
    }
}

// MARK: - Lexer

enum TemplatePiece {
    case text(String)
    case output([ExprToken])
    case statement([ExprToken])
}

enum ExprToken: Equatable {
    case name(String)
    case string(String)
    case int(Int)
    case double(Double)
    case op(String)
}

enum JinjaLexer {
    static func tokens(of source: String) throws(TemplateError) -> [TemplatePiece] {
        let s = Array(source.unicodeScalars)
        var pieces: [TemplatePiece] = []
        var text: [Unicode.Scalar] = []
        var i = 0
        var stripNextLeading = false
        var trimNextNewline = false

        func flushText(stripTrailing: Bool, lstrip: Bool) {
            var t = text
            if stripNextLeading {
                while let f = t.first, f.properties.isWhitespace { t.removeFirst() }
            } else if trimNextNewline {
                if t.first == "\n" {
                    t.removeFirst()
                } else if t.count >= 2 && t[0] == "\r" && t[1] == "\n" {
                    t.removeFirst(2)
                }
            }
            if stripTrailing {
                while let l = t.last, l.properties.isWhitespace { t.removeLast() }
            } else if lstrip {
                var j = t.count
                while j > 0 && (t[j - 1] == " " || t[j - 1] == "\t") { j -= 1 }
                if j == 0 || t[j - 1] == "\n" { t.removeLast(t.count - j) }
            }
            if !t.isEmpty { pieces.append(.text(String(String.UnicodeScalarView(t)))) }
            text = []
            stripNextLeading = false
            trimNextNewline = false
        }

        while i < s.count {
            guard s[i] == "{", i + 1 < s.count, s[i + 1] == "{" || s[i + 1] == "%" || s[i + 1] == "#" else {
                text.append(s[i])
                i += 1
                continue
            }
            let kind = s[i + 1]
            var j = i + 2
            var leftStrip = false, plus = false
            if j < s.count && s[j] == "-" {
                leftStrip = true; j += 1
            } else if j < s.count && s[j] == "+" {
                plus = true; j += 1
            }
            let close: Unicode.Scalar = kind == "{" ? "}" : kind
            // Find the closing delimiter (skipping string literals inside tags).
            var k = j
            var quote: Unicode.Scalar?
            var end = -1
            while k + 1 < s.count {
                if let q = quote {
                    if s[k] == "\\" { k += 2; continue }
                    if s[k] == q { quote = nil }
                } else if kind != "#" && (s[k] == "'" || s[k] == "\"") {
                    quote = s[k]
                } else if s[k] == close && s[k + 1] == "}" {
                    end = k
                    break
                }
                k += 1
            }
            guard end >= 0 else { throw TemplateError("unclosed {\(kind) tag at offset \(i)") }
            var innerEnd = end
            var rightStrip = false
            if innerEnd > j && s[innerEnd - 1] == "-" { rightStrip = true; innerEnd -= 1 }
            let inner = String(String.UnicodeScalarView(s[j..<innerEnd]))
            flushText(stripTrailing: leftStrip, lstrip: kind != "{" && !plus)
            i = end + 2
            switch kind {
            case "#": break
            case "{": pieces.append(.output(try expressionTokens(inner)))
            default:
                let tokens = try expressionTokens(inner)
                if tokens.first == .name("raw") { throw TemplateError("{% raw %} blocks are not supported") }
                pieces.append(.statement(tokens))
            }
            if rightStrip { stripNextLeading = true } else if kind != "{" { trimNextNewline = true }
        }
        flushText(stripTrailing: false, lstrip: false)
        return pieces
    }

    static func expressionTokens(_ source: String) throws(TemplateError) -> [ExprToken] {
        let s = Array(source.unicodeScalars)
        var out: [ExprToken] = []
        var i = 0
        while i < s.count {
            let c = s[i]
            if c.properties.isWhitespace { i += 1; continue }
            if c == "'" || c == "\"" {
                var value = ""
                var j = i + 1
                while j < s.count && s[j] != c {
                    if s[j] == "\\" && j + 1 < s.count {
                        j += 1
                        switch s[j] {
                        case "n": value += "\n"
                        case "t": value += "\t"
                        case "r": value += "\r"
                        case "\\": value += "\\"
                        case "'": value += "'"
                        case "\"": value += "\""
                        default: value += "\\" + String(s[j])
                        }
                    } else {
                        value.unicodeScalars.append(s[j])
                    }
                    j += 1
                }
                guard j < s.count else { throw TemplateError("unterminated string in `\(source)`") }
                out.append(.string(value))
                i = j + 1
                continue
            }
            if c.properties.numericType != nil && ("0"..."9").contains(c) {
                var j = i
                var isDouble = false
                while j < s.count
                    && (("0"..."9").contains(s[j]) || s[j] == "_"
                        || (s[j] == "." && !isDouble && j + 1 < s.count && ("0"..."9").contains(s[j + 1])))
                {
                    if s[j] == "." { isDouble = true }
                    j += 1
                }
                let text = String(String.UnicodeScalarView(s[i..<j])).replacingOccurrences(of: "_", with: "")
                out.append(isDouble ? .double(Double(text)!) : .int(Int(text) ?? 0))
                i = j
                continue
            }
            if c == "_" || c.properties.isAlphabetic {
                var j = i
                while j < s.count && (s[j] == "_" || s[j].properties.isAlphabetic || ("0"..."9").contains(s[j])) {
                    j += 1
                }
                out.append(.name(String(String.UnicodeScalarView(s[i..<j]))))
                i = j
                continue
            }
            let two = i + 1 < s.count ? String(c) + String(s[i + 1]) : ""
            if ["==", "!=", "<=", ">=", "//", "**"].contains(two) {
                out.append(.op(two))
                i += 2
                continue
            }
            guard "+-*/%~<>=()[]{}.,:|".unicodeScalars.contains(c) else {
                throw TemplateError("unexpected character `\(c)` in `\(source)`")
            }
            out.append(.op(String(c)))
            i += 1
        }
        return out
    }
}
