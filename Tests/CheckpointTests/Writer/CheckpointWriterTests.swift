import Foundation
import TestSupport
import Testing

@testable import Checkpoint

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct CheckpointWriterTests {
    @Test func everyTensorIsAlignedAndEveryPartitionIsWholePages() throws {
        let directory = try TemporaryDirectory("writer")
        defer { directory.remove() }
        let (path, index) = try writeTinyCheckpoint(
            in: directory, options: .init(maxPartitionByteCount: 16384, checksumBlockSize: 4096))
        #expect(index.partitions.count > 1)
        for tensor in index.tensors {
            #expect(tensor.offset % 4096 == 0)
            #expect(tensor.offset + tensor.byteCount <= index.partitions[tensor.partition].byteCount)
        }
        for partition in index.partitions {
            #expect(partition.byteCount % 4096 == 0)
            #expect(FileSystem.fileSize(path + "/" + partition.file) == Int64(partition.byteCount))
            #expect(partition.byteCount <= 16384)
        }
        let reloaded = try CheckpointReader(directory: path)
        #expect(reloaded.index == index)
        try reloaded.verify()
    }

    @Test func tensorBytesArePreservedExactly() throws {
        let directory = try TemporaryDirectory("writer")
        defer { directory.remove() }
        let builder = GGUFBuilder.tinyLlama()
        let (path, _) = try writeTinyCheckpoint(in: directory)
        let reader = try CheckpointReader(directory: path)
        for tensor in builder.tensors {
            #expect(try reader.tensorBytes(tensor.name) == tensor.data)
            #expect(reader.index.tensor(named: tensor.name)?.shape == tensor.dimensions.reversed().map { Int($0) })
        }
    }

    @Test func convertingTwiceGivesByteIdenticalOutput() throws {
        let directory = try TemporaryDirectory("writer")
        defer { directory.remove() }
        let gguf = try writeTinyGGUF(in: directory)
        try Converter.convert(gguf, to: directory.file("a"), source: "same")
        try Converter.convert(gguf, to: directory.file("b"), source: "same")
        #expect(try snapshot(directory.file("a")) == snapshot(directory.file("b")))
    }

    @Test func anExistingDestinationIsRefusedUnlessReplacing() throws {
        let directory = try TemporaryDirectory("writer")
        defer { directory.remove() }
        let gguf = try writeTinyGGUF(in: directory)
        let destination = directory.file("out")
        try Converter.convert(gguf, to: destination)
        let error = try #require(throws: CheckpointError.self) { try Converter.convert(gguf, to: destination) }
        #expect(error.code == .alreadyExists)
        try Converter.convert(gguf, to: destination, source: "replaced", options: .init(replaceExisting: true))
        #expect(try CheckpointReader(directory: destination).index.source == "replaced")
        #expect(directoryEntries(directory.path) == ["out", "tiny.gguf"])
    }

    @Test func aFullDiskLeavesNothingBehind() throws {
        let directory = try TemporaryDirectory("writer")
        defer { directory.remove() }
        let contents = try GGUFConverter.contents(ofFileAt: try writeTinyGGUF(in: directory))
        var writer = CheckpointWriter(options: .init(checksumBlockSize: 4096))
        writer.systemCalls = SystemCalls(pwrite: { fd, buffer, count, offset in
            errno = ENOSPC
            return -1
        })
        let error = try #require(throws: CheckpointError.self) { try writer.write(contents, to: directory.file("out")) }
        #expect(error.code == .io)
        #expect(error.description.contains("no space left on device"))
        #expect(directoryEntries(directory.path) == ["tiny.gguf"])
    }

    @Test func aSourceFailingMidwayLeavesNothingBehind() throws {
        let directory = try TemporaryDirectory("writer")
        defer { directory.remove() }
        var contents = try GGUFConverter.contents(ofFileAt: try writeTinyGGUF(in: directory))
        let original = contents.tensors[5]
        contents.tensors[5] = TensorSource(
            name: original.name, dtype: original.dtype, shape: original.shape, byteCount: original.byteCount
        ) { _, _ in
            throw CheckpointError(.io, "source vanished")
        }
        #expect(throws: CheckpointError.self) { try CheckpointWriter().write(contents, to: directory.file("out")) }
        #expect(directoryEntries(directory.path) == ["tiny.gguf"])
    }

    @Test func stalePartialsOfDeadWritersAreRemoved() throws {
        let directory = try TemporaryDirectory("writer")
        defer { directory.remove() }
        // pid 2^22+1 is above Linux's pid_max default, so no such process exists.
        let stale = directory.file(".model.partial-4194305-abc")
        let live = directory.file(".model.partial-\(getpid())-def")
        try FileManager.default.createDirectory(atPath: stale, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: live, withIntermediateDirectories: true)
        CheckpointWriter.removeStalePartials(in: directory.path)
        #expect(!FileSystem.exists(stale))
        #expect(FileSystem.exists(live))
    }

    @Test func duplicateTensorNamesAreRejected() throws {
        let directory = try TemporaryDirectory("writer")
        defer { directory.remove() }
        var contents = try GGUFConverter.contents(ofFileAt: try writeTinyGGUF(in: directory))
        contents.tensors.append(contents.tensors[0])
        let error = try #require(throws: CheckpointError.self) {
            try CheckpointWriter().write(contents, to: directory.file("out"))
        }
        #expect(error.description.contains("appears twice"))
    }

    @Test func badFileNamesAreRejected() throws {
        let directory = try TemporaryDirectory("writer")
        defer { directory.remove() }
        for name in ["../escape", "index", "data-0001", ".hidden", ""] {
            var contents = try GGUFConverter.contents(ofFileAt: try writeTinyGGUF(in: directory))
            contents.files.append((name, [1, 2, 3]))
            #expect(throws: CheckpointError.self) { try CheckpointWriter().write(contents, to: directory.file("out")) }
            #expect(!FileSystem.exists(directory.file("out")))
        }
    }
}
