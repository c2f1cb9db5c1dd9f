import Foundation
import Testing

@testable import Checkpoint

/// The vocabulary as `vocabulary.bin` lays it out gives what the lists it was made from give.
@Suite struct VocabularyTableTests {
    @Test func lookupsGiveTheFirstIdOfEachSpellingAndEachMergesRank() throws {
        let tokens = ["<unk>", "a", "b", "ab", "▁the", "é", "ab", "", "<0x0A>"]
        let types = [2, 1, 1, 1, 1, 1, 1, 1, 6]
        let scores: [Float] = [0, -1, -2, -3, -4.5, -5, -6, -7, -8]
        let merges = ["a b", "▁ t", "a b", "t h"]
        let metadata = Data(#"{"tokenizer.ggml.model":"llama"}"#.utf8)
        let table = try VocabularyTable(
            VocabularyTable.encode(tokens: tokens, types: types, scores: scores, merges: merges, metadata: metadata))
        #expect(table.tokenCount == tokens.count)
        #expect(table.mergeCount == merges.count)
        #expect(table.metadata == metadata)
        #expect(table.hasScores)
        for (id, token) in tokens.enumerated() {
            #expect(table.token(id) == token)
            #expect(table.type(id) == types[id])
            #expect(table.score(id) == scores[id])
            // A duplicated spelling ("ab") maps to its first id, as a dictionary filled in order.
            #expect(table.id(of: token) == tokens.firstIndex(of: token))
        }
        #expect(table.id(of: "abc") == nil)
        #expect(table.rank(of: "a b") == 0)
        #expect(table.rank(of: "t h") == 3)
        #expect(table.rank(of: "b a") == nil)
        #expect(table.ids(ofTypes: [2, 6]) == [0, 8])
    }

    @Test func aVocabularyWithoutScoresOrTypesReadsAsNormalTokens() throws {
        let table = try VocabularyTable(
            VocabularyTable.encode(tokens: ["x", "y"], types: [], scores: [], merges: [], metadata: Data("{}".utf8)))
        #expect(!table.hasScores)
        #expect(table.type(1) == 1)
        #expect(table.score(1) == 0)
        #expect(table.id(of: "y") == 1)
    }

    @Test func aBadTableIsRefusedWithItsReason() {
        var bytes = VocabularyTable.encode(tokens: ["x"], types: [], scores: [], merges: [], metadata: Data())
        bytes[0] = 0
        #expect(throws: CheckpointError.self) { try VocabularyTable(bytes) }
        let short = Array(
            VocabularyTable.encode(tokens: ["x"], types: [], scores: [], merges: [], metadata: Data()).dropLast())
        let error = #expect(throws: CheckpointError.self) { try VocabularyTable(short) }
        #expect(error?.description.contains("vocabulary.bin") == true)
    }
}
