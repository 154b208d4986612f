/// Sorts the error text a board returns after GetPhase `FF` (TF-A and U-Boot `stm32prog`,
/// protocol reference §B.2 and §C.8) into diagnosis codes. U-Boot keeps only the first error,
/// so one message explains the whole failure.
public enum BoardMessages {
    /// Substrings of U-Boot's device and partition errors (§C.8 "Devices/partitions").
    static let deviceMarkers = [
        "mmc device", "MTD device", "unknown device type", "invalid target", "multiple binary",
        "hw partition not expected", "same address", "invalid address", "not aligned", "Couldn't find part",
        "Bad address for partition", "Bad size for partition", "GPT partitionning fail", "GPT partitioning fail",
        "MMC erase failed", "MTD erase commands failed", "erase invalid", "copy of fsbl failed", "dfu init failed",
    ]

    /// Substrings of U-Boot's OTP and PMIC errors.
    static let otpMarkers = [
        "OTP update not supported", "OTP read issue", "OTP write issue", "start OTP without data", "Provisioning",
        "PMIC update not supported",
    ]

    /// The code for a board message. Checked in this order:
    /// `Layout line`/`Layout:` → layout-rejected; `FIP Header check failed` →
    /// fip-header-rejected; `Wrong sequence number` → wrong-sequence; a device/partition message
    /// → device-init-failed; an OTP/PMIC message → otp-update-failed; anything else → board-error.
    public static func classify(_ message: String) -> DiagnosisCode {
        let text = message.trimmingCharacters
        if text.hasPrefix("Layout line") || text.hasPrefix("Layout:") { return .layoutRejected }
        if text.contains("FIP Header check failed") { return .fipHeaderRejected }
        if text.contains("Wrong sequence number") { return .wrongSequence }
        if deviceMarkers.contains(where: { text.contains($0) }) || text.hasPrefix("commands '") {
            return .deviceInitFailed
        }
        if otpMarkers.contains(where: { text.contains($0) }) { return .otpUpdateFailed }
        return .boardError
    }

    /// Advice for one device/partition message (§C.8), most specific first.
    static func deviceAdvice(_ message: String) -> [String] {
        var steps: [String] = []
        if message.contains("mmc device") || message.contains("MTD device") || message.contains("unknown device type") {
            steps.append(
                "The Device column names a storage device this U-Boot does not have or did not probe (mmc0 is usually the SD card, mmc1/mmc2 the eMMC; nor0/spi-nand0/nand0 need their driver). Fix the Device column or enable the device in the U-Boot device tree."
            )
        }
        if message.contains("not aligned") || message.contains("invalid address") || message.contains("same address") {
            steps.append(
                "An Offset in the FlashLayout is misaligned, overlaps another partition or lies outside the device. Run `stm32mp-flash check` on the layout and align offsets to the erase block."
            )
        }
        if message.contains("Couldn't find part") || message.contains("Bad address for partition")
            || message.contains("Bad size for partition")
        {
            steps.append(
                "The partition table on the device does not match the FlashLayout (a layout line was added or resized). Re-flash every partition so U-Boot rewrites the GPT, or restore the layout that matches the device."
            )
        }
        if message.contains("GPT partition") {
            steps.append(
                "U-Boot could not write the GPT: check that the partitions fit the device and that the device is not write-protected."
            )
        }
        if message.contains("erase") {
            steps.append(
                "Erasing failed: the storage may be write-protected, worn out or badly connected; try another SD card or check the eMMC/NAND supply."
            )
        }
        if message.contains("dfu init failed") {
            steps.append(
                "U-Boot could not build its DFU alternate list from the layout: check for duplicate or unsupported partition types."
            )
        }
        return steps
    }
}

extension String {
    /// The text without surrounding white space or NULs (GetPhase messages may carry padding).
    var trimmingCharacters: String {
        var text = Substring(self)
        while let first = text.first, first == " " || first == "\n" || first == "\r" || first == "\t" || first == "\0" {
            text.removeFirst()
        }
        while let last = text.last, last == " " || last == "\n" || last == "\r" || last == "\t" || last == "\0" {
            text.removeLast()
        }
        return String(text)
    }
}
