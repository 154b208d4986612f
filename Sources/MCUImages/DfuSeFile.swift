/// DfuSe files (UM0391): an 11-byte prefix (`DfuSe`, version 1, image size, target count), targets
/// (`Target`, alternate setting, name, size, element count) of elements (address, size, data), and
/// the DFU suffix (bcdDevice, PID, VID, bcdDFU 0x011A, `UFD`, length 16, CRC-32 of everything before
/// the CRC, without the final inversion).
package enum DfuSeFile {
    static func parse(_ bytes: [UInt8], path: String) throws(MCUImageError) -> MCUImage {
        func fail(_ field: String, _ message: String) -> MCUImageError {
            MCUImageError(path: path, field: field, message: message)
        }
        guard bytes.count >= 11 + 16 else {
            throw fail("prefix", "the file is too short for a DfuSe prefix and suffix")
        }
        let suffix = Array(bytes.suffix(16))
        guard suffix[8] == UInt8(ascii: "U"), suffix[9] == UInt8(ascii: "F"), suffix[10] == UInt8(ascii: "D"),
            suffix[11] == 16
        else { throw fail("suffix", "no DFU suffix (UFD signature, length 16) at the end") }
        let storedCRC = le32(suffix, 12)
        let computed = crc(bytes[..<(bytes.count - 4)])
        guard storedCRC == computed else {
            throw fail(
                "suffix CRC",
                "the file says 0x\(hex(storedCRC)), its content gives 0x\(hex(computed)): the file is damaged")
        }
        let dfuVersion = UInt16(suffix[6]) | UInt16(suffix[7]) << 8
        guard dfuVersion == 0x011A else {
            throw fail("suffix bcdDFU", "0x\(String(dfuVersion, radix: 16)) is not DfuSe (0x011A)")
        }
        guard bytes[5] == 0x01 else { throw fail("prefix bVersion", "version \(bytes[5]) (only 1 is defined)") }
        // UM0391 calls it the total file length; dfuse-pack writes it with the suffix, some tools without.
        let declared = Int(le32(bytes, 6))
        guard declared == bytes.count || declared == bytes.count - 16 else {
            throw fail("prefix DFUImageSize", "says \(declared) bytes, the file has \(bytes.count)")
        }
        let imageSize = bytes.count - 16
        let targets = Int(bytes[10])
        var offset = 11
        var segments: [MCUSegment] = []
        for target in 0..<targets {
            guard offset + 274 <= imageSize, Array(bytes[offset..<offset + 6]) == Array("Target".utf8) else {
                throw fail("target \(target)", "no 'Target' header at offset \(offset)")
            }
            let alternate = bytes[offset + 6]
            let targetSize = Int(le32(bytes, offset + 266))
            let elements = Int(le32(bytes, offset + 270))
            offset += 274
            let targetEnd = offset + targetSize
            guard targetEnd <= imageSize else {
                throw fail("target \(target) dwTargetSize", "\(targetSize) bytes run past the end of the image")
            }
            for element in 0..<elements {
                guard offset + 8 <= targetEnd else {
                    throw fail("target \(target) element \(element)", "the element header runs past the target")
                }
                let address = UInt64(le32(bytes, offset))
                let size = Int(le32(bytes, offset + 4))
                offset += 8
                guard offset + size <= targetEnd else {
                    throw fail("target \(target) element \(element) dwElementSize", "\(size) bytes run past the target")
                }
                segments.append(
                    MCUSegment(address: address, bytes: Array(bytes[offset..<offset + size]), alternate: alternate))
                offset += size
            }
            offset = targetEnd
        }
        return MCUImage(format: .dfuse, segments: segments)
    }

    /// Builds a DfuSe file (one target per alternate, one element per segment), as `mcu read` can save.
    package static func build(_ segments: [MCUSegment], vendorID: UInt16 = 0x0483, productID: UInt16 = 0xDF11)
        -> [UInt8]
    {
        var body: [UInt8] = []
        let byAlternate = Dictionary(grouping: segments) { $0.alternate ?? 0 }
        for alternate in byAlternate.keys.sorted() {
            let elements = byAlternate[alternate]!
            var payload: [UInt8] = []
            for element in elements {
                payload += u32(UInt32(element.address)) + u32(UInt32(element.bytes.count)) + element.bytes
            }
            var name = Array("ST...".utf8)
            name += [UInt8](repeating: 0, count: 255 - name.count)
            body +=
                Array("Target".utf8) + [alternate] + u32(1) + name + u32(UInt32(payload.count))
                + u32(UInt32(elements.count)) + payload
        }
        var file = Array("DfuSe".utf8) + [0x01] + u32(UInt32(11 + body.count + 16)) + [UInt8(byAlternate.count)] + body
        file += [
            0xFF, 0xFF, UInt8(productID & 0xFF), UInt8(productID >> 8), UInt8(vendorID & 0xFF), UInt8(vendorID >> 8),
        ]
        file += [0x1A, 0x01, UInt8(ascii: "U"), UInt8(ascii: "F"), UInt8(ascii: "D"), 16]
        file += u32(crc(file[...]))
        return file
    }

    /// The DFU suffix CRC: CRC-32 (reflected, 0xEDB88320), initial 0xFFFFFFFF, no final XOR.
    static func crc(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return crc
    }

    private static func le32(_ bytes: [UInt8], _ at: Int) -> UInt32 {
        UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24
    }

    private static func u32(_ value: UInt32) -> [UInt8] {
        [UInt8(value & 0xFF), UInt8((value >> 8) & 0xFF), UInt8((value >> 16) & 0xFF), UInt8(value >> 24)]
    }

    private static func hex(_ value: UInt32) -> String { String(value, radix: 16, uppercase: true) }
}
