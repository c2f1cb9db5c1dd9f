import Foundation
import TestSupport
import Testing

@testable import Serving

/// The event-stream reader `sllm status --watch` follows `/admin/events` with: events split at
/// blank lines whatever the chunking, line ends of every kind, other fields skipped, a bound on
/// an event's size, and bytes of any kind never crash it.
@Suite struct EventStreamParserTests {
    @Test func eventsSplitAtBlankLinesWhateverTheChunks() throws {
        let stream =
            "retry: 2000\n\n: a comment\nevent: snapshot\ndata: {\"a\":1}\n\nid: 7\r\ndata: first\r\ndata:second\r\n\r\n"
            + "data: {\"b\":2}\r\r" + "\n\nevent: empty\n\ndata: last\n\n" + "data: incomplete\n"
        let expected = ["{\"a\":1}", "first\nsecond", "{\"b\":2}", "last"]
        var whole = EventStreamParser()
        #expect(try whole.feed(Array(stream.utf8)) == expected)
        var generator = SeededGenerator(seed: 3)
        for _ in 0..<200 {
            var parser = EventStreamParser()
            var events: [String] = []
            var bytes = Array(stream.utf8)[...]
            while !bytes.isEmpty {
                let size = Int.random(in: 1...7, using: &generator)
                events += try parser.feed(bytes.prefix(size))
                bytes = bytes.dropFirst(size)
            }
            #expect(events == expected)
        }
        // The event still arriving comes once its blank line does.
        #expect(try whole.feed(Array("\n".utf8)) == ["incomplete"])
    }

    @Test func anEventOverTheLimitIsRefused() throws {
        var parser = EventStreamParser(limit: 1024)
        #expect(try parser.feed(Array(("data: " + String(repeating: "x", count: 900) + "\n\n").utf8)).count == 1)
        #expect(throws: EventStreamParser.TooLarge.self) {
            _ = try parser.feed(Array(("data: " + String(repeating: "y", count: 2000)).utf8))
        }
    }

    /// Bounded fuzz: mutated streams (`SLLM_FUZZ_ITERATIONS`, default 300) never crash the
    /// reader, and give the same events fed at once or in random chunks.
    @Test func mutatedStreamsGiveTheSameEventsHoweverChunked() throws {
        let iterations = Fuzz.iterations(default: 300)
        var generator = SeededGenerator(seed: 17)
        let base = Array("event: snapshot\ndata: {\"x\": [1, 2]}\n\n: c\ndata: a\r\ndata: b\r\n\r\nretry: 5\n\n".utf8)
        let pieces: [[UInt8]] = [
            [10], [13], [13, 10], Array("data:".utf8), Array("data: ".utf8), [0], [0xff], [0xe2, 0x82],
        ]
        for _ in 0..<iterations {
            var bytes = base
            Fuzz.mutate(&bytes, edits: 1...8, pieces: pieces, using: &generator)
            var whole = EventStreamParser()
            let expected = try whole.feed(bytes)
            var parser = EventStreamParser()
            var events: [String] = []
            var rest = bytes[...]
            while !rest.isEmpty {
                let size = Int.random(in: 1...5, using: &generator)
                events += try parser.feed(rest.prefix(size))
                rest = rest.dropFirst(size)
            }
            #expect(events == expected, "\(String(decoding: bytes, as: UTF8.self).debugDescription)")
        }
    }
}
