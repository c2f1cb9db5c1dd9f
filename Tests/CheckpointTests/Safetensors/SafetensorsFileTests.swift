import Foundation
import TestSupport
import Testing

@testable import Checkpoint

@Suite struct SafetensorsFileTests {
    /// A safetensors file with `header` as its JSON and `dataBytes` zero bytes of data.
    static func file(header: String, dataBytes: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { bytes += $0 }
        return bytes + Array(header.utf8) + [UInt8](repeating: 0, count: dataBytes)
    }

    func parse(_ bytes: [UInt8]) throws(CheckpointError) -> SafetensorsFile {
        var result: Result<SafetensorsFile, CheckpointError> = .failure(.format("unreached"))
        bytes.withUnsafeBytes { raw in
            result = Result { () throws(CheckpointError) in
                try SafetensorsFile.parse(raw, fileSize: bytes.count, name: "t.safetensors")
            }
        }
        return try result.get()
    }

    @Test func aValidHeaderParses() throws {
        let header =
            #"{"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[12,20]}}"#
        let file = try parse(Self.file(header: header, dataBytes: 20))
        #expect(file.tensors.map(\.name) == ["a", "b"])
        #expect(file.tensors[0].shape == [2, 3])
        #expect(file.tensors[1].dtype == .bf16)
        #expect(file.tensors[1].offset == 8 + header.utf8.count + 12)
        #expect(file.metadata["format"] == "pt")
    }

    @Test(arguments: [
        (#"{"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,10]}}"#, "do not hold"),
        (#"{"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,1200]}}"#, "do not hold"),
        (#"{"a":{"dtype":"F16","shape":[2,3],"data_offsets":[12,0]}}"#, "do not hold"),
        (#"{"a":{"dtype":"U4","shape":[2],"data_offsets":[0,1]}}"#, "unsupported dtype U4"),
        (#"{"a":{"dtype":"F16","shape":[-1],"data_offsets":[0,2]}}"#, "invalid shape"),
        (#"{"a":{"dtype":"F16","shape":[2147483647,2147483647,2147483647],"data_offsets":[0,2]}}"#, "too large"),
        (#"{"a":{"dtype":"F16"}}"#, "lacks dtype"),
        (#"["not an object"]"#, "not a JSON object"),
        (#"{"a": nope}"#, "not valid JSON"),
    ])
    func badHeadersAreNamed(header: String, message: String) {
        do {
            _ = try parse(Self.file(header: header, dataBytes: 12))
            Issue.record("parsed \(header)")
        } catch {
            #expect(error.description.contains(message), "\(error)")
        }
    }

    @Test func aHeaderLengthBeyondTheFileIsRejected() {
        var bytes = Self.file(header: "{}", dataBytes: 0)
        withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { bytes.replaceSubrange(0..<8, with: $0) }
        #expect(throws: CheckpointError.self) { try parse(bytes) }
        #expect(throws: CheckpointError.self) { try parse([1, 2, 3]) }
    }
}
