/// A stable name for why a flashing run failed. The raw values are part of the tool's interface:
/// they appear in `--json` output, and `docs/troubleshooting.md` has a `## <code>` section for
/// each. Never rename one; add new ones.
public enum DiagnosisCode: String, Codable, Sendable, Hashable, CaseIterable {
    /// §E 1: no 0483:df11 device at all.
    case noBoard = "no-board"
    /// Several boards and nothing to choose one.
    case severalBoards = "several-boards"
    /// §E 6: the device node cannot be opened.
    case usbPermission = "usb-permission"
    /// Another program or driver holds the device (often a VM that grabbed it).
    case deviceBusy = "device-busy"
    /// §E 14: string descriptors could not be read.
    case stringsUnreadable = "strings-unreadable"
    /// §E 2: the board sits on a full-speed link.
    case fullSpeedLink = "full-speed-link"
    /// §E 7: the ROM took the FSBL but TF-A never answered.
    case fsblNotStarted = "fsbl-not-started"
    /// The ROM refused the FSBL at its manifestation (dfuERROR, errVERIFY).
    case fsblRejected = "fsbl-rejected"
    /// The FSBL's STM32 header is for another chip than the board's Device ID.
    case fsblWrongChip = "fsbl-wrong-chip"
    /// §E 8: TF-A refused the FIP.
    case fipHeaderRejected = "fip-header-rejected"
    /// §E 4: TF-A detached and U-Boot never tried to enumerate.
    case ubootNoUSB = "uboot-no-usb"
    /// §E 3: the kernel saw enumeration attempts fail.
    case enumerationErrors = "enumeration-errors"
    /// §E 5: the board re-enumerated on the host but did not reach the VM, WSL or container.
    case vmPassthroughLost = "vm-passthrough-lost"
    /// A DFU device came back, but on another port.
    case otherPort = "other-port"
    /// §E 9: U-Boot rejected the FlashLayout.
    case layoutRejected = "layout-rejected"
    /// U-Boot took the FlashLayout and never came back for the partitions.
    case deviceInitTimeout = "device-init-timeout"
    /// §E 10: U-Boot could not prepare a target device or partition.
    case deviceInitFailed = "device-init-failed"
    /// §E 13: U-Boot saw a block number out of order.
    case wrongSequence = "wrong-sequence"
    /// U-Boot refused an OTP or PMIC NVM update.
    case otpUpdateFailed = "otp-update-failed"
    /// Any other error text from the board's GetPhase.
    case boardError = "board-error"
    /// §E 11: the ROM came back after a DETACH to U-Boot.
    case romCameBack = "rom-came-back"
    /// The board came back as a firmware the protocol does not expect (plain DFU, fastboot…).
    case unexpectedStage = "unexpected-stage"
    /// A port over-current report or a brown-out.
    case powerSupply = "power-supply"
    /// The device vanished in the middle of a phase.
    case disconnected = "disconnected"
    /// §E 12: a control transfer timed out.
    case transferTimeout = "transfer-timeout"
    /// A transfer failed with a STALL or I/O error and no message from the board.
    case transferError = "transfer-error"
    /// The board asked again for the phase it had just received.
    case phaseRepeated = "phase-repeated"
    /// The board asks for a phase the layout has no file for.
    case phaseWithoutFile = "phase-without-file"
    /// The board asks for a phase it offers no alternate setting for.
    case missingAlternate = "missing-alternate"
    /// The board said END with selected partitions never requested.
    case incomplete = "incomplete"
    /// The board broke the protocol (bad GetPhase reply, DFU state error).
    case protocolError = "protocol-error"
    /// The user stopped the run.
    case cancelled = "cancelled"
    /// A partition read back after writing differs from the Binary (`--verify`).
    case verifyMismatch = "verify-mismatch"
    /// A Binary changed on disk while it was being flashed.
    case fileChanged = "file-changed"
    /// A host file or folder could not be used: not a board fault.
    case hostFile = "host-file"
    /// The board is in U-Boot enumeration 2 of another FlashLayout.
    case otherSession = "other-session"
    /// The DFU device is not an STM32MP board (an STM32 MCU system bootloader …).
    case unsupportedDevice = "unsupported-device"
    /// Another job of this process is flashing the board on that port.
    case boardBusy = "board-busy"
    /// MCU: the DFU device is an application's DFU class (CubeMX template), not ST's bootloader.
    case mcuAppDFU = "mcu-app-dfu"
    /// MCU: RDP level 1 refuses reads, writes and erases (errVENDOR).
    case mcuReadProtected = "mcu-read-protected"
    /// MCU: write-protected sectors kept their old content without an error.
    case mcuWriteProtected = "mcu-write-protected"
    /// MCU: the bootloader mis-measured the HSE and USB runs on a wrong clock.
    case mcuUSBClock = "mcu-usb-clock"
    /// MCU: the readback differs from what was written.
    case mcuVerifyMismatch = "mcu-verify-mismatch"
    /// Fast path: U-Boot parsed the hand-off script as a FlashLayout (no legacy-image support).
    case scriptRejected = "script-rejected"
    /// Fast path: nothing came back after the script's DETACH.
    case noFastboot = "no-fastboot"
    /// Fast path: U-Boot's fastboot writes another storage than the layout's.
    case storageMismatch = "storage-mismatch"
    /// The board's serial differs between stages.
    case serialChanged = "serial-changed"
    /// Fast path: the board answered FAIL to a fastboot command.
    case fastbootFailed = "fastboot-failed"
    /// Fast path: the board's partitions do not match the plan.
    case fastbootPartitions = "fastboot-partitions"
    /// `--transport fastboot` with a layout the fast path cannot flash.
    case fastbootUnsuitable = "fastboot-unsuitable"
    /// A mapped range of a Binary does not match its block map's checksum.
    case bmapChecksum = "bmap-checksum"
    /// A compressed Binary is corrupt, truncated or not of its format.
    case badCompressedImage = "bad-compressed-image"
    /// A block map is malformed or was made for another image.
    case badBlockMap = "bad-block-map"
    /// A Binary could not be read on the host.
    case imageUnreadable = "image-unreadable"

    /// Every code, in the order the troubleshooting guide lists them.
    public static var allCodes: [DiagnosisCode] { allCases }

    /// The one-line cause, when nothing more specific is known.
    public var summary: String {
        switch self {
        case .noBoard: "No STM32MP board in USB DFU mode is visible to this system."
        case .severalBoards: "Several STM32MP boards are connected and nothing says which one to flash."
        case .usbPermission: "The board is visible but this user may not open its USB device node."
        case .deviceBusy: "Another program, driver or virtual machine holds the board's USB device."
        case .stringsUnreadable: "The board's USB string descriptors could not be read, so its stage is unknown."
        case .fullSpeedLink: "The board runs on a USB full-speed (12 Mbit/s) link; its firmware expects high speed."
        case .fsblNotStarted: "The ROM received the FSBL (TF-A) but TF-A never answered on USB."
        case .fsblRejected:
            "The ROM refused the FSBL: bad STM32 header, checksum or signature, or an image for another chip."
        case .fsblWrongChip: "The FSBL is built for another STM32MP chip than the board's; nothing was sent."
        case .fipHeaderRejected: "TF-A rejected the FIP: the file sent as phase 0x03 is not a FIP it accepts."
        case .ubootNoUSB: "TF-A handed over to U-Boot, but U-Boot never started its USB download gadget."
        case .enumerationErrors: "The board tried to enumerate but the USB link failed (-71/-110 in the kernel log)."
        case .vmPassthroughLost:
            "The board re-enumerated on the host but was not passed through to this VM, WSL or container again."
        case .otherPort: "A DFU device came back, but on a different USB port than the board."
        case .layoutRejected: "U-Boot rejected the FlashLayout."
        case .deviceInitTimeout: "U-Boot took the FlashLayout but did not come back for the partitions in time."
        case .deviceInitFailed: "U-Boot could not prepare a storage device or partition named in the FlashLayout."
        case .wrongSequence: "U-Boot received a DFU block out of sequence."
        case .otpUpdateFailed: "U-Boot refused the OTP or PMIC NVM update."
        case .boardError: "The board reported an error."
        case .romCameBack: "After the DETACH to U-Boot the ROM code came back: the board was reset."
        case .unexpectedStage: "The board came back as a firmware that does not belong at this point of the flow."
        case .powerSupply: "The board or its USB port lost power (over-current or brown-out)."
        case .disconnected: "The board disconnected in the middle of a transfer."
        case .transferTimeout: "The board stopped answering USB control transfers."
        case .transferError: "A USB transfer failed (STALL or I/O error) without an error message from the board."
        case .phaseRepeated: "The board asked again for the phase it had just received: it did not accept the file."
        case .phaseWithoutFile: "The board asks for a phase the FlashLayout has no file for."
        case .missingAlternate: "The board asks for a phase it offers no DFU alternate setting for."
        case .incomplete: "The board ended the session without asking for every selected partition."
        case .protocolError: "The board's answers broke the STM32MP DFU protocol."
        case .cancelled: "The run was cancelled."
        case .verifyMismatch:
            "What the board stored differs from what was sent: the readback does not match the Binary."
        case .fileChanged: "A Binary changed on disk while it was being flashed, so the board may hold a torn image."
        case .hostFile: "A file or folder on this computer could not be used."
        case .otherSession:
            "The board holds an earlier run's session this run cannot continue: U-Boot stm32prog with another FlashLayout's partitions, or TF-A part-way through another file."
        case .unsupportedDevice: "The DFU device found is not an STM32MP board, so `flash` does not program it."
        case .boardBusy: "Another flashing job of this process holds the board on that port."
        case .mcuAppDFU:
            "This DFU device is your application's DFU class, not ST's system bootloader: it accepts writes without storing them."
        case .mcuReadProtected:
            "The MCU is read-protected (RDP level 1): the bootloader refuses reads, writes and erases."
        case .mcuWriteProtected:
            "Part of the flash is write-protected: those sectors kept their old content, without an error."
        case .mcuUSBClock:
            "The MCU bootloader runs USB on a mis-measured HSE clock: transfers and strings fail now and then."
        case .mcuVerifyMismatch: "The MCU's flash does not read back what was written."
        case .scriptRejected:
            "U-Boot took the fastboot hand-off script for a FlashLayout: it cannot run scripts sent over USB."
        case .noFastboot: "After the hand-off script's DETACH neither U-Boot's fastboot nor stm32prog came back."
        case .storageMismatch: "U-Boot's fastboot writes a different storage device than the FlashLayout programs."
        case .serialChanged: "The board announced a different serial number than in the previous stage."
        case .fastbootFailed: "U-Boot's fastboot refused a command (FAIL)."
        case .fastbootPartitions: "The partitions U-Boot's fastboot sees do not match the FlashLayout's plan."
        case .fastbootUnsuitable: "This FlashLayout cannot be flashed over fastboot."
        case .bmapChecksum: "A range of a Binary does not match its block map's checksum; it was not sent."
        case .badCompressedImage: "A compressed Binary is corrupt or truncated; its partition was not finished."
        case .badBlockMap: "A block map (.bmap) is malformed or does not describe its image."
        case .imageUnreadable: "A Binary could not be read on the host."
        }
    }

    /// The section of docs/troubleshooting.md (GitHub anchors are the heading text itself).
    public var documentationAnchor: String { "docs/troubleshooting.md#" + rawValue }
}
