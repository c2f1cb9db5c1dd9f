/// A template statement.
indirect enum Node: Sendable {
    case text(String)
    case output(Expr)
    case conditional([(condition: Expr?, body: [Node])])
    case loop(targets: [String], iterable: Expr, filter: Expr?, body: [Node], otherwise: [Node])
    case assign(target: Expr, value: Expr)
    case assignBlock(name: String, body: [Node])
    case breakLoop
    case continueLoop
    case macro(name: String, parameters: [(name: String, defaultValue: Expr?)], body: [Node])
}

/// A template expression.
indirect enum Expr: Sendable {
    case literal(JinjaValue)
    case name(String)
    case list([Expr])
    case dict([(Expr, Expr)])
    case attribute(Expr, String)
    case `subscript`(Expr, Expr)
    case slice(Expr, Expr?, Expr?, Expr?)
    case call(Expr, [Expr], [(String, Expr)])
    case unary(String, Expr)
    case binary(String, Expr, Expr)
    case and(Expr, Expr)
    case or(Expr, Expr)
    case test(Expr, String, [Expr], negated: Bool)
    case filter(Expr, String, [Expr], [(String, Expr)])
    case ternary(Expr, condition: Expr, otherwise: Expr?)
}

struct JinjaParser {
    let pieces: [TemplatePiece]
    var index = 0
    /// Statements nested in statements (`if` in `for` in `macro` …), at most `maxBlockDepth`.
    var blockDepth = 0

    /// The deepest nesting of blocks and of expressions, and the longest expression: the parser
    /// and the interpreter recurse on both, and a template is untrusted input (a model file).
    static let maxBlockDepth = 64
    static let maxExpressionDepth = 64
    static let maxExpressionTokens = 2048
    /// The deepest expression tree the interpreter evaluates (chains count: `a ~ b ~ c` is 3 deep).
    static let maxTreeDepth = 256

    init(tokens: [TemplatePiece]) { pieces = tokens }

    mutating func parseAll() throws(TemplateError) -> [Node] {
        let (nodes, end) = try parseBlock(until: [])
        if let end { throw TemplateError("unexpected {% \(end) %}") }
        return nodes
    }

    /// Nodes up to a statement whose keyword is in `terminators` (returned with its tokens).
    private mutating func parseBlock(until terminators: Set<String>) throws(TemplateError) -> ([Node], String?) {
        blockDepth += 1
        defer { blockDepth -= 1 }
        guard blockDepth <= Self.maxBlockDepth else {
            throw TemplateError("blocks nest more than \(Self.maxBlockDepth) deep")
        }
        var nodes: [Node] = []
        while index < pieces.count {
            let piece = pieces[index]
            index += 1
            switch piece {
            case .text(let text): nodes.append(.text(text))
            case .output(let tokens):
                var expression = ExpressionParser(tokens: tokens)
                let node = Node.output(try expression.parseWhole())
                try node.checkExpressionDepth()
                nodes.append(node)
            case .statement(let tokens):
                guard case .name(let keyword)? = tokens.first else { throw TemplateError("empty statement") }
                if terminators.contains(keyword) {
                    index -= 1
                    return (nodes, keyword)
                }
                guard tokens.count <= Self.maxExpressionTokens else {
                    throw TemplateError(
                        "a statement is too long: \(tokens.count) tokens (at most \(Self.maxExpressionTokens))")
                }
                let node = try parseStatement(keyword, Array(tokens.dropFirst()))
                try node.checkExpressionDepth()
                nodes.append(node)
            }
        }
        if !terminators.isEmpty {
            throw TemplateError("missing {% \(terminators.sorted().joined(separator: " or ")) %}")
        }
        return (nodes, nil)
    }

    private mutating func statementTokens() -> [ExprToken] {
        guard case .statement(let tokens) = pieces[index] else { return [] }
        index += 1
        return tokens
    }

    private mutating func parseStatement(_ keyword: String, _ rest: [ExprToken]) throws(TemplateError) -> Node {
        switch keyword {
        case "if":
            var branches: [(condition: Expr?, body: [Node])] = []
            var condition: Expr? = try ExpressionParser.whole(rest)
            while true {
                let (body, end) = try parseBlock(until: ["elif", "else", "endif"])
                branches.append((condition, body))
                let tokens = statementTokens()
                switch end {
                case "elif": condition = try ExpressionParser.whole(Array(tokens.dropFirst()))
                case "else": condition = nil
                default: return .conditional(branches)
                }
                if end == "else" {
                    let (body, _) = try parseBlock(until: ["endif"])
                    branches.append((nil, body))
                    _ = statementTokens()
                    return .conditional(branches)
                }
            }
        case "for":
            var parser = ExpressionParser(tokens: rest)
            var targets: [String] = []
            repeat {
                guard case .name(let name)? = parser.next() else {
                    throw TemplateError("for: expected a loop variable")
                }
                targets.append(name)
            } while parser.accept(.op(","))
            guard parser.accept(.name("in")) else { throw TemplateError("for: expected `in`") }
            let iterable = try parser.parseTernary(allowConditional: false)
            var filter: Expr?
            if parser.accept(.name("if")) { filter = try parser.parseOr() }
            _ = parser.accept(.name("recursive"))
            guard parser.atEnd else { throw TemplateError("for: unexpected tokens after the iterable") }
            let (body, end) = try parseBlock(until: ["else", "endfor"])
            _ = statementTokens()
            var otherwise: [Node] = []
            if end == "else" {
                (otherwise, _) = try parseBlock(until: ["endfor"])
                _ = statementTokens()
            }
            return .loop(targets: targets, iterable: iterable, filter: filter, body: body, otherwise: otherwise)
        case "set":
            var parser = ExpressionParser(tokens: rest)
            let target = try parser.parsePrimaryWithPostfix()
            if parser.atEnd {
                guard case .name(let name) = target else {
                    throw TemplateError("set: block assignment needs a plain name")
                }
                let (body, _) = try parseBlock(until: ["endset"])
                _ = statementTokens()
                return .assignBlock(name: name, body: body)
            }
            guard parser.accept(.op("=")) else { throw TemplateError("set: expected `=`") }
            let value = try parser.parseWholeRest()
            return .assign(target: target, value: value)
        case "break": return .breakLoop
        case "continue": return .continueLoop
        case "generation":
            let (body, _) = try parseBlock(until: ["endgeneration"])
            _ = statementTokens()
            return .conditional([(nil, body)])
        case "macro":
            var parser = ExpressionParser(tokens: rest)
            guard case .name(let name)? = parser.next(), parser.accept(.op("(")) else {
                throw TemplateError("macro: expected a name and (")
            }
            var parameters: [(name: String, defaultValue: Expr?)] = []
            while !parser.accept(.op(")")) {
                guard case .name(let parameter)? = parser.next() else {
                    throw TemplateError("macro \(name): bad parameter list")
                }
                var defaultValue: Expr?
                if parser.accept(.op("=")) { defaultValue = try parser.parseTernary(allowConditional: true) }
                parameters.append((parameter, defaultValue))
                _ = parser.accept(.op(","))
            }
            let (body, _) = try parseBlock(until: ["endmacro"])
            _ = statementTokens()
            return .macro(name: name, parameters: parameters, body: body)
        default:
            throw TemplateError("unsupported statement {% \(keyword) %}")
        }
    }
}

struct ExpressionParser {
    let tokens: [ExprToken]
    var position = 0
    /// Sub-expressions being parsed inside each other (parentheses, brackets, unary operators,
    /// and each operator of a chain, since `a + b + c` nests as deep as it is long).
    var depth = 0

    /// Runs `parse` one level deeper, refusing past `JinjaParser.maxExpressionDepth`.
    mutating func nested<T>(_ parse: (inout ExpressionParser) throws(TemplateError) -> T) throws(TemplateError) -> T {
        depth += 1
        defer { depth -= 1 }
        guard depth <= JinjaParser.maxExpressionDepth else {
            throw TemplateError("an expression nests more than \(JinjaParser.maxExpressionDepth) levels deep")
        }
        return try parse(&self)
    }

    init(tokens: [ExprToken]) { self.tokens = tokens }

    static func whole(_ tokens: [ExprToken]) throws(TemplateError) -> Expr {
        var parser = ExpressionParser(tokens: tokens)
        return try parser.parseWhole()
    }

    var atEnd: Bool { position >= tokens.count }

    mutating func next() -> ExprToken? {
        guard position < tokens.count else { return nil }
        position += 1
        return tokens[position - 1]
    }

    func peek(_ offset: Int = 0) -> ExprToken? { position + offset < tokens.count ? tokens[position + offset] : nil }

    mutating func accept(_ token: ExprToken) -> Bool {
        if peek() == token {
            position += 1
            return true
        }
        return false
    }

    mutating func expect(_ token: ExprToken) throws(TemplateError) {
        guard accept(token) else {
            throw TemplateError("expected \(describe(token)) but found \(peek().map(describe) ?? "the end")")
        }
    }

    func describe(_ token: ExprToken) -> String {
        switch token {
        case .name(let n): "`\(n)`"
        case .string(let s): "'\(s)'"
        case .int(let i): "\(i)"
        case .double(let d): "\(d)"
        case .op(let o): "`\(o)`"
        }
    }

    mutating func parseWhole() throws(TemplateError) -> Expr {
        guard tokens.count <= JinjaParser.maxExpressionTokens else {
            throw TemplateError(
                "an expression is too long: \(tokens.count) tokens (at most \(JinjaParser.maxExpressionTokens))")
        }
        return try parseWholeRest()
    }

    mutating func parseWholeRest() throws(TemplateError) -> Expr {
        let expression = try parseTernary(allowConditional: true)
        // A bare tuple (`a, b`) becomes a list.
        if accept(.op(",")) {
            var items = [expression]
            repeat { items.append(try parseTernary(allowConditional: true)) } while accept(.op(","))
            guard atEnd else { throw TemplateError("unexpected \(describe(peek()!))") }
            return .list(items)
        }
        guard atEnd else { throw TemplateError("unexpected \(describe(peek()!))") }
        return expression
    }

    mutating func parseTernary(allowConditional: Bool) throws(TemplateError) -> Expr {
        try nested { parser throws(TemplateError) in try parser.parseTernaryLevel(allowConditional: allowConditional) }
    }

    private mutating func parseTernaryLevel(allowConditional: Bool) throws(TemplateError) -> Expr {
        let value = try parseOr()
        guard allowConditional, accept(.name("if")) else { return value }
        let condition = try parseOr()
        var otherwise: Expr?
        if accept(.name("else")) { otherwise = try parseTernary(allowConditional: true) }
        return .ternary(value, condition: condition, otherwise: otherwise)
    }

    mutating func parseOr() throws(TemplateError) -> Expr {
        var left = try parseAnd()
        while accept(.name("or")) { left = .or(left, try parseAnd()) }
        return left
    }

    mutating func parseAnd() throws(TemplateError) -> Expr {
        var left = try parseNot()
        while accept(.name("and")) { left = .and(left, try parseNot()) }
        return left
    }

    mutating func parseNot() throws(TemplateError) -> Expr {
        if accept(.name("not")) {
            return .unary("not", try nested { parser throws(TemplateError) in try parser.parseNot() })
        }
        return try parseCompare()
    }

    mutating func parseCompare() throws(TemplateError) -> Expr {
        var left = try parseConcat()
        while true {
            if case .op(let op)? = peek(), ["==", "!=", "<", ">", "<=", ">="].contains(op) {
                position += 1
                left = .binary(op, left, try parseConcat())
            } else if accept(.name("in")) {
                left = .binary("in", left, try parseConcat())
            } else if peek() == .name("not") && peek(1) == .name("in") {
                position += 2
                left = .unary("not", .binary("in", left, try parseConcat()))
            } else {
                return left
            }
        }
    }

    mutating func parseConcat() throws(TemplateError) -> Expr {
        var left = try parseAdditive()
        while accept(.op("~")) { left = .binary("~", left, try parseAdditive()) }
        return left
    }

    mutating func parseAdditive() throws(TemplateError) -> Expr {
        var left = try parseMultiplicative()
        while case .op(let op)? = peek(), op == "+" || op == "-" {
            position += 1
            left = .binary(op, left, try parseMultiplicative())
        }
        return left
    }

    mutating func parseMultiplicative() throws(TemplateError) -> Expr {
        var left = try parsePower()
        while case .op(let op)? = peek(), ["*", "/", "//", "%"].contains(op) {
            position += 1
            left = .binary(op, left, try parsePower())
        }
        return left
    }

    mutating func parsePower() throws(TemplateError) -> Expr {
        var left = try parseUnary()
        while accept(.op("**")) { left = .binary("**", left, try parseUnary()) }
        return left
    }

    mutating func parseUnary() throws(TemplateError) -> Expr {
        if accept(.op("-")) {
            return try parseFilters(.unary("-", try nested { parser throws(TemplateError) in try parser.parseUnary() }))
        }
        if accept(.op("+")) { return try nested { parser throws(TemplateError) in try parser.parseUnary() } }
        return try parseFilters(try parsePrimaryWithPostfix())
    }

    /// `| filter(args)` and `is [not] test` chains.
    mutating func parseFilters(_ base: Expr) throws(TemplateError) -> Expr {
        var value = base
        while true {
            if accept(.op("|")) {
                guard case .name(let name)? = next() else { throw TemplateError("expected a filter name after |") }
                var args: [Expr] = [], kwargs: [(String, Expr)] = []
                if accept(.op("(")) { (args, kwargs) = try parseArguments() }
                value = .filter(value, name, args, kwargs)
            } else if accept(.name("is")) {
                let negated = accept(.name("not"))
                guard case .name(let name)? = next() else { throw TemplateError("expected a test name after `is`") }
                var args: [Expr] = []
                if accept(.op("(")) {
                    (args, _) = try parseArguments()
                } else if let token = peek(), startsPrimary(token) {
                    args = [try parsePrimaryWithPostfix()]
                }
                value = .test(value, name, args, negated: negated)
            } else {
                return value
            }
        }
    }

    func startsPrimary(_ token: ExprToken) -> Bool {
        switch token {
        case .string, .int, .double: true
        case .name(let n): !["and", "or", "if", "else", "in", "not", "is"].contains(n)
        case .op(let o): o == "(" || o == "[" || o == "{"
        }
    }

    mutating func parseArguments() throws(TemplateError) -> ([Expr], [(String, Expr)]) {
        var args: [Expr] = [], kwargs: [(String, Expr)] = []
        while !accept(.op(")")) {
            if case .name(let name)? = peek(), peek(1) == .op("=") {
                position += 2
                kwargs.append((name, try parseTernary(allowConditional: true)))
            } else {
                args.append(try parseTernary(allowConditional: true))
            }
            if !accept(.op(",")) {
                try expect(.op(")"))
                break
            }
        }
        return (args, kwargs)
    }

    mutating func parsePrimaryWithPostfix() throws(TemplateError) -> Expr {
        var value = try parsePrimary()
        while true {
            if accept(.op(".")) {
                guard case .name(let name)? = next() else { throw TemplateError("expected an attribute name after .") }
                value = .attribute(value, name)
            } else if accept(.op("[")) {
                var parts: [Expr?] = [nil]
                var isSlice = false
                while !accept(.op("]")) {
                    if accept(.op(":")) {
                        isSlice = true
                        parts.append(nil)
                    } else {
                        parts[parts.count - 1] = try parseTernary(allowConditional: true)
                    }
                }
                if isSlice {
                    while parts.count < 3 { parts.append(nil) }
                    value = .slice(value, parts[0], parts[1], parts[2])
                } else {
                    guard let index = parts[0] else { throw TemplateError("empty subscript") }
                    value = .subscript(value, index)
                }
            } else if accept(.op("(")) {
                let (args, kwargs) = try parseArguments()
                value = .call(value, args, kwargs)
            } else {
                return value
            }
        }
    }

    mutating func parsePrimary() throws(TemplateError) -> Expr {
        guard let token = next() else { throw TemplateError("unexpected end of expression") }
        switch token {
        case .string(var s):
            while case .string(let more)? = peek() {  // adjacent literals concatenate
                s += more
                position += 1
            }
            return .literal(.string(s))
        case .int(let i): return .literal(.int(i))
        case .double(let d): return .literal(.double(d))
        case .name(let name):
            switch name {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default: return .name(name)
            }
        case .op("("):
            let inner = try parseTernary(allowConditional: true)
            if accept(.op(",")) {
                var items = [inner]
                while !accept(.op(")")) {
                    items.append(try parseTernary(allowConditional: true))
                    _ = accept(.op(","))
                }
                return .list(items)
            }
            try expect(.op(")"))
            return inner
        case .op("["):
            var items: [Expr] = []
            while !accept(.op("]")) {
                items.append(try parseTernary(allowConditional: true))
                if !accept(.op(",")) {
                    try expect(.op("]"))
                    break
                }
            }
            return .list(items)
        case .op("{"):
            var pairs: [(Expr, Expr)] = []
            while !accept(.op("}")) {
                let key = try parseTernary(allowConditional: true)
                try expect(.op(":"))
                pairs.append((key, try parseTernary(allowConditional: true)))
                if !accept(.op(",")) {
                    try expect(.op("}"))
                    break
                }
            }
            return .dict(pairs)
        default:
            throw TemplateError("unexpected \(describe(token))")
        }
    }
}

extension Node {
    /// The expressions of this node itself (not those of the nodes in its body).
    var expressions: [Expr] {
        switch self {
        case .text, .breakLoop, .continueLoop, .assignBlock: []
        case .output(let expression): [expression]
        case .conditional(let branches): branches.compactMap(\.condition)
        case .loop(_, let iterable, let filter, _, _): [iterable] + (filter.map { [$0] } ?? [])
        case .assign(let target, let value): [target, value]
        case .macro(_, let parameters, _): parameters.compactMap(\.defaultValue)
        }
    }

    /// Refuses expressions nested deeper than the interpreter recurses (measured without recursion).
    func checkExpressionDepth() throws(TemplateError) {
        var stack = expressions.map { ($0, 1) }
        while let (expression, depth) = stack.popLast() {
            guard depth <= JinjaParser.maxTreeDepth else {
                throw TemplateError("an expression nests more than \(JinjaParser.maxTreeDepth) operations deep")
            }
            stack += expression.children.map { ($0, depth + 1) }
        }
    }
}

extension Expr {
    var children: [Expr] {
        switch self {
        case .literal, .name: []
        case .list(let items): items
        case .dict(let pairs): pairs.flatMap { [$0.0, $0.1] }
        case .attribute(let base, _): [base]
        case .subscript(let base, let index): [base, index]
        case .slice(let base, let start, let stop, let step): [base] + [start, stop, step].compactMap { $0 }
        case .call(let callee, let args, let kwargs): [callee] + args + kwargs.map(\.1)
        case .unary(_, let operand): [operand]
        case .binary(_, let a, let b), .and(let a, let b), .or(let a, let b): [a, b]
        case .test(let operand, _, let args, _): [operand] + args
        case .filter(let operand, _, let args, let kwargs): [operand] + args + kwargs.map(\.1)
        case .ternary(let value, let condition, let otherwise): [value, condition] + (otherwise.map { [$0] } ?? [])
        }
    }
}
