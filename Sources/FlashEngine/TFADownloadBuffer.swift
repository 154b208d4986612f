import BootImages

/// Where TF-A BL2's USB programmer writes a phase, so that a rerun can tell from GetPhase how much
/// of that phase an interrupted run already sent.
///
/// TF-A answers GetPhase with its *next write address* (`dfu_callback_upload()`), and that address
/// only moves forward: each DNLOAD is written at it and advances it, block numbers are ignored, and
/// DFU_ABORT, SET_INTERFACE and a USB reset leave it alone (`dfu_callback_download()`,
/// `usb_dfu_abort()`, `plat/st/common/stm32cubeprogrammer_usb.c` and `usb_dfu.c`). Only a board
/// reset starts it over. The buffer starts are TF-A's build defaults (`DWL_BUFFER_BASE ?=` in
/// `plat/st/stm32mp1/platform.mk` and `plat/st/stm32mp2/platform.mk`; the MP2 DDR FIP goes to
/// `DWL_DDR_BUFFER_BASE`, SYSRAM, `plat/st/stm32mp2/include/platform_def.h`).
struct TFADownloadBuffer: Sendable, Hashable {
    var start: UInt32
    var size: UInt32

    init(start: UInt32, size: UInt32) {
        self.start = start
        self.size = size
    }

    /// TF-A's default buffer for `phase` on `family` (nil: not known).
    static func standard(phase: UInt8, family: ChipFamily?) -> TFADownloadBuffer? {
        switch (family, phase) {
        case (.mp15?, 0x03), (.mp13?, 0x03): TFADownloadBuffer(start: 0xC700_0000, size: fipSize)
        case (.mp2?, 0x03): TFADownloadBuffer(start: 0x8700_0000, size: fipSize)
        case (.mp2?, 0x02): TFADownloadBuffer(start: 0x0E00_0000, size: 0xA000)
        default: nil
        }
    }

    /// The FIP buffer's size, `DWL_BUFFER_SIZE` (16 MiB on every family).
    static let fipSize: UInt32 = 0x0100_0000

    /// The buffer of `phase`: `customBase` (`--tfa-buffer-base`) moves the FIP's (phase 0x03) only.
    /// The MP2 DDR firmware's buffer is a fixed `#define` (`DWL_DDR_BUFFER_BASE`, SYSRAM), not the
    /// `DWL_BUFFER_BASE` make variable, so it stays where it is.
    static func of(phase: UInt8, family: ChipFamily?, customBase: UInt32?) -> TFADownloadBuffer? {
        if phase == 0x03, let customBase { return TFADownloadBuffer(start: customBase, size: fipSize) }
        return standard(phase: phase, family: family)
    }

    /// An address TF-A could start a buffer at: a MiB boundary (TF-A's bases are). The address of a
    /// buffer that already received part of a phase is past its start by a multiple of the block
    /// size, which is on a MiB boundary only when the cut fell exactly on one.
    static func looksLikeStart(_ address: UInt32) -> Bool { address & 0xF_FFFF == 0 }

    /// What a GetPhase address says about the phase.
    enum Progress: Sendable, Hashable {
        /// At the buffer's start: nothing received.
        case fresh
        /// `bytes` already received (written from the buffer's start).
        case received(Int64)
        /// Not inside the buffer (another TF-A build, or no address): nothing can be told.
        case unknown
    }

    func progress(address: UInt32) -> Progress {
        guard address >= start, address - start <= size else { return .unknown }
        return address == start ? .fresh : .received(Int64(address - start))
    }
}
