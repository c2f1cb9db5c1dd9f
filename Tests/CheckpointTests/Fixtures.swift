import Foundation
import TestSupport

@testable import Checkpoint

/// Writes the tiny GGUF model into `directory` and returns its path.
func writeTinyGGUF(in directory: TemporaryDirectory, _ builder: GGUFBuilder = .tinyLlama()) throws -> String {
    let path = directory.file("tiny.gguf")
    try writeFile(path, builder.build())
    return path
}

/// Converts the tiny GGUF model into a checkpoint at `directory/name`.
@discardableResult
func writeTinyCheckpoint(
    in directory: TemporaryDirectory, name: String = "ckpt", options: CheckpointWriter.Options = .init()
) throws -> (path: String, index: CheckpointIndex) {
    let gguf = try writeTinyGGUF(in: directory)
    let path = directory.file(name)
    let index = try Converter.convert(gguf, to: path, source: "tiny.gguf", options: options)
    return (path, index)
}

/// Every file in a checkpoint directory with its bytes.
func snapshot(_ path: String) throws -> [String: [UInt8]] {
    var files: [String: [UInt8]] = [:]
    for name in directoryEntries(path) { files[name] = try readFile(path + "/" + name) }
    return files
}
