import Foundation

enum LoopSignal: Error, CustomStringConvertible {
    case breakLoop, continueLoop
    var description: String { self == .breakLoop ? "{% break %}" : "{% continue %}" }
}

struct Macro {
    var parameters: [(name: String, defaultValue: Expr?)]
    var body: [Node]
}

struct JinjaInterpreter {
    var scopes: [[String: JinjaValue]]
    var macros: [String: Macro] = [:]
    /// What this render has spent of its limits (`JinjaInterpreter+Limits.swift`).
    var budget = RenderBudget()

    init(globals: [String: JinjaValue]) { scopes = [globals] }

    func lookup(_ name: String) -> JinjaValue {
        for scope in scopes.reversed() { if let value = scope[name] { return value } }
        return .undefined(name)
    }

    mutating func assign(_ name: String, _ value: JinjaValue) { scopes[scopes.count - 1][name] = value }

    mutating func run(_ nodes: [Node], into out: inout String) throws {
        for node in nodes {
            try budget.step()
            switch node {
            case .text(let text):
                try budget.produce(bytes: text.utf8.count)
                out += text
            case .output(let expression):
                let value = try evaluate(expression)
                try RenderBudget.checkPrintable(value)
                let printed = value.printed
                try budget.produce(bytes: printed.utf8.count)
                out += printed
            case .conditional(let branches):
                for branch in branches where try branch.condition.map({ try evaluate($0).truthy }) ?? true {
                    try run(branch.body, into: &out)
                    break
                }
            case .loop(let targets, let iterable, let filter, let body, let otherwise):
                try runLoop(
                    targets: targets, iterable: iterable, filter: filter, body: body, otherwise: otherwise, into: &out)
            case .assign(let target, let value):
                let result = try evaluate(value)
                switch target {
                case .name(let name): assign(name, result)
                case .attribute(.name(let object), let attribute):
                    guard case .namespace(let namespace) = lookup(object) else {
                        throw TemplateError("cannot assign to \(object).\(attribute): \(object) is not a namespace")
                    }
                    namespace.object[attribute] = result
                case .list(let names):
                    guard case .array(let values) = result, values.count == names.count else {
                        throw TemplateError("set: cannot unpack \(result.typeName)")
                    }
                    for (name, value) in zip(names, values) {
                        guard case .name(let n) = name else { throw TemplateError("set: bad target") }
                        assign(n, value)
                    }
                default: throw TemplateError("set: unsupported assignment target")
                }
            case .assignBlock(let name, let body):
                var captured = ""
                try run(body, into: &captured)
                assign(name, .string(captured))
            case .breakLoop: throw LoopSignal.breakLoop
            case .continueLoop: throw LoopSignal.continueLoop
            case .macro(let name, let parameters, let body):
                macros[name] = Macro(parameters: parameters, body: body)
            }
        }
    }

    mutating func runLoop(
        targets: [String], iterable: Expr, filter: Expr?, body: [Node], otherwise: [Node], into out: inout String
    ) throws {
        let source = try evaluate(iterable)
        var items: [JinjaValue]
        switch source {
        case .array(let values): items = values
        case .object(let object): items = object.keys.map { .string($0) }
        case .string(let string): items = string.map { .string(String($0)) }
        case .undefined, .none: items = []
        default: throw TemplateError("cannot loop over a \(source.typeName)")
        }
        scopes.append([:])
        defer { scopes.removeLast() }
        func bind(_ item: JinjaValue) throws {
            if targets.count == 1 {
                assign(targets[0], item)
            } else {
                guard case .array(let parts) = item, parts.count == targets.count else {
                    throw TemplateError("cannot unpack \(item.typeName) into \(targets.count) loop variables")
                }
                for (name, part) in zip(targets, parts) { assign(name, part) }
            }
        }
        if let filter {
            items = try items.filter { item in
                try bind(item)
                return try evaluate(filter).truthy
            }
        }
        if items.isEmpty {
            try run(otherwise, into: &out)
            return
        }
        for (i, item) in items.enumerated() {
            try budget.step()  // an empty body still costs an iteration
            try bind(item)
            assign(
                "loop",
                .object(
                    JinjaObject([
                        ("index", .int(i + 1)), ("index0", .int(i)), ("first", .bool(i == 0)),
                        ("last", .bool(i == items.count - 1)),
                        ("length", .int(items.count)), ("revindex", .int(items.count - i)),
                        ("revindex0", .int(items.count - i - 1)),
                        ("previtem", i > 0 ? items[i - 1] : .undefined("previtem")),
                        ("nextitem", i + 1 < items.count ? items[i + 1] : .undefined("nextitem")),
                    ])))
            do {
                try run(body, into: &out)
            } catch LoopSignal.breakLoop {
                break
            } catch LoopSignal.continueLoop {
                continue
            }
        }
    }

    // MARK: - Expressions

    mutating func evaluate(_ expression: Expr) throws -> JinjaValue {
        try budget.step()
        switch expression {
        case .literal(let value): return value
        case .name(let name): return lookup(name)
        case .list(let items): return .array(try items.map { try evaluate($0) })
        case .dict(let pairs):
            var object = JinjaObject()
            for (key, value) in pairs {
                guard case .string(let k) = try evaluate(key) else { throw TemplateError("dict keys must be strings") }
                object[k] = try evaluate(value)
            }
            return .object(object)
        case .attribute(let base, let name):
            return try member(try evaluate(base), name)
        case .subscript(let base, let index):
            let container = try evaluate(base)
            let key = try evaluate(index)
            switch (container, key) {
            case (.array(let items), .int(let i)):
                let at = i < 0 ? items.count + i : i
                return items.indices.contains(at) ? items[at] : .undefined("[\(i)]")
            case (.string(let s), .int(let i)):
                let chars = Array(s)
                let at = i < 0 ? chars.count + i : i
                return chars.indices.contains(at) ? .string(String(chars[at])) : .undefined("[\(i)]")
            case (_, .string(let name)): return try member(container, name)
            case (.undefined(let what), _): throw TemplateError("\(what) is undefined")
            default: return .undefined("[\(key.printed)]")
            }
        case .slice(let base, let start, let stop, let step):
            let value = try evaluate(base)
            let s = try start.map { try evaluate($0) }, e = try stop.map { try evaluate($0) },
                st = try step.map { try evaluate($0) }
            func int(_ v: JinjaValue?) -> Int? { if case .int(let i)? = v { return i }; return nil }
            func sliced<T>(_ items: [T]) -> [T] {
                let n = items.count
                let stepValue = int(st) ?? 1
                func clamp(_ i: Int?, _ fallback: Int) -> Int {
                    guard var i else { return fallback }
                    if i < 0 { i += n }
                    return stepValue > 0 ? min(max(i, 0), n) : min(max(i, -1), n - 1)
                }
                var out: [T] = []
                if stepValue > 0 {
                    var i = clamp(int(s), 0)
                    let end = clamp(int(e), n)
                    while i < end {
                        out.append(items[i])
                        let next = i.addingReportingOverflow(stepValue)
                        if next.overflow { break }
                        i = next.partialValue
                    }
                } else {
                    var i = clamp(int(s), n - 1)
                    let end = clamp(int(e), -1)
                    while i > end {
                        out.append(items[i])
                        let next = i.addingReportingOverflow(stepValue)
                        if next.overflow { break }
                        i = next.partialValue
                    }
                }
                return out
            }
            switch value {
            case .array(let items): return .array(sliced(items))
            case .string(let string): return .string(String(sliced(Array(string))))
            default: throw TemplateError("cannot slice a \(value.typeName)")
            }
        case .call(let callee, let args, let kwargs):
            return try call(callee, try args.map { try evaluate($0) }, try kwargs.map { ($0.0, try evaluate($0.1)) })
        case .unary(let op, let operand):
            let value = try evaluate(operand)
            switch op {
            case "not": return .bool(!value.truthy)
            default:
                switch value {
                case .int(let i): return .int(try checked(0.subtractingReportingOverflow(i), "-\(i)"))
                case .double(let d): return .double(-d)
                default: throw TemplateError("cannot negate a \(value.typeName)")
                }
            }
        case .and(let a, let b):
            let left = try evaluate(a)
            return left.truthy ? try evaluate(b) : left
        case .or(let a, let b):
            let left = try evaluate(a)
            return left.truthy ? left : try evaluate(b)
        case .binary(let op, let a, let b):
            let left = try evaluate(a), right = try evaluate(b)
            try budget.charge(forResultOf: op, left, right)
            return try binary(op, left, right)
        case .ternary(let value, let condition, let otherwise):
            if try evaluate(condition).truthy { return try evaluate(value) }
            return try otherwise.map { try evaluate($0) } ?? .undefined("else")
        case .test(let operand, let name, let args, let negated):
            let result = try test(name, try evaluate(operand), try args.map { try evaluate($0) })
            return .bool(result != negated)
        case .filter(let operand, let name, let args, let kwargs):
            let result = try filter(
                name, try evaluate(operand), try args.map { try evaluate($0) },
                try kwargs.map { ($0.0, try evaluate($0.1)) })
            try budget.produce(result)
            return result
        }
    }

    func member(_ value: JinjaValue, _ name: String) throws -> JinjaValue {
        switch value {
        case .object(let object): return object[name] ?? .undefined(name)
        case .namespace(let namespace): return namespace.object[name] ?? .undefined(name)
        case .undefined(let what): throw TemplateError("\(what) is undefined (reading .\(name))")
        default: return .undefined(name)
        }
    }

    func binary(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws -> JinjaValue {
        switch op {
        case "==": return .bool(a == b)
        case "!=": return .bool(a != b)
        case "~": return .string(a.printed + b.printed)
        case "in":
            switch b {
            case .string(let s):
                guard case .string(let needle) = a else {
                    throw TemplateError("`in <string>` needs a string on the left")
                }
                return .bool(needle.isEmpty || s.contains(needle))
            case .array(let items): return .bool(items.contains(a))
            case .object(let object):
                guard case .string(let key) = a else { return .bool(false) }
                return .bool(object[key] != nil)
            case .undefined(let what): throw TemplateError("\(what) is undefined (`in`)")
            default: throw TemplateError("cannot test membership in a \(b.typeName)")
            }
        case "<", ">", "<=", ">=":
            let ordered: Bool
            switch (a, b) {
            case (.string(let x), .string(let y)):
                ordered = op == "<" ? x < y : op == ">" ? x > y : op == "<=" ? x <= y : x >= y
            default:
                guard let x = number(a), let y = number(b) else {
                    throw TemplateError("cannot compare \(a.typeName) with \(b.typeName)")
                }
                ordered = op == "<" ? x < y : op == ">" ? x > y : op == "<=" ? x <= y : x >= y
            }
            return .bool(ordered)
        case "+":
            switch (a, b) {
            case (.string(let x), .string(let y)): return .string(x + y)
            case (.array(let x), .array(let y)): return .array(x + y)
            case (.int(let x), .int(let y)): return .int(try checked(x.addingReportingOverflow(y), "\(x) + \(y)"))
            default:
                guard let x = number(a), let y = number(b) else {
                    throw TemplateError("cannot add \(a.typeName) and \(b.typeName)")
                }
                return .double(x + y)
            }
        case "-", "*", "/", "//", "%", "**":
            // The size was charged to the budget (and refused past it) before this allocates.
            if op == "*", case .string(let s) = a, case .int(let n) = b {
                return .string(String(repeating: s, count: max(0, n)))
            }
            if case .int(let x) = a, case .int(let y) = b, op != "/" {
                switch op {
                case "-": return .int(try checked(x.subtractingReportingOverflow(y), "\(x) - \(y)"))
                case "*": return .int(try checked(x.multipliedReportingOverflow(by: y), "\(x) * \(y)"))
                case "//", "%":
                    guard y != 0 else { throw TemplateError("division by zero") }
                    // Python floors; Int.min // -1 is the one quotient that overflows.
                    var q = try checked(x.dividedReportingOverflow(by: y), "\(x) // \(y)")
                    if (x % y != 0) && ((x < 0) != (y < 0)) { q -= 1 }
                    return .int(op == "//" ? q : x - q * y)
                default:
                    let power = pow(Double(x), Double(y))
                    guard y >= 0 else { return .double(power) }
                    guard let exact = Int(exactly: power.rounded()), abs(power) < 0x1p53 else {
                        throw TemplateError("integer overflow: \(x) ** \(y)")
                    }
                    return .int(exact)
                }
            }
            guard let x = number(a), let y = number(b) else {
                throw TemplateError("cannot apply \(op) to \(a.typeName) and \(b.typeName)")
            }
            switch op {
            case "-": return .double(x - y)
            case "*": return .double(x * y)
            case "/":
                guard y != 0 else { throw TemplateError("division by zero") }
                return .double(x / y)
            case "//": return .double((x / y).rounded(.down))
            case "%": return .double(x - (x / y).rounded(.down) * y)
            default: return .double(pow(x, y))
            }
        default: throw TemplateError("unknown operator \(op)")
        }
    }

    func number(_ value: JinjaValue) -> Double? {
        switch value {
        case .int(let i): Double(i)
        case .double(let d): d
        case .bool(let b): b ? 1 : 0
        default: nil
        }
    }

    mutating func call(_ callee: Expr, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws -> JinjaValue {
        if case .attribute(let base, let method) = callee {
            return try callMethod(method, on: try evaluate(base), args)
        }
        guard case .name(let name) = callee else { throw TemplateError("only named functions can be called") }
        if let macro = macros[name] {
            var scope: [String: JinjaValue] = [:]
            for (i, parameter) in macro.parameters.enumerated() {
                if i < args.count {
                    scope[parameter.name] = args[i]
                } else if let value = kwargs.first(where: { $0.0 == parameter.name })?.1 {
                    scope[parameter.name] = value
                } else if let defaultValue = parameter.defaultValue {
                    scope[parameter.name] = try evaluate(defaultValue)
                } else {
                    scope[parameter.name] = .undefined(parameter.name)
                }
            }
            try budget.enterCall(name)
            scopes.append(scope)
            defer {
                scopes.removeLast()
                budget.leaveCall()
            }
            var out = ""
            try run(macro.body, into: &out)
            return .string(out)
        }
        switch name {
        case "raise_exception":
            throw TemplateError(args.first?.printed ?? "raise_exception")
        case "namespace":
            let namespace = JinjaNamespace()
            for (key, value) in kwargs { namespace.object[key] = value }
            return .namespace(namespace)
        case "range":
            let ints = args.compactMap { if case .int(let i) = $0 { return i } else { return nil } }
            guard (1...3).contains(ints.count), ints.count == args.count else {
                throw TemplateError("range takes 1 to 3 integers (got \(args.map(\.typeName).joined(separator: ", ")))")
            }
            let (start, stop, step) =
                ints.count == 1 ? (0, ints[0], 1) : (ints[0], ints[1], ints.count > 2 ? ints[2] : 1)
            guard step != 0 else { throw TemplateError("range step must not be zero") }
            // Counted in doubles: the distance between two Ints may not fit an Int.
            let count = max(0, ((Double(stop) - Double(start)) / Double(step)).rounded(.up))
            try budget.produce(items: count)
            return .array(Array(stride(from: start, to: stop, by: step)).map { .int($0) })
        case "strftime_now":
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            let format = args.first?.printed ?? "%Y-%m-%d"
            formatter.dateFormat = format.replacingOccurrences(of: "%d", with: "dd").replacingOccurrences(
                of: "%b", with: "MMM"
            )
            .replacingOccurrences(of: "%B", with: "MMMM").replacingOccurrences(of: "%Y", with: "yyyy")
            .replacingOccurrences(of: "%m", with: "MM").replacingOccurrences(of: "%H", with: "HH").replacingOccurrences(
                of: "%M", with: "mm")
            return .string(formatter.string(from: Date()))
        default:
            throw TemplateError("\(name) is not a function")
        }
    }

    func callMethod(_ method: String, on value: JinjaValue, _ args: [JinjaValue]) throws -> JinjaValue {
        switch (value, method) {
        case (.object(let object), "items"): return .array(object.keys.map { .array([.string($0), object[$0]!]) })
        case (.object(let object), "keys"): return .array(object.keys.map { .string($0) })
        case (.object(let object), "values"): return .array(object.keys.map { object[$0]! })
        case (.object(let object), "get"):
            guard case .string(let key)? = args.first else { return args.count > 1 ? args[1] : .none }
            return object[key] ?? (args.count > 1 ? args[1] : .none)
        case (.string(let s), "strip"): return .string(pythonStrip(s, args.first, leading: true, trailing: true))
        case (.string(let s), "lstrip"): return .string(pythonStrip(s, args.first, leading: true, trailing: false))
        case (.string(let s), "rstrip"): return .string(pythonStrip(s, args.first, leading: false, trailing: true))
        case (.string(let s), "upper"): return .string(s.uppercased())
        case (.string(let s), "lower"): return .string(s.lowercased())
        case (.string(let s), "title"): return .string(s.capitalized)
        case (.string(let s), "capitalize"): return .string(s.prefix(1).uppercased() + s.dropFirst().lowercased())
        case (.string(let s), "startswith"): return .bool(s.hasPrefix(args.first?.printed ?? ""))
        case (.string(let s), "endswith"): return .bool(s.hasSuffix(args.first?.printed ?? ""))
        case (.string(let s), "replace"):
            guard args.count >= 2 else { throw TemplateError("replace needs two arguments") }
            try RenderBudget.checkReplacement(in: s, args[0].printed, args[1].printed)
            return .string(s.replacingOccurrences(of: args[0].printed, with: args[1].printed))
        case (.string(let s), "split"):
            if let separator = args.first, case .string(let sep) = separator {
                return .array(s.components(separatedBy: sep).map { .string($0) })
            }
            return .array(s.split(whereSeparator: { $0.isWhitespace }).map { .string(String($0)) })
        case (.string(let s), "join"):
            guard case .array(let items)? = args.first else { throw TemplateError("join needs a list") }
            try RenderBudget.checkPrintable(.array(items), separatorBytes: s.utf8.count)
            return .string(items.map(\.printed).joined(separator: s))
        case (.undefined(let what), _): throw TemplateError("\(what) is undefined (calling .\(method)())")
        default: throw TemplateError("\(value.typeName) has no method \(method)")
        }
    }

    func pythonStrip(_ s: String, _ characters: JinjaValue?, leading: Bool, trailing: Bool) -> String {
        let set: (Character) -> Bool
        if case .string(let chars)? = characters { set = { chars.contains($0) } } else { set = { $0.isWhitespace } }
        var result = Substring(s)
        if leading { result = result.drop(while: set) }
        if trailing { while let last = result.last, set(last) { result = result.dropLast() } }
        return String(result)
    }

    func test(_ name: String, _ value: JinjaValue, _ args: [JinjaValue]) throws -> Bool {
        switch name {
        case "defined": return value.isDefined
        case "undefined": return !value.isDefined
        case "none": if case .none = value { return true }; return false
        case "string": if case .string = value { return true }; return false
        case "number":
            switch value {
            case .int, .double: return true;
            default: return false
            }
        case "integer": if case .int = value { return true }; return false
        case "float": if case .double = value { return true }; return false
        case "boolean": if case .bool = value { return true }; return false
        case "true": return value == .bool(true)
        case "false": return value == .bool(false)
        case "mapping":
            switch value {
            case .object, .namespace: return true;
            default: return false
            }
        case "sequence", "iterable":
            switch value {
            case .array, .string, .object: return true;
            default: return false
            }
        case "callable": return false
        case "equalto", "eq", "sameas": return value == (args.first ?? .none)
        case "ne": return value != (args.first ?? .none)
        case "odd", "even":
            guard case .int(let i) = value else { throw TemplateError("\(name) needs an integer") }
            return (i % 2 != 0) == (name == "odd")
        case "divisibleby":
            guard case .int(let i) = value, case .int(let d)? = args.first, d != 0 else {
                throw TemplateError("divisibleby needs integers")
            }
            return i % d == 0
        case "lower": if case .string(let s) = value { return s == s.lowercased() }; return false
        case "upper": if case .string(let s) = value { return s == s.uppercased() }; return false
        case "in": return try binary("in", value, args.first ?? .none).truthy
        default: throw TemplateError("unknown test `\(name)`")
        }
    }
}

extension JinjaInterpreter {
    /// Filters that print their value (`str(value)`) before working on the text.
    static let printingFilters: Set<String> = [
        "string", "lower", "upper", "capitalize", "title", "trim", "replace", "indent", "float", "safe", "e", "escape",
        "center", "truncate", "wordcount",
    ]

    mutating func filter(_ name: String, _ value: JinjaValue, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)])
        throws -> JinjaValue
    {
        func kw(_ key: String) -> JinjaValue? { kwargs.first { $0.0 == key }?.1 }
        if Self.printingFilters.contains(name) { try RenderBudget.checkPrintable(value) }
        func list(_ v: JinjaValue) throws -> [JinjaValue] {
            switch v {
            case .array(let items): return items
            case .string(let s): return s.map { .string(String($0)) }
            case .object(let o): return o.keys.map { .string($0) }
            case .undefined, .none: return []
            default: throw TemplateError("\(name): a \(v.typeName) is not a sequence")
            }
        }
        switch name {
        case "trim":
            guard case .string(let s) = value else { return value }
            return .string(pythonStrip(s, args.first, leading: true, trailing: true))
        case "length", "count":
            switch value {
            case .string(let s): return .int(s.count)
            case .array(let a): return .int(a.count)
            case .object(let o): return .int(o.keys.count)
            case .undefined(let what): throw TemplateError("\(what) is undefined (length)")
            default: throw TemplateError("a \(value.typeName) has no length")
            }
        case "tojson":
            var indent: Int?
            if case .int(let i)? = kw("indent") ?? args.first { indent = try RenderBudget.indentWidth(i) }
            try RenderBudget.checkPrintable(value, indent: indent ?? 0)
            return .string(JSONText.encode(value, indent: indent, level: 0))
        case "string": return .string(value.printed)
        case "int":
            switch value {
            case .int: return value
            case .double(let d):
                guard let whole = Int(exactly: d.rounded(.towardZero)) else {
                    throw TemplateError("int: \(d) does not fit an integer")
                }
                return .int(whole)
            case .string(let s): return .int(Int(s.trimmingCharacters(in: .whitespaces)) ?? 0)
            default: return .int(0)
            }
        case "float": return .double(number(value) ?? Double(value.printed) ?? 0)
        case "lower": return .string(value.printed.lowercased())
        case "upper": return .string(value.printed.uppercased())
        case "capitalize": let s = value.printed; return .string(s.prefix(1).uppercased() + s.dropFirst().lowercased())
        case "title": return .string(value.printed.capitalized)
        case "replace":
            guard args.count >= 2 else { throw TemplateError("replace needs two arguments") }
            try RenderBudget.checkReplacement(in: value.printed, args[0].printed, args[1].printed)
            return .string(value.printed.replacingOccurrences(of: args[0].printed, with: args[1].printed))
        case "default", "d":
            let fallback = args.first ?? .string("")
            let boolean = (args.count > 1 ? args[1] : kw("boolean") ?? .bool(false)).truthy
            return value.isDefined && (!boolean || value.truthy) ? value : fallback
        case "join":
            let separator = args.first?.printed ?? kw("d")?.printed ?? ""
            var items = try list(value)
            if case .string(let attribute)? = kw("attribute") { items = try items.map { try member($0, attribute) } }
            try RenderBudget.checkPrintable(.array(items), separatorBytes: separator.utf8.count)
            return .string(items.map(\.printed).joined(separator: separator))
        case "list": return .array(try list(value))
        case "first": return try list(value).first ?? .undefined("first")
        case "last": return try list(value).last ?? .undefined("last")
        case "reverse":
            if case .string(let s) = value { return .string(String(s.reversed())) }
            return .array(try list(value).reversed())
        case "unique":
            var seen: [JinjaValue] = []
            for item in try list(value) where !seen.contains(item) { seen.append(item) }
            return .array(seen)
        case "items":
            guard case .object(let o) = value else { throw TemplateError("items needs a mapping") }
            return .array(o.keys.map { .array([.string($0), o[$0]!]) })
        case "dictsort":
            guard case .object(let o) = value else { throw TemplateError("dictsort needs a mapping") }
            return .array(o.keys.sorted().map { .array([.string($0), o[$0]!]) })
        case "select", "reject":
            let keep = name == "select"
            return .array(
                try list(value).filter { item in
                    let passes = args.isEmpty ? item.truthy : try test(args[0].printed, item, Array(args.dropFirst()))
                    return passes == keep
                })
        case "selectattr", "rejectattr":
            let keep = name == "selectattr"
            guard let attribute = args.first?.printed else { throw TemplateError("\(name) needs an attribute") }
            return .array(
                try list(value).filter { item in
                    let field = try member(item, attribute)
                    let passes =
                        args.count < 2 ? field.truthy : try test(args[1].printed, field, Array(args.dropFirst(2)))
                    return passes == keep
                })
        case "map":
            if case .string(let attribute)? = kw("attribute") {
                return .array(
                    try list(value).map { item in
                        let field = try member(item, attribute)
                        return field.isDefined ? field : (kw("default") ?? field)
                    })
            }
            guard let filterName = args.first?.printed else { throw TemplateError("map needs a filter or attribute=") }
            var copy = self
            return .array(try list(value).map { try copy.filter(filterName, $0, Array(args.dropFirst()), []) })
        case "indent":
            let width: Int
            if case .int(let w)? = args.first ?? kw("width") {
                width = try RenderBudget.indentWidth(w)
            } else {
                width = 4
            }
            let pad = String(repeating: " ", count: width)
            let first = (args.count > 1 ? args[1] : kw("first") ?? .bool(false)).truthy
            let lines = value.printed.components(separatedBy: "\n")
            return .string(
                lines.enumerated().map { i, line in
                    (i == 0 && !first) || line.isEmpty ? line : pad + line
                }.joined(separator: "\n"))
        case "abs":
            switch value {
            case .int(let i):
                guard i != .min else { throw TemplateError("integer overflow: abs(\(i))") }
                return .int(abs(i))
            case .double(let d): return .double(abs(d))
            default: throw TemplateError("abs needs a number")
            }
        case "safe", "e", "escape": return value
        default: throw TemplateError("unknown filter `\(name)`")
        }
    }
}

/// `json.dumps(value, ensure_ascii=False, indent=indent)` as Python writes it.
public enum JSONText {
    static func encode(_ value: JinjaValue, indent: Int?, level: Int) -> String {
        switch value {
        case .undefined, .none: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .double(let d): return JinjaValue.pythonFloat(d)
        case .string(let s): return quote(s)
        case .array(let items):
            if items.isEmpty { return "[]" }
            return container(
                "[", "]", items.map { encode($0, indent: indent, level: level + 1) }, indent: indent, level: level)
        case .object(let object):
            if object.keys.isEmpty { return "{}" }
            return container(
                "{", "}", object.keys.map { quote($0) + ": " + encode(object[$0]!, indent: indent, level: level + 1) },
                indent: indent, level: level)
        case .namespace(let namespace): return encode(.object(namespace.object), indent: indent, level: level)
        }
    }

    static func container(_ open: String, _ close: String, _ parts: [String], indent: Int?, level: Int) -> String {
        guard let indent else { return open + parts.joined(separator: ", ") + close }
        let inner = String(repeating: " ", count: indent * (level + 1))
        let outer = String(repeating: " ", count: indent * level)
        return open + "\n" + parts.map { inner + $0 }.joined(separator: ",\n") + "\n" + outer + close
    }

    /// A JSON string literal: quotes, backslashes and control characters escaped, everything
    /// else as is (UTF-8), as Python's `json.dumps(s, ensure_ascii=False)`.
    public static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if scalar.value < 0x20 {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
