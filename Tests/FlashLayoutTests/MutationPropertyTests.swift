import Testing

@testable import FlashLayout

/// A small deterministic generator (SplitMix64), so failures reproduce from the seed.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite("random mutations of corpus files")
struct MutationPropertyTests {
    /// Bytes that matter to the grammar, mixed with arbitrary ones.
    static let interesting: [UInt8] = Array("\t\n\r#PED- 0x1fF".utf8) + [0, 0xC3, 0xFF]

    static func mutate(_ bytes: [UInt8], using rng: inout SeededGenerator) -> [UInt8] {
        var out = bytes
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            let position = out.isEmpty ? 0 : Int.random(in: 0..<out.count, using: &rng)
            let byte =
                Bool.random(using: &rng)
                ? interesting.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng)
            switch Int.random(in: 0..<4, using: &rng) {
            case 0 where !out.isEmpty: out[position] = byte
            case 1: out.insert(byte, at: position)
            case 2 where !out.isEmpty: out.remove(at: position)
            default: out.insert(contentsOf: out[position...].prefix(12), at: position)
            }
        }
        return out
    }

    @Test(
        "never crash; always a layout or diagnostics; what check accepts, U-Boot accepts as our payload",
        arguments: Corpus.files)
    func mutations(file: String) throws {
        let original = try Corpus.bytes(file)
        var rng = SeededGenerator(
            state: UInt64(truncatingIfNeeded: file.hashValue == 0 ? 1 : file.utf8.reduce(7) { $0 &* 31 &+ UInt64($1) }))
        for _ in 0..<40 {
            let mutated = Self.mutate(original, using: &rng)
            let result = LayoutChecker.check(bytes: mutated, path: file, options: .init(layoutOnly: true))
            _ = UBootLayout.parse(mutated)
            #expect(!result.lines.isEmpty || !result.diagnostics.isEmpty)
            if !result.hasErrors {
                let reparsed = UBootLayout.parse(LayoutPayload.normalized(result.lines).bytes)
                #expect(
                    reparsed.failure == nil, "payload of a clean layout rejected: \(reparsed.failure?.message ?? "")")
                #expect((try? reparsed.get().count) == result.lines.count)
            }
        }
    }
}
