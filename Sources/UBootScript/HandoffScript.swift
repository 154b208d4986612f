public import FlashLayout

/// The script the host sends to U-Boot's first `stm32prog` enumeration instead of a FlashLayout
/// (fastboot reference §1, §7 step 4). It writes the GPT the layout asks for on the device this
/// U-Boot's fastboot flashes, records the outcome where `getvar` can read it, and starts
/// fastboot; when fastboot is missing, cannot start, or the host ends it with `continue` (it
/// declined to flash), it re-enters `stm32prog`, so the host can go on over DFU in the same
/// U-Boot session. After a successful flash the host sends `reboot`, so `stm32prog` never runs.
/// Every construct here is UNCONFIRMED on hardware.
public struct HandoffScript: Sendable, Hashable {
    /// The MMC index fastboot should flash (the layout's device).
    public var mmcIndex: Int
    /// `gpt write` partition string; nil when the plan writes no GPT (partial update).
    public var partitions: String?
    /// Run `stm32prog usb 0` after `fastboot usb 0` (back to DFU phase 0x00).
    public var fallbackToDFU: Bool
    /// `--verify` over fastboot: after the host's `continue`, read back and CRC what was
    /// written, then start fastboot again for the host to read the results.
    public var verify: CRCReadbackStage?

    public init(mmcIndex: Int, partitions: String?, fallbackToDFU: Bool = true, verify: CRCReadbackStage? = nil) {
        self.mmcIndex = mmcIndex
        self.partitions = partitions
        self.fallbackToDFU = fallbackToDFU
        self.verify = verify
    }

    /// The script for the one MMC device a fastboot-capable layout uses.
    public init(device: DevicePlan, fallbackToDFU: Bool = true) {
        self.init(
            mmcIndex: device.target.index, partitions: GPTWriteSpec.partitions(device), fallbackToDFU: fallbackToDFU)
    }

    /// Env variable `getvar:gptstat` reads (`fastboot_getvar()` looks up `fastboot.<name>` first).
    public static let statusVariable = "fastboot.gptstat"

    /// The hush text. The GPT is written only when the board's own `fastboot.mmcdev` (set by
    /// ST's board code) is unset or names the layout's device, so a layout for another storage
    /// changes nothing before the host's `getvar:mmcdev` check refuses it.
    public var text: String {
        var commands: [String] = []
        if let partitions {
            let device = String(mmcIndex)
            commands.append("env set partitions \"\(partitions)\"")
            commands.append(
                "if test -z \"${fastboot.mmcdev}\" || test \"${fastboot.mmcdev}\" = \(device); then "
                    + "if gpt write mmc \(device) \"${partitions}\"; then env set \(Self.statusVariable) ok; "
                    + "else env set \(Self.statusVariable) fail; fi; "
                    + "else env set \(Self.statusVariable) other-device; fi")
        } else {
            commands.append("env set \(Self.statusVariable) kept")
        }
        if let verify {
            // `filesize` is set by every fastboot `download` (`fastboot_data_complete()`): the
            // stage runs only after a session that sent data, so a `continue` that declines the
            // fast path (nothing downloaded) still goes straight on to `stm32prog usb 0`.
            commands.append("env set filesize")
            commands.append("fastboot usb 0")
            commands.append(
                "if test -n \"${filesize}\"; then \(verify.text); fastboot usb 0; fi")
        } else {
            commands.append("fastboot usb 0")
        }
        if fallbackToDFU { commands.append("stm32prog usb 0") }
        return commands.joined(separator: "; ")
    }

    /// The script as a legacy image, ready for the FlashLayout alternate.
    public var image: LegacyScriptImage { LegacyScriptImage(script: text) }
}
