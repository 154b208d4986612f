import Foundation
import TestSupport

/// A fake `/` in a temporary folder: tests write the /sys, /proc, /etc, /run files a probe reads.
final class FakeRoot {
    let directory: TemporaryDirectory
    var path: String { directory.path }

    init() throws { directory = try TemporaryDirectory(prefix: "diag-root") }

    /// Writes `content` at `path` (absolute inside the root), creating folders.
    func write(_ path: String, _ content: String, mode: Int = 0o644) throws {
        try write(path, Data(content.utf8), mode: mode)
    }

    func write(_ path: String, _ data: Data, mode: Int = 0o644) throws {
        let full = directory.path + path
        try FileManager.default.createDirectory(
            atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try data.write(to: URL(fileURLWithPath: full))
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: full)
    }

    func read(_ path: String) throws -> String {
        try String(contentsOfFile: directory.path + path, encoding: .utf8)
    }

    func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: directory.path + path) }

    /// A USB device directory in sysfs plus its /dev/bus/usb node with `mode`.
    func addUSBDevice(
        port: String, vendor: String = "0483", product: String = "df11", busnum: Int, devnum: Int,
        productString: String? = "DFU in HS Mode @Device ID /0x500, @Revision ID /0x0000", speed: String = "480",
        nodeMode: Int? = 0o660
    ) throws {
        let dir = "/sys/bus/usb/devices/" + port
        try write(dir + "/idVendor", vendor + "\n")
        try write(dir + "/idProduct", product + "\n")
        try write(dir + "/busnum", "\(busnum)\n")
        try write(dir + "/devnum", "\(devnum)\n")
        try write(dir + "/speed", speed + "\n")
        if let productString { try write(dir + "/product", productString + "\n") }
        if let nodeMode {
            try write(String(format: "/dev/bus/usb/%03d/%03d", busnum, devnum), "", mode: nodeMode)
        }
    }
}
