import Foundation
import TestSupport
import Testing

@testable import Tokenizers

/// Chat templates rendered by our interpreter against Python jinja2's output
/// (Resources/chat-templates.json, made by scripts/make-chat-template-fixtures.py).
@Suite struct ChatTemplateTests {
    static let fixture: JinjaValue = {
        let url = Bundle.module.url(forResource: "chat-templates", withExtension: "json", subdirectory: "Resources")!
        return try! JinjaValue.parseJSON(try! Data(contentsOf: url))
    }()

    static var caseIndices: [Int] {
        guard case .object(let root) = fixture, case .array(let cases)? = root["cases"] else { return [] }
        return Array(cases.indices)
    }

    @Test(arguments: caseIndices)
    func rendersLikePythonJinja2(index: Int) throws {
        guard case .object(let root) = Self.fixture, case .array(let cases)? = root["cases"],
            case .object(let templates)? = root["templates"],
            case .object(let c) = cases[index], case .string(let name)? = c["template"],
            case .string(let source)? = templates[name],
            case .array(let messages)? = c["messages"]
        else { Issue.record("malformed fixture"); return }
        var context: [String: JinjaValue] = [
            "messages": .array(messages), "add_generation_prompt": c["add_generation_prompt"]!,
            "bos_token": .string("<s>"), "eos_token": .string("</s>"), "date_string": .string("02 Jan 2025"),
        ]
        if let tools = c["tools"], tools != .none { context["tools"] = tools }
        let template = try JinjaTemplate(source)
        let label = "\(name) \(c["conversation"]!.printed) generation=\(c["add_generation_prompt"]!.printed)"
        if case .string(let expected)? = c["expected"] {
            #expect(try template.render(context) == expected, "\(label)")
        } else if case .string(let message)? = c["error"] {
            #expect(throws: TemplateError(message), "\(label)") { try template.render(context) }
        } else {
            Issue.record("fixture case \(index) (\(label)) has neither `expected` nor `error`")
        }
    }

    /// The fixture must keep its shape: a parameterised test over zero cases passes silently.
    @Test func theFixtureHasItsCases() {
        #expect(Self.caseIndices.count >= 20, "chat-templates.json has \(Self.caseIndices.count) cases")
    }

    /// A template is untrusted input (it comes with a model file): each of these crashed, aborted
    /// or hung the server before the interpreter had limits. Each now fails with a clear error.
    @Test(arguments: [
        (
            "{{ " + String(repeating: "(", count: 50_000) + "1" + String(repeating: ")", count: 50_000) + " }}",
            "too long"
        ),
        (
            "{{ " + String(repeating: "(", count: 500) + "1" + String(repeating: ")", count: 500) + " }}",
            "nests more than"
        ),
        ("{{ 1" + String(repeating: " + 1", count: 1000) + " }}", "nests more than"),
        ("{{ " + String(repeating: "not ", count: 1000) + "x }}", "nests more than"),
        ("{{ " + String(repeating: "- ", count: 1000) + "1 }}", "nests more than"),
        ("{{ 'x' * 100000000000 }}", "MiB of text"),
        ("{{ 'x' * 9223372036854775807 }}", "MiB of text"),
        ("{% for i in range(1000000000) %}{% endfor %}", "lists of more than"),
        (
            "{% for i in range(200) %}{% for j in range(200) %}{% for k in range(200) %}{% endfor %}{% endfor %}{% endfor %}",
            "steps"
        ),
        ("{% for i in range(1000000) %}{{ i }}{% endfor %}", "steps"),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "calls deep"),
        (
            "{% set s = 'xxxxxxxxxxxxxxxx' %}{% for i in range(40) %}{% set s = s ~ s %}{% endfor %}{{ s }}",
            "MiB of text"
        ),
        (
            "{% set s = 'x' * 1000000 %}{{ [s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s] | join(s) }}",
            "MiB of text"
        ),
        (
            "{{ ('x' * 1000000).replace('x', 'yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy') }}",
            "MiB of text"
        ),
        ("{{ 9223372036854775807 + 1 }}", "integer overflow"),
        ("{{ -9223372036854775807 - 2 }}", "integer overflow"),
        ("{{ 9223372036854775807 * 2 }}", "integer overflow"),
        ("{{ (-9223372036854775807 - 1) // -1 }}", "integer overflow"),
        ("{{ 10 ** 100 }}", "integer overflow"),
        ("{{ (-9223372036854775807 - 1) | abs }}", "integer overflow"),
        ("{{ (10.0 ** 300) | int }}", "does not fit"),
        ("{{ range('a') }}", "range takes"),
        ("{{ range() }}", "range takes"),
        ("{{ {'a': 1} | tojson(indent=-1) }}", "indent"),
        ("{{ 'a' | indent(100000000000) }}", "indent"),
        (
            "{% if a %}" + String(repeating: "{% if a %}", count: 5000) + String(repeating: "{% endif %}", count: 5001),
            "blocks nest"
        ),
    ])
    func hostileTemplatesFailWithALimitError(source: String, message: String) throws {
        do {
            let rendered = try JinjaTemplate(source).render(["a": .bool(true)])
            Issue.record("rendered \(rendered.utf8.count) bytes instead of failing with `\(message)`")
        } catch {
            #expect(error.description.contains(message), "\(source.prefix(60)): \(error.description)")
        }
    }

    @Test func limitsLeaveRealTemplatesAlone() throws {
        // A long conversation through SmolLM2's own template renders well inside the limits.
        let template = try JinjaTemplate(
            #"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"#
        )
        let messages = (0..<5000).map { i in
            JinjaValue.object(
                JinjaObject([
                    ("role", .string(i % 2 == 0 ? "user" : "assistant")), ("content", .string("message \(i)")),
                ]))
        }
        let context: [String: JinjaValue] = ["messages": .array(messages), "add_generation_prompt": .bool(true)]
        let rendered = try template.render(context)
        #expect(rendered.hasSuffix("<|im_start|>assistant\n"))
        #expect(
            try JinjaTemplate("{{ 'ab' * 3 }} {{ 7 // -2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }}").render([:])
                == "ababab -4 2 1024 0.5")
    }

    @Test func expressionsFollowPythonSemantics() throws {
        func render(_ source: String, _ context: [String: JinjaValue] = [:]) throws -> String {
            try JinjaTemplate(source).render(context)
        }
        #expect(
            try render("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ 2 ** 3 }} {{ 1 / 2 }} {{ 'ab' * 2 }}")
                == "3 -4 1 8 0.5 abab")
        #expect(try render("{{ [1, 2, 3][::-1] }} {{ 'hello'[1:3] }} {{ [1,2,3] | length }}") == "[3, 2, 1] el 3")
        #expect(try render("{{ {'a': 1, 'b': [True, None]} | tojson }}") == #"{"a": 1, "b": [true, null]}"#)
        #expect(try render("{{ x is defined }} {{ x | default('d') }} {{ none is none }}") == "False d True")
        #expect(
            try render(
                "{% for a, b in pairs %}{{ loop.index }}{{ a }}{{ b }}{% if not loop.last %},{% endif %}{% endfor %}",
                ["pairs": .array([.array([.string("x"), .int(1)]), .array([.string("y"), .int(2)])])]) == "1x1,2y2")
        #expect(
            try render(
                "{% set ns = namespace(n=0) %}{% for i in range(5) if i is odd %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"
            ) == "4")
        #expect(try render("{% for i in range(9) %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}") == "012")
        #expect(
            try render("{% macro greet(name, punct='!') %}hi {{ name }}{{ punct }}{% endmacro %}{{ greet('bob') }}")
                == "hi bob!")
        #expect(try render("  {%- if true %}\n  yes\n{% endif %}") == "  yes\n")
        #expect(try render("{{ '  x  ' | trim }}|{{ 'a,b' .split(',') | join('-') }}") == "x|a-b")
    }

    @Test func malformedTemplatesAndRuntimeErrorsAreClear() {
        #expect(throws: TemplateError("missing {% elif or else or endif %}")) {
            try JinjaTemplate("{% if x %}unclosed")
        }
        #expect(throws: TemplateError("unexpected end of expression")) { try JinjaTemplate("{{ 1 + }}") }
        #expect { try JinjaTemplate("{% frobnicate %}") } throws: {
            ($0 as? TemplateError)?.description.contains("frobnicate") == true
        }
        #expect(throws: TemplateError("boom")) { try JinjaTemplate("{{ raise_exception('boom') }}").render([:]) }
        #expect(throws: TemplateError("missing is undefined (reading .attribute)")) {
            try JinjaTemplate("{{ missing.attribute }}").render([:])
        }
    }

    @Test func orderedJSONKeepsKeyOrderAndRejectsGarbage() throws {
        let value = try JinjaValue.parseJSON(
            Data(#"{"z": 1, "a": [1.5, "\u00e9\n"], "m": {"y": null, "b": false}}"#.utf8))
        #expect(
            JSONText.encode(value, indent: nil, level: 0)
                == #"{"z": 1, "a": [1.5, "é\n"], "m": {"y": null, "b": false}}"#)
        #expect { try JinjaValue.parseJSON(Data("{\"a\": }".utf8)) } throws: { $0 is TemplateError }
        #expect { try JinjaValue.parseJSON(Data("[1, 2".utf8)) } throws: { $0 is TemplateError }
    }
}

/// The llama3 and qwen2 pre-tokenizers against Python `regex` with the original patterns
/// (Resources/pretokenize.json).
@Suite struct PreTokenizerPatternTests {
    @Test(arguments: ["llama3", "qwen2"])
    func splitsLikeTheRegex(kind: String) throws {
        let url = try #require(
            Bundle.module.url(forResource: "pretokenize", withExtension: "json", subdirectory: "Resources"))
        let cases = try #require(
            (try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: [[Any]]])?[kind])
        let splitter = PreTokenizer(kind: PreTokenizer.Kind(rawValue: kind)!)
        for pair in cases {
            let text = pair[0] as! String
            let expected = pair[1] as! [String]
            #expect(splitter.split(text[...]).map(String.init) == expected, "\(kind): \(text.debugDescription)")
        }
    }
}

/// Random mutations of real chat templates (the fixture's), parsed and rendered: errors are
/// fine, a crash or an unbounded render is not (the limits stop every render).
@Suite struct ChatTemplateFuzzTests {
    static let snippets = [
        "{{", "}}", "{%", "%}", "{#", "#}", "(", ")", "[", "]", "for x in range(999999999)", "endfor", "if", "endif",
        "*", "**", "~", "|", "+",
        "'x' * 99999999", "loop.index", "messages", "namespace(", "macro m(a)", "m(m(m(1)))", "endmacro", "set",
        "9223372036854775807",
        "-", "//", "%", " is ", " not ", " in ", "tojson(indent=999999)", "join", "replace('a','bbbbbbbb')", ".", ",",
        "=", "raise_exception('x')",
    ]

    @Test func mutatedRealTemplatesNeverCrash() throws {
        guard case .object(let root) = ChatTemplateTests.fixture, case .object(let templates)? = root["templates"],
            case .array(let cases)? = root["cases"], case .object(let first)? = cases.first,
            case .array(let messages)? = first["messages"]
        else {
            Issue.record("malformed fixture")
            return
        }
        let sources = templates.keys.compactMap { key -> String? in
            if case .string(let text)? = templates[key] { return text } else { return nil }
        }
        #expect(sources.count >= 5)
        var generator = SeededGenerator(seed: 5)
        var rendered = 0
        var failed = 0
        for _ in 0..<1500 {
            var text = Array(sources.randomElement(using: &generator)!.unicodeScalars)
            for _ in 0..<Int.random(in: 1...6, using: &generator) {
                let at = Int.random(in: 0...text.count, using: &generator)
                switch Int.random(in: 0..<4, using: &generator) {
                case 0 where !text.isEmpty: text.remove(at: min(at, text.count - 1))
                case 1: text.insert(contentsOf: Self.snippets.randomElement(using: &generator)!.unicodeScalars, at: at)
                case 2 where text.count > 10:
                    let start = Int.random(in: 0..<(text.count - 5), using: &generator)
                    let piece = text[start..<min(text.count, start + Int.random(in: 1...200, using: &generator))]
                    text.insert(contentsOf: piece, at: at)
                default: text.insert(contentsOf: "{{ (".unicodeScalars, at: at)
                }
            }
            var source = ""
            source.unicodeScalars.append(contentsOf: text)
            let context: [String: JinjaValue] = [
                "messages": .array(messages), "add_generation_prompt": .bool(true),
                "bos_token": .string("<s>"), "eos_token": .string("</s>"),
            ]
            do {
                _ = try JinjaTemplate(source).render(context)
                rendered += 1
            } catch {
                failed += 1
            }
        }
        #expect(rendered + failed == 1500)
        #expect(
            rendered > 0 && failed > 0,
            "the mutations should both keep and break templates: \(rendered) rendered, \(failed) failed")
    }
}
