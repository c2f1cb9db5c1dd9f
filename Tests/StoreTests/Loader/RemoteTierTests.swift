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
        try await Self.withServed(megabytes: megabytes, count: 1, corruptingByte: corruptingByte) {
            _, local, servers in
            try await body(
                local, servers[0],
                try local.loader(remotes: [URL(string: "http://127.0.0.1:\(servers[0].port)/models")!]))
        }
    }

    /// A store holding a synthetic `m` of `megabytes` served by `count` servers (the first
    /// corrupting a byte of its data when asked), and an empty store beside it.
    static func withServed(
        megabytes: Int, count: Int, corruptingByte: Int? = nil,
        _ body: (LoaderFixture, LoaderFixture, [RangeHTTPServer]) async throws -> Void
    ) async throws {
        let origin = try LoaderFixture("remote-origin")
        let local = try LoaderFixture("remote-local")
        defer {
            origin.remove()
            local.remove()
        }
        try origin.addSynthetic("m", bytes: megabytes << 20)
        let servers = try (0..<count).map { index in
            try RemoteTierTests().serve(origin, "m", corruptingByte: index == 0 ? corruptingByte : nil)
        }
        defer { servers.forEach { $0.stop() } }
        try await body(origin, local, servers)
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

    /// A description asked again moments later (a deploy's resolve, then the model's facts) is
    /// not fetched again; a file it lacked is.
    @Test func aDescriptionAskedTwiceIsFetchedOnce() async throws {
        try await withRemote(megabytes: 1) { local, server, loader in
            let name = try ModelName("m")
            let first = try #require(try await loader.remoteDescription(of: name, files: []))
            let requests = server.requests
            let again = try #require(try await loader.remoteDescription(of: name, files: []))
            #expect(server.requests == requests)
            #expect(again.index == first.index && again.files.isEmpty)
            // Asking for a file of the index that was not fetched goes to the remote.
            let file = try #require(first.index.files.first, "the synthetic checkpoint carries small files")
            let more = try #require(try await loader.remoteDescription(of: name, files: [file.name]))
            #expect(server.requests > requests && more.files[file.name]?.count == Int(file.byteCount))
        }
    }

    /// What a fetched chunk still has to write once its blocks wrote themselves as they arrived.
    @Test func aChunkWritesOnlyWhatItsBlocksLeft() {
        #expect(RemoteChunkSource.gaps(in: 100..<200, besides: []) == [100..<200])
        #expect(RemoteChunkSource.gaps(in: 100..<200, besides: [100..<200]).isEmpty)
        // A block begun in the previous chunk wrote the chunk's start; one running into the next
        // left the tail; ranges come in any order, may touch or overlap.
        #expect(
            RemoteChunkSource.gaps(in: 100..<200, besides: [150..<170, 100..<120, 120..<140, 165..<180])
                == [140..<150, 180..<200])
        #expect(RemoteChunkSource.gaps(in: 100..<200, besides: [90..<110, 190..<210]) == [110..<190])
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

/// Fetches from several sources (peers, remote stores): spread, failover, relays.
@Suite struct FetchPlanTests {
    func source(_ server: RangeHTTPServer, label: String, relays: Bool = false) -> CheckpointSource {
        CheckpointSource(
            base: URL(string: "http://127.0.0.1:\(server.port)/models")!, label: label, isPeer: true, relays: relays)
    }

    func partitionBytes(_ store: ModelStore) throws -> Int {
        try store.reader(for: ModelName.m).index.partitions.reduce(0) { $0 + $1.byteCount }
    }

    /// `RemoteTierTests.withServed`, with a loader of the empty store that has no remote of its own.
    func withSources(
        megabytes: Int, count: Int, corruptingFirst: Bool = false,
        _ body: (LoaderFixture, LoaderFixture, [RangeHTTPServer], ModelLoader) async throws -> Void
    ) async throws {
        try await RemoteTierTests.withServed(
            megabytes: megabytes, count: count, corruptingByte: corruptingFirst ? 300_000 : nil
        ) { origin, local, servers in
            try await body(origin, local, servers, try local.loader())
        }
    }

    @Test func aFetchSpreadsOverItsSourcesAndPassesOverOneSendingBadBytes() async throws {
        try await withSources(megabytes: 6, count: 3, corruptingFirst: true) { origin, local, servers, loader in
            let plan = FetchPlan(
                sources: servers.enumerated().map { source($1, label: "peer-\($0)") }, spread: 3)
            let model = try await loader.load(ModelName.m, from: plan)
            #expect(model.tier == .peer)
            try expectTensorsMatchStore(model, local.store)
            try local.store.reader(for: ModelName.m).verify()
            let fetched = try #require(model.timings.fetched)
            // Every byte was taken once; the chunk holding the bad byte, and every chunk after the
            // first failure, came from the good sources, which both served a share.
            #expect(fetched.values.reduce(0, +) == (try partitionBytes(local.store)), "\(fetched)")
            #expect((fetched["peer-0"] ?? 0) < (try partitionBytes(local.store)) / 2, "\(fetched)")
            #expect((fetched["peer-1"] ?? 0) > 0 && (fetched["peer-2"] ?? 0) > 0, "\(fetched)")
        }
    }

    @Test func aSourceThatDiesMidFetchIsReplacedByTheNextAndNothingIsFetchedTwice() async throws {
        try await withSources(megabytes: 8, count: 2) { origin, local, servers, loader in
            // The first source breaks every connection once it has sent 2 MiB.
            servers[0].breakConnections(afterTotalBytes: 2 << 20)
            let model = try await loader.load(
                ModelName.m, from: FetchPlan(sources: [source(servers[0], label: "a"), source(servers[1], label: "b")]))
            try expectTensorsMatchStore(model, local.store)
            let fetched = try #require(model.timings.fetched)
            #expect((fetched["a"] ?? 0) >= 2 << 20 && (fetched["b"] ?? 0) > 0, "\(fetched)")
            #expect(fetched.values.reduce(0, +) == (try partitionBytes(local.store)))
        }
    }

    @Test func concurrentLoadsOfOneModelFetchItOnce() async throws {
        try await withSources(megabytes: 4, count: 1) { origin, local, servers, loader in
            servers[0].pace(bytesPerSecond: 16 << 20)
            let plan = FetchPlan(sources: [source(servers[0], label: "a")])
            async let first = loader.load(ModelName.m, from: plan)
            async let second = loader.load(ModelName.m, from: plan)
            let models = try await [first, second]
            for model in models { try expectTensorsMatchStore(model, local.store) }
            let checkpointBytes = try partitionBytes(local.store)
            #expect(servers[0].bytesServed < checkpointBytes + (1 << 20), "\(servers[0].bytesServed)")
        }
    }

    /// Asks `loader` for `partition`'s file before its fetch from `server` begins, then starts the
    /// fetch: the file (answered once the fetch began) and the load.
    func relayedPartition(
        _ partition: CheckpointIndex.PartitionRecord, of loader: ModelLoader, fetchingFrom server: RangeHTTPServer
    ) async throws -> (CheckpointFile, Task<LoadedModel, any Error>) {
        let early = Task { try await loader.checkpointFile(ModelName.m, file: partition.file, awaiting: .seconds(20)) }
        try await Task.sleep(for: .milliseconds(100))
        let load = Task { try await loader.load(ModelName.m, from: FetchPlan(sources: [source(server, label: "a")])) }
        return (try #require(try await early.value), load)
    }

    /// A node fetching a checkpoint serves it meanwhile: a read waits for its range to arrive,
    /// a read asked before the fetch began waits for it to begin, and only the index's files
    /// are served.
    @Test func aFetchUnderWayIsRelayedToPeers() async throws {
        try await withSources(megabytes: 6, count: 1) { origin, local, servers, loader in
            servers[0].pace(bytesPerSecond: 8 << 20)
            let partition = try origin.store.reader(for: ModelName.m).index.partitions[0]
            let expected = try readFile(origin.store.directory(for: ModelName.m) + "/" + partition.file)

            // Asked before the fetch begins: waits for it.
            let (file, load) = try await relayedPartition(partition, of: loader, fetchingFrom: servers[0])
            #expect(file.isRelayed)
            // The last MiB is read before it has arrived (the fetch takes most of a second).
            let tail = try await file.read(offset: partition.byteCount - (1 << 20), count: 1 << 20)
            #expect(tail == Array(expected[(partition.byteCount - (1 << 20))...]))
            _ = try await load.value
            #expect(try await loader.checkpointFile(ModelName.m, file: partition.file)?.isRelayed == false)

            // Only files the index names.
            for name in ["../m/index", "..", "config.json.bak", "", "index/../index", "%2e%2e"] {
                #expect(try await loader.checkpointFile(ModelName.m, file: name) == nil, "\(name)")
            }
            #expect(try await loader.checkpointFile(try ModelName("other"), file: "index") == nil)
            // Not awaited long when nothing comes.
            #expect(
                try await loader.checkpointFile(try ModelName("other"), file: "index", awaiting: .milliseconds(50))
                    == nil)
        }
    }

    @Test func aRelayedReadFailsWhenTheFetchFails() async throws {
        try await withSources(megabytes: 6, count: 1) { origin, local, servers, loader in
            servers[0].pace(bytesPerSecond: 8 << 20)
            servers[0].breakConnections(afterTotalBytes: 2 << 20)
            let partition = try origin.store.reader(for: ModelName.m).index.partitions[0]
            let (file, load) = try await relayedPartition(partition, of: loader, fetchingFrom: servers[0])
            await #expect(throws: StoreError.self) {
                _ = try await file.read(offset: partition.byteCount - 4096, count: 4096)
            }
            await #expect(throws: (any Error).self) { _ = try await load.value }
            #expect(!local.store.contains(ModelName.m))
            #expect(directoryEntries(local.store.modelsDirectory).isEmpty)
        }
    }
}
