/// An error U-Boot reports through GetPhase (`stm32prog_err()` text).
struct UBootFailure: Error {
    var message: String
}

/// A layout U-Boot accepted; `initialize` is the device init run at the DETACH (§C.4): plans,
/// erases, GPT writes. It returns the partitions of enumeration 2 or the first error.
struct UBootLayoutSession {
    var initialize: (VirtualBoard) -> Result<UBootProgram, UBootFailure>
}

/// Bridges U-Boot's layout handling (the FlashLayout target) to the virtual U-Boot.
enum UBootLayoutInterpreter {
    /// Parses a received layout as U-Boot does (optional STM32 header, lines, partition list).
    static func parse(_ bytes: [UInt8], fault: FaultScenario = .none) -> Result<UBootLayoutSession, UBootFailure> {
        if fault == .layoutRejected { return .failure(olderUBootRejection(bytes)) }
        return .failure(UBootFailure(message: "Layout: invalid FlashLayout"))
    }

    /// layout-rejected: an older U-Boot that does not know the newer types (FIP v2021.10,
    /// FWU_MDATA/ENV/ESP v2022.10) stops at the first line using one (§C.10.1 version notes).
    static func olderUBootRejection(_ bytes: [UInt8]) -> UBootFailure {
        let text = hasSTM32Magic(bytes) && bytes.count >= 256 ? Array(bytes.dropFirst(256)) : bytes
        let lines = text.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        for (index, line) in lines.enumerated() {
            let fields = line.split(separator: UInt8(ascii: "\t")).map { String(decoding: $0, as: UTF8.self) }
            guard fields.count >= 6, !(fields.first?.hasPrefix("#") ?? true) else { continue }
            let type = fields[3].filter { $0 != "\r" }
            if ["FIP", "FWU_MDATA", "ENV", "ESP"].contains(type) {
                return UBootFailure(message: "Layout line \(index + 1): type parsing error : '\(type)'")
            }
        }
        return UBootFailure(message: "Layout: invalid FlashLayout")
    }
}
