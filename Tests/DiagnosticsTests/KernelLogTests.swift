import Diagnostics
import Testing

@Suite("KernelLog")
struct KernelLogTests {
    /// Records as `/dev/kmsg` gives them, including a continuation (dictionary) line.
    static let kmsg = """
        6,1021,5123456,-;usb 1-2: new high-speed USB device number 7 using xhci_hcd
        6,1022,5223456,-;usb 1-2: New USB device found, idVendor=0483, idProduct=df11, bcdDevice= 2.00
         SUBSYSTEM=usb
         DEVICE=c189:6
        6,1023,5323456,-;usb 1-2: Product: DFU in HS Mode @Device ID /0x500, @Revision ID /0x0000
        3,1024,9000001,-;usb 1-2: device descriptor read/64, error -110
        3,1025,9500000,-;usb 1-2: device not accepting address 8, error -71
        4,1026,9600000,-;usb usb1-port2: over-current condition
        6,1027,9700000,-;e1000e 0000:00:1f.6 eth0: NIC Link is Up
        6,1028,9800000,-;usb 1-2: reset high-speed USB device number 9 using xhci_hcd

        """

    @Test func keepsOnlyUSBProblemAndSTLines() throws {
        let root = try FakeRoot()
        try root.write("/dev/kmsg", Self.kmsg)
        let lines = KernelLog.usbLines(root: root.path)
        #expect(
            lines == [
                "[5.223456] usb 1-2: New USB device found, idVendor=0483, idProduct=df11, bcdDevice= 2.00",
                "[9.000001] usb 1-2: device descriptor read/64, error -110",
                "[9.500000] usb 1-2: device not accepting address 8, error -71",
                "[9.600000] usb usb1-port2: over-current condition",
                "[9.800000] usb 1-2: reset high-speed USB device number 9 using xhci_hcd",
            ])
        #expect(KernelLog.enumerationErrors(in: lines).count == 2)
        #expect(KernelLog.overCurrent(in: lines) == ["[9.600000] usb usb1-port2: over-current condition"])
    }

    @Test func keepsTheLastLines() throws {
        let root = try FakeRoot()
        try root.write("/dev/kmsg", Self.kmsg)
        #expect(
            KernelLog.usbLines(root: root.path, last: 1) == [
                "[9.800000] usb 1-2: reset high-speed USB device number 9 using xhci_hcd"
            ])
    }

    @Test func unreadableLogGivesNothing() throws {
        let root = try FakeRoot()
        #expect(KernelLog.usbLines(root: root.path).isEmpty)
        #expect(!KernelLog.isReadable(root: root.path))
    }

    @Test func filterIgnoresNonUSBErrors() {
        let lines = [
            "ata1: COMRESET failed (errno=-110)", "usb 3-1: device descriptor read/64, error -71",
            "mmc0: error -110 whilst initialising SD card",
        ]
        #expect(KernelLog.filterUSB(lines) == ["usb 3-1: device descriptor read/64, error -71"])
    }
}
