/// The answer to GetPhase: UPLOAD block 0 of the `virtual` (0xF1) alternate (reference §4.2).
/// Little-endian; a 10th byte only when phase is 0x00, an ASCII message only when phase is 0xFF.
public struct GetPhaseReply: Sendable, Hashable, CustomStringConvertible {
    /// The phase the device wants next (0xFE END, 0xFF error/reset).
    public var phase: UInt8
    /// Load address, or 0xFFFFFFFF when undefined.
    public var address: UInt32
    /// Resume offset inside the phase.
    public var offset: UInt32
    /// Phase 0x00 with the 10th byte = 1: TF-A asks for DFU_DETACH, U-Boot has a parsed layout.
    public var needsDetach: Bool
    /// Whether the 10th byte is on the wire (U-Boot always sends it in phase 0x00, TF-A only with 1).
    public var hasDetachByte: Bool
    /// Phase 0xFF: the firmware's error text.
    public var message: String?

    public static let undefinedAddress: UInt32 = 0xFFFF_FFFF

    public init(
        phase: UInt8, address: UInt32, offset: UInt32 = 0, needsDetach: Bool = false, hasDetachByte: Bool? = nil,
        message: String? = nil
    ) {
        self.phase = phase
        self.address = address
        self.offset = offset
        self.needsDetach = needsDetach
        self.hasDetachByte = hasDetachByte ?? needsDetach
        self.message = message
    }

    /// Decodes a reply.
    /// - Throws: `DFUError` (`malformed`) when shorter than 9 bytes.
    public init(bytes: [UInt8]) throws {
        guard bytes.count >= 9 else {
            throw DFUError(
                .malformed("GetPhase answered \(bytes.count) bytes, at least 9 expected"), operation: "GetPhase")
        }
        func u32(_ i: Int) -> UInt32 {
            UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16 | UInt32(bytes[i + 3]) << 24
        }
        phase = bytes[0]
        address = u32(1)
        offset = u32(5)
        needsDetach = phase == 0x00 && bytes.count >= 10 && bytes[9] == 1
        hasDetachByte = phase == 0x00 && bytes.count >= 10
        if phase == 0xFF {
            var text = bytes[9...]
            while text.last == 0 { text = text.dropLast() }
            message = String(decoding: text, as: UTF8.self)
        } else {
            message = nil
        }
    }

    public var bytes: [UInt8] {
        func le(_ v: UInt32) -> [UInt8] {
            [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF), UInt8((v >> 16) & 0xFF), UInt8(v >> 24)]
        }
        var out = [phase] + le(address) + le(offset)
        if phase == 0x00, hasDetachByte || needsDetach { out.append(needsDetach ? 1 : 0) }
        if phase == 0xFF, let message { out += Array(message.utf8) }
        return out
    }

    public var description: String {
        var text =
            "phase 0x\(hex2(phase, uppercase: true)) address 0x\(String(address, radix: 16, uppercase: true)) offset \(offset)"
        if needsDetach { text += " detach requested" }
        if let message { text += " message \"\(message)\"" }
        return text
    }
}
