import Foundation

/// What the bounded fuzz tests share: how many inputs to try, and the byte mutations they make.
public enum Fuzz {
    /// `SLLM_FUZZ_ITERATIONS` when set (a longer soak), else the test's own default.
    public static func iterations(default count: Int) -> Int {
        Int(ProcessInfo.processInfo.environment["SLLM_FUZZ_ITERATIONS"] ?? "") ?? count
    }

    /// Applies a number of edits drawn from `edits` to `bytes`: each overwrites a byte with a
    /// random one, deletes one, or inserts one of `pieces` (the tokens a parser cares about).
    public static func mutate(
        _ bytes: inout [UInt8], edits: ClosedRange<Int>, pieces: [[UInt8]],
        using generator: inout some RandomNumberGenerator
    ) {
        for _ in 0..<Int.random(in: edits, using: &generator) {
            let at = Int.random(in: 0...bytes.count, using: &generator)
            switch Int.random(in: 0..<3, using: &generator) {
            case 0 where at < bytes.count: bytes[at] = UInt8.random(in: 0...255, using: &generator)
            case 1 where at < bytes.count: bytes.remove(at: at)
            default: bytes.insert(contentsOf: pieces.randomElement(using: &generator)!, at: at)
            }
        }
    }
}
