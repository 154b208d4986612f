import USBModel

/// One erase unit (page or sector) of a DfuSe memory, as an alternate's string describes it.
package struct DfuSeSector: Sendable, Hashable {
    package var address: UInt32
    package var size: UInt32
    /// The access letter's bits (`a` = 1 … `g` = 7): 1 readable, 2 erasable, 4 writable.
    package var access: UInt8

    package init(address: UInt32, size: UInt32, access: UInt8) {
        self.address = address
        self.size = size
        self.access = access
    }

    package var readable: Bool { access & 1 != 0 }
    package var erasable: Bool { access & 2 != 0 }
    package var writable: Bool { access & 4 != 0 }
    /// One past the last byte (64-bit so the top of the address space does not overflow).
    package var end: UInt64 { UInt64(address) + UInt64(size) }

    package func contains(_ address: UInt64) -> Bool { address >= UInt64(self.address) && address < end }
}

/// The memory behind one DfuSe alternate, parsed from its iInterface string, e.g.
/// `@Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg` (AN3156 §4.1, UM0424): a name, then
/// one or more `/ADDRESS/COUNT*SIZE[UNIT]ACCESS,…` regions. The unit is ` ` (bytes), `K` or `M`;
/// the access letter is `a`–`g` (bit 0 readable, 1 erasable, 2 writable). Spaces around the name and
/// before the access letter are tolerated, as every ST bootloader writes them differently.
package struct DfuSeMemoryMap: Sendable, Hashable {
    package var name: String
    package var sectors: [DfuSeSector]

    package init(name: String, sectors: [DfuSeSector]) {
        self.name = name
        self.sectors = sectors
    }

    /// Nil when the string does not follow the grammar (an STM32MP alternate, a plain DFU name).
    package init?(_ string: String) {
        guard string.first == "@" else { return nil }
        let fields = string.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        guard fields.count >= 3, fields.count % 2 == 1 else { return nil }
        let name = fields[0].trimmingWhitespace
        guard !name.isEmpty else { return nil }
        var sectors: [DfuSeSector] = []
        var index = 1
        while index + 1 < fields.count {
            let addressField = fields[index].trimmingWhitespace
            guard addressField.count > 2, addressField.lowercased().hasPrefix("0x"),
                var address = UInt64(addressField.dropFirst(2), radix: 16), address <= UInt64(UInt32.max)
            else { return nil }
            for group in fields[index + 1].split(separator: ",") {
                guard let (count, size, access) = Self.parseGroup(group), count > 0 else { return nil }
                for _ in 0..<count {
                    guard address + UInt64(size) <= UInt64(UInt32.max) + 1 else { return nil }
                    sectors.append(DfuSeSector(address: UInt32(address), size: size, access: access))
                    address += UInt64(size)
                }
            }
            index += 2
        }
        guard !sectors.isEmpty else { return nil }
        self.name = name
        self.sectors = sectors
    }

    /// `04*016Kg` → (4, 16384, 7); `01*512 e` → (1, 512, 5).
    private static func parseGroup(_ group: Substring) -> (Int, UInt32, UInt8)? {
        let text = group.trimmingWhitespace
        guard let star = text.firstIndex(of: "*"), let count = Int(text[..<star]), count <= 65_536 else { return nil }
        let rest = text[text.index(after: star)...]
        let digits = rest.prefix { $0.isASCII && $0.isNumber }
        guard let value = UInt32(digits) else { return nil }
        var tail = rest.dropFirst(digits.count)
        var scale: UInt32 = 1
        if let unit = tail.first, unit == "K" || unit == "M" {
            scale = unit == "K" ? 1 << 10 : 1 << 20
            tail = tail.dropFirst()
        }
        tail = tail.drop { $0 == " " }
        guard tail.count == 1, let letter = tail.first?.asciiValue, (0x61...0x67).contains(letter) else { return nil }
        let (size, overflow) = value.multipliedReportingOverflow(by: scale)
        guard !overflow, size > 0 else { return nil }
        return (count, size, letter & 7)
    }

    /// First address.
    package var start: UInt32 { sectors.first?.address ?? 0 }
    /// One past the last byte of the last sector.
    package var end: UInt64 { sectors.last?.end ?? 0 }
    package var totalSize: UInt64 { sectors.reduce(0) { $0 + UInt64($1.size) } }

    /// The sector holding `address`, if any.
    package func sector(containing address: UInt64) -> DfuSeSector? {
        sectors.first { $0.contains(address) }
    }

    /// Sectors that overlap `[address, address + length)`, in address order.
    package func sectors(overlapping address: UInt64, length: UInt64) -> [DfuSeSector] {
        let end = address + length
        return sectors.filter { UInt64($0.address) < end && $0.end > address }
    }

    /// The first address of `[address, address + length)` that no sector covers, or nil when all do.
    package func firstUncovered(_ address: UInt64, length: UInt64) -> UInt64? {
        var cursor = address
        let end = address + length
        while cursor < end {
            guard let sector = sector(containing: cursor) else { return cursor }
            cursor = sector.end
        }
        return nil
    }

    /// The map in the grammar it was read from (groups of equal sectors merged), for messages and
    /// for the virtual MCUs' strings.
    package func formatted(namePadding: String = "  ") -> String {
        var text = "@\(name)\(namePadding)"
        var index = 0
        var groups: [String] = []
        var regionStart = true
        while index < sectors.count {
            let first = sectors[index]
            var count = 1
            while index + count < sectors.count, sectors[index + count].size == first.size,
                sectors[index + count].access == first.access,
                sectors[index + count].address == sectors[index + count - 1].address &+ first.size
            {
                count += 1
            }
            if regionStart {
                if !groups.isEmpty { text += groups.joined(separator: ",") }
                groups = []
                text += "/0x" + hex8(first.address) + "/"
            }
            let sizeText =
                first.size % 1024 == 0 ? pad(first.size / 1024, 3) + "K" : pad(first.size, 3) + " "
            groups.append(pad(UInt32(count), 2) + "*" + sizeText + String(UnicodeScalar(0x60 + first.access)))
            index += count
            regionStart =
                index < sectors.count && sectors[index].address != sectors[index - 1].address &+ sectors[index - 1].size
        }
        return text + groups.joined(separator: ",")
    }

    private func pad(_ value: UInt32, _ width: Int) -> String {
        let s = String(value)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }
}

/// Eight upper-case hex digits, as ST writes addresses.
package func hex8(_ value: UInt32) -> String {
    let s = String(value, radix: 16, uppercase: true)
    return String(repeating: "0", count: max(0, 8 - s.count)) + s
}

/// `0x08000000` for messages.
package func address(_ value: UInt64) -> String {
    value > UInt64(UInt32.max) ? "0x" + String(value, radix: 16, uppercase: true) : "0x" + hex8(UInt32(value))
}
