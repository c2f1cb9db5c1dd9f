public import Foundation

/// A tokenizer's vocabulary laid out for lookups in place: the checkpoint stores it as
/// `vocabulary.bin`, written at conversion, so that the first engine of a model in a process
/// builds nothing per token (a 262k-token JSON vocabulary took 290 ms to parse).
///
/// Layout (little-endian): the magic `SLLMVOC1`; eight `UInt32`s (token count, merge count, id
/// table slots, merge table slots, token bytes, merge bytes, metadata bytes, 1 when scores are
/// present); token end offsets (one per token, into the token bytes); token types (one byte
/// each); scores (`Float32`, when present); the id table (open addressing, FNV-1a hash of a
/// token's UTF-8, linear probing, id + 1 per slot, 0 empty); merge end offsets; the merge table
/// (rank + 1 per slot, keyed by the merge's text `left right`); token bytes; merge bytes; then the
/// other `tokenizer.*` metadata as a JSON object. Every offset is checked when read, every slot when a lookup probes it.
public final class VocabularyTable: @unchecked Sendable {
    // Sendable: `bytes` is read-only memory that `owner` (a mapping or an array) keeps alive.
    public static let magic = Array("SLLMVOC1".utf8)

    public let tokenCount: Int
    public let mergeCount: Int
    /// The `tokenizer.*` keys other than the token list, types, scores and merges, as JSON.
    public let metadata: Data
    /// Whether the vocabulary has SentencePiece scores.
    public let hasScores: Bool
    private let owner: AnyObject
    private let bytes: UnsafeRawBufferPointer
    private let typesStart: Int, scoresStart: Int
    private let tokenEnds: Int, idTable: Int, idSlots: Int, mergeEnds: Int, mergeTable: Int, mergeSlots: Int
    private let tokenStart: Int, mergeStart: Int

    // MARK: - Writing

    /// Encodes a vocabulary. `types` and `scores` may be empty (all normal, no scores).
    public static func encode(
        tokens: [String], types: [Int], scores: [Float], merges: [String], metadata: Data
    ) -> [UInt8] {
        let tokenUTF8 = tokens.map { Array($0.utf8) }
        let mergeUTF8 = merges.map { Array($0.utf8) }
        let idSlots = slots(for: tokens.count), mergeSlots = slots(for: merges.count)
        var idTable = [UInt32](repeating: 0, count: idSlots)
        for (id, token) in tokenUTF8.enumerated() {
            insert(UInt32(id + 1), hash: hash(token), into: &idTable) { tokenUTF8[Int($0) - 1] == token }
        }
        var mergeTable = [UInt32](repeating: 0, count: mergeSlots)
        for (rank, merge) in mergeUTF8.enumerated() {
            insert(UInt32(rank + 1), hash: hash(merge), into: &mergeTable) { mergeUTF8[Int($0) - 1] == merge }
        }
        var out = magic
        func put(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { out += $0 } }
        let tokenTotal = tokenUTF8.reduce(0) { $0 + $1.count }, mergeTotal = mergeUTF8.reduce(0) { $0 + $1.count }
        for value in [
            tokens.count, merges.count, idSlots, mergeSlots, tokenTotal, mergeTotal, metadata.count,
            scores.isEmpty ? 0 : 1,
        ] {
            put(UInt32(value))
        }
        var end = 0
        for token in tokenUTF8 {
            end += token.count
            put(UInt32(end))
        }
        out += tokens.indices.map { UInt8(clamping: types.isEmpty ? 1 : types[$0]) }
        for score in scores { put(score.bitPattern) }
        for slot in idTable { put(slot) }
        end = 0
        for merge in mergeUTF8 {
            end += merge.count
            put(UInt32(end))
        }
        for slot in mergeTable { put(slot) }
        for token in tokenUTF8 { out += token }
        for merge in mergeUTF8 { out += merge }
        out += metadata
        return out
    }

    /// A power of two at least twice `count`: probes stay short and a slot is always empty.
    private static func slots(for count: Int) -> Int {
        var size = 16
        while size < 2 * count { size <<= 1 }
        return size
    }

    /// Puts `value` in the first empty slot from `hash`, unless an equal key (`same`) is there
    /// already: the first id of a duplicated token wins, as a dictionary filled in order would.
    private static func insert(_ value: UInt32, hash: UInt64, into table: inout [UInt32], same: (UInt32) -> Bool) {
        let mask = table.count - 1
        var slot = Int(truncatingIfNeeded: hash) & mask
        while table[slot] != 0 {
            if same(table[slot]) { return }
            slot = (slot + 1) & mask
        }
        table[slot] = value
    }

    static func hash<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes { h = (h ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return h
    }

    // MARK: - Reading

    private final class ArrayOwner {
        let pointer: UnsafeMutableRawBufferPointer
        init(_ array: [UInt8]) {
            pointer = .allocate(byteCount: max(1, array.count), alignment: 16)
            array.withUnsafeBytes { pointer.copyMemory(from: $0) }
        }
        deinit { pointer.deallocate() }
    }

    /// Reads an encoded vocabulary held in memory (copied once).
    public convenience init(_ data: [UInt8]) throws(CheckpointError) {
        let owner = ArrayOwner(data)
        try self.init(owner: owner, bytes: UnsafeRawBufferPointer(rebasing: owner.pointer[0..<data.count]))
    }

    /// Reads an encoded vocabulary in place from a mapped checkpoint file.
    public convenience init(mapped file: MappedFile) throws(CheckpointError) {
        try self.init(owner: file, bytes: file.bytes)
    }

    /// Reads an encoded vocabulary at `data`, which `owner` keeps alive, checking every offset
    /// and size.
    ///
    /// - Throws: `CheckpointError` (`invalidFormat`) naming what is wrong.
    private init(owner: AnyObject, bytes data: UnsafeRawBufferPointer) throws(CheckpointError) {
        func bad(_ what: String) -> CheckpointError { CheckpointError(.invalidFormat, "vocabulary.bin: \(what)") }
        guard data.count >= 40, Array(data[0..<8]) == Self.magic else { throw bad("not a vocabulary table") }
        func word(_ offset: Int) -> Int {
            Int(UInt32(littleEndian: data.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
        }
        let header = (0..<8).map { word(8 + 4 * $0) }
        let (tokens, merges, idSlots, mergeSlots) = (header[0], header[1], header[2], header[3])
        let (tokenBytes, mergeBytes, metadataBytes, hasScores) = (header[4], header[5], header[6], header[7])
        guard tokens > 0, tokens < 1 << 24, merges < 1 << 24, hasScores <= 1 else { throw bad("counts out of range") }
        guard idSlots.nonzeroBitCount == 1, idSlots > tokens, idSlots <= max(16, 4 * tokens),
            mergeSlots.nonzeroBitCount == 1, mergeSlots > merges, mergeSlots <= max(16, 4 * merges)
        else { throw bad("hash tables of \(idSlots) and \(mergeSlots) slots do not fit their counts") }
        var cursor = 40
        let tokenEnds = cursor
        cursor += 4 * tokens
        let typesStart = cursor
        cursor += tokens
        let scoresStart = cursor
        cursor += hasScores == 1 ? 4 * tokens : 0
        let idTable = cursor
        cursor += 4 * idSlots
        let mergeEnds = cursor
        cursor += 4 * merges
        let mergeTable = cursor
        cursor += 4 * mergeSlots
        let tokenStart = cursor
        cursor += tokenBytes
        let mergeStart = cursor
        cursor += mergeBytes
        guard cursor + metadataBytes == data.count else {
            throw bad("\(data.count) bytes, but the header describes \(cursor + metadataBytes)")
        }
        // Every end offset in order and inside its bytes (slots are checked as lookups probe them).
        let problem: String? = {
            let at = word
            for (ends, count, limit, what) in [
                (tokenEnds, tokens, tokenBytes, "token"), (mergeEnds, merges, mergeBytes, "merge"),
            ] {
                var previous = 0
                for i in 0..<count {
                    let end = at(ends + 4 * i)
                    guard end >= previous, end <= limit else { return "\(what) \(i) ends outside the \(what) bytes" }
                    previous = end
                }
            }
            return nil
        }()
        if let problem { throw bad(problem) }
        self.owner = owner
        self.bytes = data
        self.tokenCount = tokens
        self.mergeCount = merges
        (self.typesStart, self.scoresStart, self.hasScores) = (typesStart, scoresStart, hasScores == 1)
        self.metadata = Data(UnsafeRawBufferPointer(rebasing: data[(mergeStart + mergeBytes)...]))
        (self.tokenEnds, self.idTable, self.idSlots) = (tokenEnds, idTable, idSlots)
        (self.mergeEnds, self.mergeTable, self.mergeSlots) = (mergeEnds, mergeTable, mergeSlots)
        (self.tokenStart, self.mergeStart) = (tokenStart, mergeStart)
    }

    private func word(_ offset: Int) -> Int {
        Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
    }

    private func range(ends: Int, start: Int, index: Int) -> Range<Int> {
        let lower = index == 0 ? 0 : word(ends + 4 * (index - 1))
        return (start + lower)..<(start + word(ends + 4 * index))
    }

    /// The type of token `id` (in range) as GGUF numbers them (1 normal, 3 control, …).
    public func type(_ id: Int) -> Int { Int(bytes[typesStart + id]) }

    /// The SentencePiece score of token `id` (in range; 0 without scores).
    public func score(_ id: Int) -> Float {
        hasScores ? Float(bitPattern: UInt32(truncatingIfNeeded: word(scoresStart + 4 * id))) : 0
    }

    /// The ids of the tokens whose type is one of `types`, in order.
    public func ids(ofTypes types: Set<Int>) -> [Int] {
        var wanted = [Bool](repeating: false, count: 256)
        for type in types where (0..<256).contains(type) { wanted[type] = true }
        return (0..<tokenCount).filter { wanted[Int(bytes[typesStart + $0])] }
    }

    /// The UTF-8 bytes of token `id` (in range), valid while the table lives.
    public func tokenUTF8(_ id: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[range(ends: tokenEnds, start: tokenStart, index: id)])
    }

    /// The text of token `id` (in range).
    public func token(_ id: Int) -> String { String(decoding: tokenUTF8(id), as: UTF8.self) }

    /// The id of the token spelled `text`, if any.
    public func id(of text: String) -> Int? {
        var text = text
        return text.withUTF8 { lookup($0, table: idTable, slots: idSlots, ends: tokenEnds, start: tokenStart) }
    }

    /// The id of the token spelled by `utf8`, if any.
    public func id(utf8: UnsafeBufferPointer<UInt8>) -> Int? {
        lookup(utf8, table: idTable, slots: idSlots, ends: tokenEnds, start: tokenStart)
    }

    /// The rank of the merge `left right`, if any.
    public func rank(of merge: String) -> Int? {
        var merge = merge
        return merge.withUTF8 { lookup($0, table: mergeTable, slots: mergeSlots, ends: mergeEnds, start: mergeStart) }
    }

    /// Slots are checked as they are probed rather than all when the table is read (half a
    /// million of them for a large vocabulary): an entry beyond the list ends the probe as a
    /// miss, and a probe visits each slot at most once.
    private func lookup(_ key: UnsafeBufferPointer<UInt8>, table: Int, slots: Int, ends: Int, start: Int) -> Int? {
        let mask = slots - 1
        let count = table == idTable ? tokenCount : mergeCount
        var slot = Int(truncatingIfNeeded: Self.hash(key)) & mask
        for _ in 0..<slots {
            let value = word(table + 4 * slot)
            if value == 0 || value > count { return nil }
            let entry = range(ends: ends, start: start, index: value - 1)
            if entry.count == key.count
                && (key.isEmpty || memcmp(bytes.baseAddress! + entry.lowerBound, key.baseAddress!, key.count) == 0)
            {
                return value - 1
            }
            slot = (slot + 1) & mask
        }
        return nil
    }
}
