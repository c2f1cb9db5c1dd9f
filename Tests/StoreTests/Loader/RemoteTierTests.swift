import CKernels
import Foundation
import Logging
import TestSupport
import Testing

@testable import Checkpoint
@testable import Store

@Suite struct RemoteTierTests {
    /// Serves the checkpoint `name` of `fixture`'s store under `/models/NAME/…`.
    func serve(_ fixture: LoaderFixture, _ name: String, corruptingByte: Int? = nil) throws -> RangeHTTPServer {
        let server = RangeHTTPServer()
        let directory = fixture.store.directory(for: try ModelName(name))
        for file in directoryEntries(directory) {
            var bytes = try readFile(directory + "/" + file)
            if file == "data-0000", let corruptingByte { bytes[corruptingByte] ^= 0xFF }
            server.add("models/\(name)/\(file)", bytes)
        }
        try server.start()
        return server
    }

    /// A store with model `m` served over HTTP and an empty local store whose loader knows the remote.
    func withRemote(
        megabytes: Int, corruptingByte: Int? = nil,
        _ body: (LoaderFixture, RangeHTTPServer, ModelLoader) async throws -> Void
    ) async throws {
        let origin = try LoaderFixture("remote-origin")
        let local = try LoaderFixture("remote-local")
        defer {
            origin.remove()
            local.remove()
        }
        try origin.addSynthetic("m", bytes: megabytes << 20)
        let server = try serve(origin, "m", corruptingByte: corruptingByte)
        defer { server.stop() }
        try await body(
            local, server, try local.loader(remotes: [URL(string: "http://127.0.0.1:\(server.port)/models")!]))
    }

    @Test func aModelOnlyOnARemoteStreamsIntoMemoryAndLandsOnTheSSD() async throws {
        try await withRemote(megabytes: 4) { local, server, loader in
            do {
                let model = try await loader.load(try ModelName("m"))
                #expect(model.tier == .remote)
                #expect(model.cached)
                try expectTensorsMatchStore(model, local.store)
                // Small files come from the installed checkpoint, not the fetch's temporary directory.
                #expect(try !model.fileContents("tokenizer.json").isEmpty)
                #expect(model.directory == local.store.directory(for: ModelName.m))
            }
            #expect(local.store.contains(try ModelName("m")))
            try local.store.reader(for: try ModelName("m")).verify()
            #expect(directoryEntries(local.store.modelsDirectory) == ["m"])
            // Now local: the next cold load reads the SSD.
            try loader.cache.evict(name: "m")
            #expect(try await loader.load(try ModelName("m")).tier == .ssd)
        }
    }

    @Test func aCorruptRemoteChunkFailsAndLeavesNothing() async throws {
        try await withRemote(megabytes: 2, corruptingByte: 300_000) { local, _, loader in
            let failure = await #expect(throws: CheckpointError.self) { try await loader.load(try ModelName("m")) }
            #expect(failure?.code == .corrupt)
            #expect(!local.store.contains(ModelName.m))
            #expect(directoryEntries(local.store.modelsDirectory).isEmpty)
            #expect(loader.cache.listEntries().isEmpty)
        }
    }

    @Test func aRemoteThatDropsConnectionsIsRetried() async throws {
        try await withRemote(megabytes: 2) { local, server, loader in
            server.breakConnections(count: 2, afterBytes: 100)
            let model = try await loader.load(try ModelName("m"))
            try expectTensorsMatchStore(model, local.store)
        }
    }

    @Test func aMissingModelNamesEveryRemoteTried() async throws {
        let local = try LoaderFixture("remote-local")
        defer { local.remove() }
        let server = RangeHTTPServer()
        try server.start()
        defer { server.stop() }
        let loader = try local.loader(remotes: [URL(string: "http://127.0.0.1:\(server.port)/models")!])
        let error = await #expect(throws: StoreError.self) { try await loader.load(try ModelName("absent")) }
        #expect(error?.description.contains("404") == true)
    }
}

@Suite struct DirectIOTests {
    @Test func aFileSystemRefusingODirectFallsBackToBufferedReads() async throws {
        let fixture = try LoaderFixture("direct")
        defer { fixture.remove() }
        try fixture.addSynthetic("m", bytes: 1 << 20)
        let reader = try fixture.store.reader(for: try ModelName("m"))
        // As tmpfs before Linux 6.6 and some network file systems do: EINVAL for O_DIRECT.
        let refusing: (String, Int32) -> Int32 = { path, flags in
            if flags & openDirect != 0 {
                errno = EINVAL
                return -1
            }
            return open(path, flags)
        }
        let source = try LocalChunkSource(
            directory: reader.directory, index: reader.index, directIO: true, logger: .init(label: "test"),
            openFile: refusing)
        #expect(!source.isDirect)
        let bytes = reader.index.partitions[0].byteCount
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        defer { buffer.deallocate() }
        try source.read(partition: 0, offset: 0, length: bytes, into: buffer)
        let first = reader.index.tensors[0]
        #expect(
            Array(UnsafeRawBufferPointer(start: buffer + first.offset, count: first.byteCount))
                == (try reader.tensorBytes(first.name)))
    }

    /// Whether the temporary directory's file system takes O_DIRECT (tmpfs does not).
    static var directIOSupported: Bool {
        guard let directory = try? TemporaryDirectory("direct-probe") else { return false }
        defer { directory.remove() }
        let path = directory.file("probe")
        guard FileManager.default.createFile(atPath: path, contents: Data(count: 4096)) else { return false }
        let fd = open(path, O_RDONLY | sllm_o_direct())
        defer { if fd >= 0 { close(fd) } }
        return fd >= 0
    }

    @Test(.enabled(if: directIOSupported, "O_DIRECT is not supported where temporary files live (tmpfs)"))
    func directReadsReturnTheFilesBytes() throws {
        let fixture = try LoaderFixture("direct")
        defer { fixture.remove() }
        try fixture.addSynthetic("m")
        let reader = try fixture.store.reader(for: try ModelName("m"))
        let source = try LocalChunkSource(
            directory: reader.directory, index: reader.index, directIO: true, logger: .init(label: "test"))
        #expect(source.isDirect)
        let file = try readFile(reader.directory + "/" + reader.index.partitions[0].file)
        let length = min(64 << 10, file.count / 4096 * 4096)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: 4096)
        defer { buffer.deallocate() }
        try source.read(partition: 0, offset: 0, length: length, into: buffer)
        #expect(Array(UnsafeRawBufferPointer(start: buffer, count: length)) == Array(file[0..<length]))
    }
}

extension ModelName {
    /// The model the remote tests serve.
    static var m: ModelName { try! ModelName("m") }
}
