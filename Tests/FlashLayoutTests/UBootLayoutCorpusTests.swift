import Foundation
import Testing

@testable import FlashLayout

@Suite("U-Boot's parser on the real-world corpus")
struct UBootLayoutCorpusTests {
    @Test("every corpus file has a recorded verdict")
    func corpusIsComplete() {
        #expect(Corpus.files.count >= 60)
        for file in Corpus.files {
            #expect(Corpus.expectations[file] != nil, "no verdict in SOURCES.md for \(file)")
        }
    }

    @Test("raw parse + treat_partition_list give the recorded verdict", arguments: Corpus.files)
    func verdict(file: String) throws {
        let expected = try #require(Corpus.expectations[file])
        let parsed = UBootLayout.parse(try Corpus.bytes(file))
        let outcome = parsed.flatMap { lines in UBootLayout.devices(lines).map { (lines, $0) } }
        switch outcome {
        case .success(let (lines, devices)):
            #expect(expected.error == nil, "U-Boot accepted it, SOURCES.md says: \(expected.error ?? "")")
            #expect(lines.count == expected.rows)
            #expect(lines.filter { $0.target.kind != .none }.count == expected.deviceRows)
            #expect(devices.map(\.target.description) == expected.devices)
        case .failure(let error):
            #expect(error.message == expected.error)
        }
    }
}
