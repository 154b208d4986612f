/// One slot of the partition entry array (128 bytes on disk). A slot whose `typeGUID` is zero
/// is unused.
public struct GPTPartitionEntry: Sendable, Hashable {
    /// Stored as UTF-16LE in 72 bytes, so at most 36 UTF-16 code units.
    public var name: String
    public var typeGUID: GUID
    public var uniqueGUID: GUID
    public var firstLBA: UInt64
    /// Inclusive.
    public var lastLBA: UInt64
    public var attributes: UInt64

    public static let size = 128
    public static let maximumNameLength = 36
    /// Attribute bit 2: "legacy BIOS bootable", which U-Boot's distro boot uses to find bootfs.
    public static let legacyBIOSBootableBit: UInt64 = 1 << 2

    public init(
        name: String, typeGUID: GUID, uniqueGUID: GUID, firstLBA: UInt64, lastLBA: UInt64, attributes: UInt64 = 0
    ) {
        self.name = name
        self.typeGUID = typeGUID
        self.uniqueGUID = uniqueGUID
        self.firstLBA = firstLBA
        self.lastLBA = lastLBA
        self.attributes = attributes
    }

    /// An unused slot, for gaps in the entry array.
    public static let unused = GPTPartitionEntry(name: "", typeGUID: .zero, uniqueGUID: .zero, firstLBA: 0, lastLBA: 0)

    public var isUsed: Bool { typeGUID != .zero }

    public var legacyBIOSBootable: Bool {
        get { attributes & Self.legacyBIOSBootableBit != 0 }
        set {
            attributes = newValue ? attributes | Self.legacyBIOSBootableBit : attributes & ~Self.legacyBIOSBootableBit
        }
    }

    public var sectorCount: UInt64 { lastLBA - firstLBA + 1 }

    /// The 128 on-disk bytes. The name must already be checked against `maximumNameLength`.
    func encoded() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.size)
        guard isUsed else { return bytes }
        bytes.replaceSubrange(0..<16, with: typeGUID.diskBytes)
        bytes.replaceSubrange(16..<32, with: uniqueGUID.diskBytes)
        bytes.store(littleEndian: firstLBA, at: 32)
        bytes.store(littleEndian: lastLBA, at: 40)
        bytes.store(littleEndian: attributes, at: 48)
        for (index, unit) in name.utf16.enumerated() { bytes.store(littleEndian: unit, at: 56 + 2 * index) }
        return bytes
    }

    init(decoding bytes: [UInt8]) {
        let units = (0..<Self.maximumNameLength).map { bytes.littleEndian(UInt16.self, at: 56 + 2 * $0) }
        self.init(
            name: String(decoding: units.prefix { $0 != 0 }, as: UTF16.self),
            typeGUID: GUID(diskBytes: Array(bytes[0..<16])), uniqueGUID: GUID(diskBytes: Array(bytes[16..<32])),
            firstLBA: bytes.littleEndian(UInt64.self, at: 32), lastLBA: bytes.littleEndian(UInt64.self, at: 40),
            attributes: bytes.littleEndian(UInt64.self, at: 48))
    }
}
