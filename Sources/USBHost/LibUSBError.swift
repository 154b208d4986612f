import CLibUSB
import USBModel

extension USBTransferError {
    /// Maps a negative libusb return code to the error the engine and the diagnosis act on.
    /// The ACCESS detail names the fix, since a missing udev rule is the usual cause.
    init(libusbCode code: Int32, operation: String) {
        let name = String(cString: libusb_error_name(code))
        switch code {
        case LIBUSB_ERROR_PIPE.rawValue: self.init(.stall, operation: operation, detail: name)
        case LIBUSB_ERROR_TIMEOUT.rawValue: self.init(.timeout, operation: operation, detail: name)
        case LIBUSB_ERROR_NO_DEVICE.rawValue:
            self.init(.noDevice, operation: operation, detail: "\(name): the board disconnected")
        case LIBUSB_ERROR_ACCESS.rawValue:
            self.init(
                .access, operation: operation,
                detail:
                    "\(name): install the udev rules with `stm32mp-flash udev-rules --install`, then replug the board")
        case LIBUSB_ERROR_BUSY.rawValue: self.init(.busy, operation: operation, detail: name)
        case LIBUSB_ERROR_IO.rawValue, LIBUSB_ERROR_OVERFLOW.rawValue:
            self.init(.io, operation: operation, detail: name)
        case LIBUSB_ERROR_NOT_FOUND.rawValue: self.init(.notFound, operation: operation, detail: name)
        default: self.init(.other, operation: operation, detail: name)
        }
    }
}

/// Throws the mapped error when a libusb call returned a negative code; returns the code otherwise.
@discardableResult
func checkLibUSB(_ code: Int32, _ operation: String) throws(USBTransferError) -> Int32 {
    guard code >= 0 else { throw USBTransferError(libusbCode: code, operation: operation) }
    return code
}
