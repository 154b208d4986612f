import BootImages
import Testing

@Suite("STM32 image header")
struct STM32ImageHeaderTests {
    static let signedV1 = STM32ImageHeader(
        signature: (0..<64).map { UInt8($0) }, checksum: 0xDEAD_BEEF, imageLength: 0x1234,
        entryPoint: 0x2FFC_2500, loadAddress: 0x2FFC_2400, versionNumber: 7,
        fields: .v1(
            optionFlags: 0, ecdsaAlgorithm: 2, ecdsaPublicKey: (0..<64).map { UInt8(255 - $0) }, binaryType: 0x10)
    )

    @Test func v1RoundTrips() throws {
        let bytes = Self.signedV1.encoded()
        #expect(bytes.count == 256)
        let decoded = try STM32ImageHeader(decoding: bytes)
        #expect(decoded == Self.signedV1)
        #expect(decoded.version == .v1)
        #expect(decoded.headerLength == 256)
        #expect(decoded.isSigned)
        #expect(decoded.binaryType == 0x10)
        #expect(decoded.candidateFamilies == [.mp15])
        // Spot-check the layout against the offsets of reference §C.10.6.
        #expect(Array(bytes[68..<72]) == [0xEF, 0xBE, 0xAD, 0xDE])
        #expect(Array(bytes[72..<76]) == [0x00, 0x00, 0x01, 0x00])
        #expect(Array(bytes[88..<92]) == [0x00, 0x24, 0xFC, 0x2F])
        #expect(bytes[104] == 2 && bytes[108] == 255 && bytes[171] == 192 && bytes[255] == 0x10)
    }

    @Test func v2RoundTripsWithExtensionChain() throws {
        var authentication = [UInt8](repeating: 0xA5, count: 0x60)
        authentication.replaceSubrange(0..<8, with: [0x53, 0x54, 0x00, 0x02, 0x60, 0x00, 0x00, 0x00])
        var padding = [UInt8](repeating: 0, count: 0x120)
        padding.replaceSubrange(0..<8, with: [0x53, 0x54, 0xFF, 0xFF, 0x20, 0x01, 0x00, 0x00])
        let header = STM32ImageHeader(
            checksum: 99, imageLength: 4096, entryPoint: 0x0E00_2600, loadAddress: 0x0E00_2600,
            fields: .v2(
                minorVersion: 2, extensionFlags: 0x8000_0001, binaryType: 0x10,
                extensionHeaders: authentication + padding))
        let bytes = header.encoded()
        #expect(bytes.count == 128 + 0x180)
        #expect(Array(bytes[72..<76]) == [0x00, 0x02, 0x02, 0x00])
        #expect(Array(bytes[104..<108]) == [0x80, 0x01, 0x00, 0x00])
        let decoded = try STM32ImageHeader(decoding: bytes + [1, 2, 3])
        #expect(decoded == header)
        #expect(decoded.headerLength == 512)
        #expect(decoded.isSigned)
        #expect(decoded.headerVersionWord == 0x0002_0200)
        #expect(decoded.candidateFamilies == [.mp2])
    }

    @Test func wrapV1IsByteExact() {
        let payload: [UInt8] = Array("P\t0x10\tbootfs\n".utf8)
        let wrapped = STM32ImageHeader.wrap(payload: payload)
        var expected = [UInt8](repeating: 0, count: 256)
        expected[0...3] = [0x53, 0x54, 0x4D, 0x32]
        // The payload's bytes add up to 1026 = 0x0402.
        #expect(payload.reduce(0) { $0 + Int($1) } == 0x0402)
        expected[68...71] = [0x02, 0x04, 0x00, 0x00]
        expected[72...75] = [0x00, 0x00, 0x01, 0x00]
        expected[76...79] = [UInt8(payload.count), 0, 0, 0]
        expected[100...103] = [0x01, 0x00, 0x00, 0x00]
        #expect(wrapped == expected + payload)
    }

    @Test func wrapV2HasAPaddingExtensionAnd512ByteHeader() throws {
        let payload = [UInt8](repeating: 0xFF, count: 300)
        let wrapped = STM32ImageHeader.wrap(
            payload: payload, version: .v2, entryPoint: 0x2FFE_0000, loadAddress: 0x2FFE_0000, binaryType: 0x10)
        #expect(wrapped.count == 512 + 300)
        #expect(Array(wrapped[100..<112]) == [0x00, 0x00, 0x00, 0x80, 0x80, 0x01, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00])
        #expect(Array(wrapped[128..<136]) == [0x53, 0x54, 0xFF, 0xFF, 0x80, 0x01, 0x00, 0x00])
        #expect(Array(wrapped[68..<72]) == [0xD4, 0x2A, 0x01, 0x00])  // 300 × 255 = 76500 = 0x12AD4
        let header = try STM32ImageHeader(decoding: wrapped)
        #expect(header.headerLength == 512)
        #expect(!header.isSigned)
        #expect(header.candidateFamilies == [.mp13])
        #expect(Array(wrapped[header.headerLength...]) == payload)
    }

    @Test func checksumWrapsAround() {
        let bytes = [UInt8](repeating: 0xFF, count: 16_843_010)  // 255 × that > 2³²
        #expect(STM32ImageHeader.checksum(of: bytes) == UInt32(truncatingIfNeeded: 255 * 16_843_010))
    }

    @Test func rejectsBadMagic() {
        var bytes = STM32ImageHeader.wrap(payload: [1])
        bytes[3] = 0x31
        #expect(throws: STM32HeaderError.badMagic([0x53, 0x54, 0x4D, 0x31])) { try STM32ImageHeader(decoding: bytes) }
    }

    @Test(arguments: [UInt32(0x0003_0000), 0x0002_0300, 0x0001_0100, 0])
    func rejectsUnknownVersion(word: UInt32) {
        var bytes = STM32ImageHeader.wrap(payload: [1])
        bytes.replaceSubrange(72..<76, with: (0..<4).map { UInt8(truncatingIfNeeded: word >> (8 * $0)) })
        #expect(throws: STM32HeaderError.unknownVersion(word)) { try STM32ImageHeader(decoding: bytes) }
    }

    @Test(arguments: [84, 92])
    func rejectsNonzeroReserved(offset: Int) {
        var bytes = STM32ImageHeader.wrap(payload: [1])
        bytes[offset + 1] = 1
        #expect(throws: STM32HeaderError.nonzeroReserved(offset: offset)) { try STM32ImageHeader(decoding: bytes) }
    }

    @Test func rejectsNonzeroPadding() {
        var v1 = STM32ImageHeader.wrap(payload: [1])
        v1[200] = 9
        #expect(throws: STM32HeaderError.nonzeroPadding(offset: 200)) { try STM32ImageHeader(decoding: v1) }
        var v2 = STM32ImageHeader.wrap(payload: [1], version: .v2)
        v2[127] = 9
        #expect(throws: STM32HeaderError.nonzeroPadding(offset: 127)) { try STM32ImageHeader(decoding: v2) }
    }

    @Test func rejectsShortInput() {
        let v1 = STM32ImageHeader.wrap(payload: [])
        #expect(throws: STM32HeaderError.tooShort(available: 200, needed: 256)) {
            try STM32ImageHeader(decoding: Array(v1.prefix(200)))
        }
        let v2 = STM32ImageHeader.wrap(payload: [], version: .v2)
        #expect(throws: STM32HeaderError.tooShort(available: 300, needed: 512)) {
            try STM32ImageHeader(decoding: Array(v2.prefix(300)))
        }
        #expect(throws: STM32HeaderError.tooShort(available: 2, needed: 4)) {
            try STM32ImageHeader(decoding: [0x53, 0x54])
        }
    }

    @Test func rejectsBrokenExtensionChain() {
        var bytes = STM32ImageHeader.wrap(payload: [1], version: .v2)
        bytes[132] = 0x10  // the padding extension now claims 0x110 bytes of 0x180
        #expect(throws: STM32HeaderError.self) { try STM32ImageHeader(decoding: bytes) }
        bytes[132] = 0x80
        bytes[133] = 0x02  // 0x280: longer than the announced total
        #expect(throws: STM32HeaderError.self) { try STM32ImageHeader(decoding: bytes) }
    }

    @Test func errorsReadAsSentences() {
        let errors: [STM32HeaderError] = [
            .tooShort(available: 3, needed: 256), .badMagic([0x7F, 0x45, 0x4C, 0x46]), .unknownVersion(0x0003_0000),
            .nonzeroReserved(offset: 84), .nonzeroPadding(offset: 180),
            .malformedExtensionHeaders(announcedLength: 384, detail: "x"),
        ]
        for error in errors {
            #expect(error.description.first?.isUppercase == true)
            #expect(error.description.hasSuffix("."))
        }
        #expect(STM32HeaderError.badMagic([0x7F, 0x45, 0x4C, 0x46]).description.contains("7F 45 4C 46"))
        #expect(STM32HeaderError.unknownVersion(0x0003_0000).description.contains("0x00030000"))
    }

    @Test func signatureFlagFollowsEachVersion() throws {
        #expect(!(try STM32ImageHeader(decoding: STM32ImageHeader.wrap(payload: [0]))).isSigned)
        var v2 = STM32ImageHeader.wrap(payload: [0], version: .v2)
        #expect(!(try STM32ImageHeader(decoding: v2)).isSigned)
        v2[100] |= 1
        #expect(try STM32ImageHeader(decoding: v2).isSigned)
    }

    static let familiesByLoadAddress: [(UInt32, [ChipFamily])] = [
        (0x2FFE_0000, [.mp13]), (0x0E00_2600, [.mp2]), (0xC000_0000, [.mp13, .mp2]),
    ]

    @Test(arguments: familiesByLoadAddress)
    func v2FamilyFollowsLoadAddress(load: UInt32, families: [ChipFamily]) throws {
        let header = try STM32ImageHeader(
            decoding: STM32ImageHeader.wrap(payload: [0], version: .v2, loadAddress: load))
        #expect(header.candidateFamilies == families)
    }
}

@Suite("FIP ToC header")
struct FIPHeaderTests {
    @Test func roundTripsAndValidates() throws {
        let header = FIPHeader(serialNumber: 0x1234_5678, flags: 0x0102_0304_0506_0708)
        let bytes = header.encoded()
        #expect(bytes == [0x01, 0x00, 0x64, 0xAA, 0x78, 0x56, 0x34, 0x12, 8, 7, 6, 5, 4, 3, 2, 1])
        let decoded = try #require(FIPHeader(decoding: bytes + [0xFF]))
        #expect(decoded == header)
        #expect(decoded.isValid)
    }

    @Test func zeroSerialOrWrongNameIsInvalid() throws {
        #expect(!(try #require(FIPHeader(decoding: FIPHeader(serialNumber: 0).encoded()))).isValid)
        #expect(!(try #require(FIPHeader(decoding: FIPHeader(name: 0xAA64_0002, serialNumber: 1).encoded()))).isValid)
    }

    @Test func shortInputDoesNotDecode() {
        #expect(FIPHeader(decoding: Array(FIPHeader(serialNumber: 1).encoded().prefix(15))) == nil)
    }
}
