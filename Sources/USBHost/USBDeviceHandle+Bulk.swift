import CLibUSB
import Synchronization
import Timekeeping
public import USBModel

/// Bulk transfers over libusb (U-Boot's fastboot gadget). Each call is a run of synchronous
/// `libusb_bulk_transfer`s on the handle's own queue, each at most `bulkSlice` long: the deadline
/// is kept on the injected clock, cancellation is checked between slices, and a slice that timed
/// out after moving some bytes is continued where it stopped (OUT) or returns what it read (IN).
/// A device answer is never lost by a slice ending: an IN transfer that timed out read nothing,
/// and the device keeps its answer queued until the next IN.
extension USBDeviceHandle: USBBulkTransport {
    /// The longest single libusb call: how late a cancellation or the injected clock's deadline
    /// can be noticed.
    static let bulkSlice: Duration = .milliseconds(250)

    /// Claims `interface` (detaching a kernel driver if one is bound) and remembers the endpoints.
    /// The corresponding C function is `libusb_claim_interface`.
    public func claimBulk(interface: UInt8, outEndpoint: UInt8, inEndpoint: UInt8) async throws {
        guard outEndpoint & 0x80 == 0, inEndpoint & 0x80 != 0 else {
            throw USBTransferError(
                .other, operation: "libusb_claim_interface",
                detail:
                    "endpoints 0x\(String(outEndpoint, radix: 16))/0x\(String(inEndpoint, radix: 16)) are not OUT/IN")
        }
        try await core.claimInterface(interface)
        bulkEndpoints.withLock { $0 = (interface, outEndpoint, inEndpoint) }
    }

    /// Sends `data` in order; large transfers go to libusb whole (one URB where the kernel can
    /// scatter-gather). The corresponding C function is `libusb_bulk_transfer`.
    public func bulkOut(_ data: [UInt8], timeout: Duration) async throws {
        let endpoint = try claimedEndpoints().out
        let deadline = clock.now + timeout
        var offset = 0
        repeat {
            try Task.checkCancellation()
            let slice = await core.bulkTransfer(
                endpoint: endpoint, data: data, offset: offset, length: data.count - offset,
                timeout: sliceTimeout(until: deadline))
            offset += slice.transferred
            if slice.code == 0 {
                guard slice.transferred > 0 || offset == data.count else {
                    throw USBTransferError(.io, operation: "libusb_bulk_transfer OUT", detail: "nothing was sent")
                }
                continue
            }
            try check(slice, operation: "libusb_bulk_transfer OUT", deadline: deadline, moved: offset, of: data.count)
        } while offset < data.count
    }

    /// Reads one transfer of at most `maxLength` bytes (a short packet ends it).
    /// The corresponding C function is `libusb_bulk_transfer`.
    public func bulkIn(maxLength: Int, timeout: Duration) async throws -> [UInt8] {
        let endpoint = try claimedEndpoints().input
        let deadline = clock.now + timeout
        while true {
            try Task.checkCancellation()
            let slice = await core.bulkTransfer(
                endpoint: endpoint, data: [], offset: 0, length: maxLength, timeout: sliceTimeout(until: deadline))
            if slice.code == 0 || slice.transferred > 0 { return slice.data }
            try check(slice, operation: "libusb_bulk_transfer IN", deadline: deadline, moved: 0, of: maxLength)
        }
    }

    private func claimedEndpoints() throws(USBTransferError) -> (interface: UInt8, out: UInt8, input: UInt8) {
        guard let endpoints = bulkEndpoints.withLock({ $0 }) else {
            throw USBTransferError(.other, operation: "libusb_bulk_transfer", detail: "no interface claimed")
        }
        return endpoints
    }

    /// The next slice: at most `bulkSlice`, never past `deadline`, at least 1 ms.
    private func sliceTimeout(until deadline: Duration) -> Duration {
        max(.milliseconds(1), min(Self.bulkSlice, deadline - clock.now))
    }

    /// A slice that did not complete: a timeout before the deadline means "keep going"; anything
    /// else ends the transfer with the mapped error.
    private func check(_ slice: BulkSlice, operation: String, deadline: Duration, moved: Int, of total: Int) throws {
        if let refusal = slice.refusal { throw refusal }
        if slice.code == LIBUSB_ERROR_TIMEOUT.rawValue {
            guard clock.now >= deadline else { return }
            throw USBTransferError(
                .timeout, operation: operation, detail: "LIBUSB_ERROR_TIMEOUT after \(moved) of \(total) bytes")
        }
        throw USBTransferError(libusbCode: slice.code, operation: operation)
    }
}
