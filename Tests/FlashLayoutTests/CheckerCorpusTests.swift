import Testing

@testable import FlashLayout

/// The checker's verdict on real files must be U-Boot's verdict on the same file with only the
/// formatting a raw parser trips on removed (trailing TABs), since that is what the tool sends.
@Suite("check on the real-world corpus")
struct CheckerCorpusTests {
    /// Removes TABs right before a line end or the end of the file: the only purely formatting
    /// difference U-Boot's byte loop cannot absorb.
    static func withoutTrailingTabs(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        for byte in bytes {
            if byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") {
                while out.last == UInt8(ascii: "\t") { out.removeLast() }
            }
            out.append(byte)
        }
        while out.last == UInt8(ascii: "\t") { out.removeLast() }
        return out
    }

    @Test("errors exactly when U-Boot rejects the formatting-normalized file", arguments: Corpus.files)
    func verdict(file: String) throws {
        let bytes = try Corpus.bytes(file)
        let result = LayoutChecker.check(bytes: bytes, path: file, options: .init(layoutOnly: true))
        // U-Boot's parse and treat_partition_list(), then the init_device() rules no geometry avoids.
        let oracle = UBootLayout.parse(Self.withoutTrailingTabs(bytes)).flatMap { UBootLayout.devices($0) }.flatMap {
            devices -> Result<[LayoutDevice], UBootLayoutError> in
            if let problem = devices.lazy.flatMap(DevicePlanner.unconditionalProblems).first {
                return .failure(problem.error)
            }
            return .success(devices)
        }
        switch oracle {
        case .success:
            #expect(!result.hasErrors, "\(result.diagnostics.filter { $0.severity == .error }.map(\.message))")
        case .failure(let error):
            #expect(result.hasErrors)
            // U-Boot's own first message appears inside one of our errors.
            #expect(
                result.diagnostics.contains { $0.severity == .error && $0.message.contains(error.message) },
                "U-Boot says \(error.message)")
        }
    }

    @Test("files U-Boot rejects only for formatting pass with a raw-parse warning")
    func formattingOnly() throws {
        for file in ["kubataba-learning-mp135f_flash.tsv", "sativa_emmc-4gb_final.tsv", "sativa_emmc-4gb_v1.tsv"] {
            let expected = try #require(Corpus.expectations[file])
            #expect(expected.error != nil, "SOURCES.md records a raw U-Boot failure for \(file)")
            let result = LayoutChecker.check(
                bytes: try Corpus.bytes(file), path: file, options: .init(layoutOnly: true))
            #expect(!result.hasErrors)
            let warning = result.diagnostics.first { $0.code == "raw-parse-differs" }
            #expect(warning?.message.contains(expected.error ?? "?") == true)
        }
    }

    @Test("every accepted corpus layout yields a payload U-Boot accepts with the same rows", arguments: Corpus.files)
    func payloadRoundTrip(file: String) throws {
        let result = LayoutChecker.check(bytes: try Corpus.bytes(file), path: file, options: .init(layoutOnly: true))
        guard !result.hasErrors else { return }
        let payload = LayoutPayload.normalized(result.lines)
        let reparsed = try UBootLayout.parse(payload.bytes).get()
        #expect(reparsed.count == result.lines.count)
        for (sent, original) in zip(reparsed, result.lines) {
            #expect(sent.id == original.id)
            #expect(sent.name == original.name)
            #expect(sent.type == original.type)
            #expect(sent.target == original.target)
            #expect(sent.offset == original.offset)
            #expect(sent.options == original.options)
        }
    }
}
