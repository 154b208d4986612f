/// The header ST's ROM code, TF-A and U-Boot expect in front of an FSBL, an SSBL or a wrapped
/// FlashLayout (protocol reference §C.10.6). All fields are little-endian.
///
/// Two layouts share the first 100 bytes:
/// - v1 (STM32MP15): 256 bytes; option flags, ECDSA algorithm and public key, 83 zero bytes of
///   padding, and a one-byte binary type at 255.
/// - v2 (STM32MP13, STM32MP2): a 128-byte fixed part (extension flags, extension headers length,
///   a 32-bit binary type, 16 zero bytes) followed by a chain of extension headers. The payload
///   starts at 128 + extension headers length; the usual single padding extension of 0x180 bytes
///   gives a 512-byte header, which is what TF-A's `stm32image` and U-Boot's `mkimage -T
///   stm32imagev2` produce.
public struct STM32ImageHeader: Sendable, Hashable {
    public enum Version: Sendable, Hashable { case v1, v2 }

    /// The fields whose meaning depends on the header version.
    public enum VersionFields: Sendable, Hashable {
        /// Bit 0 of `optionFlags` set means "no signature check requested".
        case v1(optionFlags: UInt32, ecdsaAlgorithm: UInt32, ecdsaPublicKey: [UInt8], binaryType: UInt8)
        /// `minorVersion` is 0 on MP13 and MP25 rev A, 2 on MP23/MP25; `extensionHeaders` is the raw
        /// chain that follows the fixed part (each entry: u32 type, u32 length including those 8 bytes).
        case v2(minorVersion: UInt8, extensionFlags: UInt32, binaryType: UInt32, extensionHeaders: [UInt8])
    }

    /// The four bytes `S`, `T`, `M`, `2`.
    public static let magic: [UInt8] = [0x53, 0x54, 0x4D, 0x32]
    public static let v1Length = 256
    public static let v2FixedLength = 128
    /// Type of the padding extension header: the bytes `S`, `T`, 0xFF, 0xFF.
    public static let paddingExtensionType: UInt32 = 0xFFFF_5453
    /// Length of the padding extension header that makes a 512-byte v2 header.
    public static let standardPaddingExtensionLength: UInt32 = 0x180
    /// v2 extension flag: an authentication (signature) extension header is present.
    public static let authenticationExtensionFlag: UInt32 = 1 << 0
    /// v2 extension flag: a padding extension header is present.
    public static let paddingExtensionFlag: UInt32 = 1 << 31
    /// v1 option flag: the image asks the ROM not to check a signature.
    public static let noSignatureOptionFlag: UInt32 = 1 << 0

    public var signature: [UInt8]
    /// Byte sum (mod 2³²) of the `imageLength` payload bytes that follow the header.
    public var checksum: UInt32
    public var imageLength: UInt32
    public var entryPoint: UInt32
    public var loadAddress: UInt32
    /// Anti-rollback version, compared by the ROM with an OTP counter.
    public var versionNumber: UInt32
    public var fields: VersionFields

    public init(
        signature: [UInt8] = Array(repeating: 0, count: 64), checksum: UInt32, imageLength: UInt32,
        entryPoint: UInt32 = 0, loadAddress: UInt32 = 0, versionNumber: UInt32 = 0, fields: VersionFields
    ) {
        precondition(signature.count == 64, "an STM32 header signature is 64 bytes")
        self.signature = signature
        self.checksum = checksum
        self.imageLength = imageLength
        self.entryPoint = entryPoint
        self.loadAddress = loadAddress
        self.versionNumber = versionNumber
        self.fields = fields
    }

    public var version: Version {
        switch fields {
        case .v1: .v1
        case .v2: .v2
        }
    }

    /// The 32-bit word at offset 72: major version in bits 16–23, minor in bits 8–15.
    public var headerVersionWord: UInt32 {
        switch fields {
        case .v1: 0x0001_0000
        case .v2(let minor, _, _, _): 0x0002_0000 | UInt32(minor) << 8
        }
    }

    /// Bytes before the payload: 256 for v1, 128 + extension headers for v2.
    public var headerLength: Int {
        switch fields {
        case .v1: Self.v1Length
        case .v2(_, _, _, let extensionHeaders): Self.v2FixedLength + extensionHeaders.count
        }
    }

    /// Whether the image asks to be authenticated. v1: option-flags bit 0 clear (the ROM's
    /// `No_sig_check` bit). v2: extension-flags bit 0 set, i.e. an authentication extension header
    /// is present (TF-A `boot_api.h`, ST's `stm32wrapper4dbg`).
    public var isSigned: Bool {
        switch fields {
        case .v1(let optionFlags, _, _, _): optionFlags & Self.noSignatureOptionFlag == 0
        case .v2(_, let extensionFlags, _, _): extensionFlags & Self.authenticationExtensionFlag != 0
        }
    }

    /// ST's binary type: 0x10 TF-A, 0x30 Cortex-M33 image, 0 U-Boot/other (v1 stores one byte).
    public var binaryType: UInt32 {
        switch fields {
        case .v1(_, _, _, let binaryType): UInt32(binaryType)
        case .v2(_, _, let binaryType, _): binaryType
        }
    }

    /// The families this header fits. v1 is only used on MP15. v2.0 is shared by MP13 and MP25
    /// rev A, so the load address decides (MP13 SYSRAM 0x2FFE0000, MP2 SYSRAM 0x0E000000) and
    /// both stay candidates when it is outside both; v2.2 is MP23/MP25 only.
    public var candidateFamilies: [ChipFamily] {
        switch fields {
        case .v1: return [.mp15]
        case .v2(let minor, _, _, _):
            if minor >= 2 { return [.mp2] }
            if (0x2FFE_0000..<0x3000_0000).contains(loadAddress) { return [.mp13] }
            if (0x0E00_0000..<0x0F00_0000).contains(loadAddress) { return [.mp2] }
            return [.mp13, .mp2]
        }
    }

    /// The byte sum the header's `checksum` must equal, mod 2³².
    public static func checksum(of payload: some Sequence<UInt8>, startingAt partial: UInt32 = 0) -> UInt32 {
        payload.reduce(partial) { $0 &+ UInt32($1) }
    }
}

// MARK: - Decoding and encoding

extension STM32ImageHeader {
    /// Decodes the header at the start of `bytes` (only the header's bytes are needed). Applies
    /// the checks U-Boot's `stm32prog` and TF-A apply: magic, version, zero reserved words, zero
    /// padding; v2 also checks that the extension headers chain to their announced length.
    public init(decoding bytes: [UInt8]) throws(STM32HeaderError) {
        guard bytes.count >= Self.v2FixedLength else {
            throw .tooShort(available: bytes.count, needed: bytes.starts(with: Self.magic) ? Self.v2FixedLength : 4)
        }
        guard bytes.starts(with: Self.magic) else { throw .badMagic(Array(bytes.prefix(4))) }
        let versionWord = bytes.littleEndianUInt32(at: 72)
        for offset in [84, 92] where bytes.littleEndianUInt32(at: offset) != 0 {
            throw .nonzeroReserved(offset: offset)
        }

        let fields: VersionFields
        switch versionWord {
        case 0x0001_0000:
            guard bytes.count >= Self.v1Length else { throw .tooShort(available: bytes.count, needed: Self.v1Length) }
            if let offset = bytes.firstNonzeroOffset(in: 172..<255) { throw .nonzeroPadding(offset: offset) }
            fields = .v1(
                optionFlags: bytes.littleEndianUInt32(at: 100), ecdsaAlgorithm: bytes.littleEndianUInt32(at: 104),
                ecdsaPublicKey: Array(bytes[108..<172]), binaryType: bytes[255])
        case 0x0002_0000, 0x0002_0100, 0x0002_0200:
            if let offset = bytes.firstNonzeroOffset(in: 112..<128) { throw .nonzeroPadding(offset: offset) }
            let extensionLength = bytes.littleEndianUInt32(at: 104)
            let needed = Self.v2FixedLength + Int(extensionLength)
            guard bytes.count >= needed else { throw .tooShort(available: bytes.count, needed: needed) }
            let extensionHeaders = Array(bytes[Self.v2FixedLength..<needed])
            try Self.validateExtensionChain(extensionHeaders)
            fields = .v2(
                minorVersion: UInt8(truncatingIfNeeded: versionWord >> 8),
                extensionFlags: bytes.littleEndianUInt32(at: 100), binaryType: bytes.littleEndianUInt32(at: 108),
                extensionHeaders: extensionHeaders)
        default:
            throw .unknownVersion(versionWord)
        }
        self.init(
            signature: Array(bytes[4..<68]), checksum: bytes.littleEndianUInt32(at: 68),
            imageLength: bytes.littleEndianUInt32(at: 76), entryPoint: bytes.littleEndianUInt32(at: 80),
            loadAddress: bytes.littleEndianUInt32(at: 88), versionNumber: bytes.littleEndianUInt32(at: 96),
            fields: fields)
    }

    /// Each extension header is a u32 type and a u32 length that counts those 8 bytes; together
    /// they must fill the announced length exactly.
    private static func validateExtensionChain(_ chain: [UInt8]) throws(STM32HeaderError) {
        var offset = 0
        while offset < chain.count {
            guard chain.count - offset >= 8 else {
                throw .malformedExtensionHeaders(
                    announcedLength: UInt32(chain.count), detail: "\(chain.count - offset) bytes left at the end")
            }
            let length = Int(chain.littleEndianUInt32(at: offset + 4))
            guard length >= 8, length <= chain.count - offset else {
                throw .malformedExtensionHeaders(
                    announcedLength: UInt32(chain.count),
                    detail: "the header at offset \(Self.v2FixedLength + offset) claims \(length) bytes")
            }
            offset += length
        }
    }

    /// The header's exact bytes (`headerLength` of them).
    public func encoded() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: headerLength)
        bytes.replaceSubrange(0..<4, with: Self.magic)
        bytes.replaceSubrange(4..<68, with: signature)
        bytes.storeLittleEndian(checksum, at: 68)
        bytes.storeLittleEndian(headerVersionWord, at: 72)
        bytes.storeLittleEndian(imageLength, at: 76)
        bytes.storeLittleEndian(entryPoint, at: 80)
        bytes.storeLittleEndian(loadAddress, at: 88)
        bytes.storeLittleEndian(versionNumber, at: 96)
        switch fields {
        case .v1(let optionFlags, let ecdsaAlgorithm, let publicKey, let binaryType):
            precondition(publicKey.count == 64, "an STM32 v1 ECDSA public key is 64 bytes")
            bytes.storeLittleEndian(optionFlags, at: 100)
            bytes.storeLittleEndian(ecdsaAlgorithm, at: 104)
            bytes.replaceSubrange(108..<172, with: publicKey)
            bytes[255] = binaryType
        case .v2(_, let extensionFlags, let binaryType, let extensionHeaders):
            bytes.storeLittleEndian(extensionFlags, at: 100)
            bytes.storeLittleEndian(UInt32(extensionHeaders.count), at: 104)
            bytes.storeLittleEndian(binaryType, at: 108)
            bytes.replaceSubrange(Self.v2FixedLength..., with: extensionHeaders)
        }
        return bytes
    }

    /// Builds an unsigned header for `payload` and returns header + payload. v1 sets option flags
    /// to 1 ("no signature") and leaves everything else zero, as ST's tools do for the phase-0x00
    /// FlashLayout; v2 carries one 0x180-byte padding extension (a 512-byte header).
    public static func wrap(
        payload: [UInt8], version: Version = .v1, entryPoint: UInt32 = 0, loadAddress: UInt32 = 0,
        binaryType: UInt32 = 0
    ) -> [UInt8] {
        let fields: VersionFields
        switch version {
        case .v1:
            precondition(binaryType <= 0xFF, "an STM32 v1 binary type is one byte")
            fields = .v1(
                optionFlags: noSignatureOptionFlag, ecdsaAlgorithm: 0,
                ecdsaPublicKey: Array(repeating: 0, count: 64), binaryType: UInt8(binaryType))
        case .v2:
            var padding = [UInt8](repeating: 0, count: Int(standardPaddingExtensionLength))
            padding.storeLittleEndian(paddingExtensionType, at: 0)
            padding.storeLittleEndian(standardPaddingExtensionLength, at: 4)
            fields = .v2(
                minorVersion: 0, extensionFlags: paddingExtensionFlag, binaryType: binaryType,
                extensionHeaders: padding)
        }
        let header = STM32ImageHeader(
            checksum: checksum(of: payload), imageLength: UInt32(payload.count), entryPoint: entryPoint,
            loadAddress: loadAddress, fields: fields)
        return header.encoded() + payload
    }
}
