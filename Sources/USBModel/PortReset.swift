/// A USB port reset of an opened device, host side (`libusb_reset_device`; the virtual bus's
/// `resetPort`). Separate from `USBControlTransport` because only one recovery needs it: U-Boot
/// resets the board when the host resets the port after a DFU_DETACH (MP13/MP15), which brings
/// the ROM back when `--transport auto` has to start over over DFU.
public protocol USBPortResetting: Sendable {
    /// Resets the port. The device usually leaves (it re-enumerates or the board resets), so the
    /// handle is unusable afterwards; that is not an error.
    func resetPort() async throws
}
