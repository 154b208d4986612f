import CUMockdev
import Glibc
import USBModel

/// A umockdev testbed: a fake /sys and /dev under `$UMOCKDEV_DIR` that processes started with
/// the preload library see instead of the real ones. Owned by the emulator for its whole life.
///
/// `@unchecked Sendable`: umockdev serializes testbed calls internally, and the emulator only calls
/// it from its serial operations queue (plus setup and teardown on the main thread).
final class Testbed: @unchecked Sendable {
    private let raw: UnsafeMutablePointer<UMockdevTestbed>
    /// umockdev before 0.18.4 neither sends "remove" on `remove_device` nor removes children.
    let removeSendsUevent: Bool

    /// Creates the testbed, which also sets `UMOCKDEV_DIR` in this process's environment.
    init() {
        raw = umockdev_testbed_new()
        removeSendsUevent =
            Testbed.installedVersion().map { $0.lexicographicallyPrecedes([0, 18, 4]) == false } ?? false
    }

    /// The root of the fake tree (`$UMOCKDEV_DIR`).
    var rootDirectory: String {
        let path = umockdev_testbed_get_root_dir(raw)!
        defer { g_free(path) }
        return String(cString: path)
    }

    /// Adds a device from umockdev's record format (`P:`, `N:`, `E:`, `A:`, `H:` lines); sends "add".
    func add(record: String) throws(EmulatorError) {
        var error: UnsafeMutablePointer<GError>?
        guard umockdev_testbed_add_from_string(raw, record, &error) != 0 else { throw EmulatorError(consuming: error) }
    }

    /// `syspath` starts with `/sys/devices/`.
    func sendUevent(_ syspath: String, action: String) { umockdev_testbed_uevent(raw, syspath, action) }

    /// Runs `body` (which sends uevents) while the listeners `hidden` picks are out of umockdev's
    /// sight: umockdev sends each uevent to every `$UMOCKDEV_DIR/event<fd>` socket that exists at
    /// that moment, so renaming one away for the duration makes it miss the event. `hidden` gets the
    /// listeners in the order they bound (lowest fd first: a client's first monitor).
    func withListeners<T>(hidden: ([String]) -> some Sequence<String>, _ body: () throws -> T) -> Result<T, any Error> {
        let root = rootDirectory
        let listeners = Self.listenerNames(in: root)
        let moved = Array(hidden(listeners))
        for name in moved { Glibc.rename(root + "/" + name, root + "/lag-" + name) }
        defer { for name in moved { Glibc.rename(root + "/lag-" + name, root + "/" + name) } }
        return Result { try body() }
    }

    /// `event<fd>` sockets in `root`, lowest fd first.
    static func listenerNames(in root: String) -> [String] {
        guard let folder = opendir(root) else { return [] }
        defer { closedir(folder) }
        var names: [(Int, String)] = []
        while let entry = readdir(folder) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard name.hasPrefix("event"), let fd = Int(name.dropFirst(5)) else { continue }
            names.append((fd, name))
        }
        return names.sorted { $0.0 < $1.0 }.map(\.1)
    }

    /// `syspath` starts with `/sys/devices/`.
    func removeDevice(_ syspath: String) { umockdev_testbed_remove_device(raw, syspath) }

    /// Routes ioctls on `devnode` (`/dev/bus/usb/001/002`) to `handler`.
    func attachIoctl(_ devnode: String, handler: UnsafeMutablePointer<UMockdevIoctlBase>) throws(EmulatorError) {
        var error: UnsafeMutablePointer<GError>?
        guard umockdev_testbed_attach_ioctl(raw, devnode, handler, &error) != 0 else {
            throw EmulatorError(consuming: error)
        }
    }

    func detachIoctl(_ devnode: String) {
        var error: UnsafeMutablePointer<GError>?
        if umockdev_testbed_detach_ioctl(raw, devnode, &error) == 0, let error { g_error_free(error) }
    }

    /// Frees the testbed, which deletes `$UMOCKDEV_DIR` (gotcha 17: only finalizing does).
    func destroy() { g_object_unref(raw) }

    /// `umockdev-run --version` as numbers, e.g. [0, 17, 16]; nil when it cannot be run.
    private static func installedVersion() -> [Int]? {
        guard let pipe = popen("umockdev-run --version 2>/dev/null", "r") else { return nil }
        defer { pclose(pipe) }
        var line = [CChar](repeating: 0, count: 64)
        guard fgets(&line, Int32(line.count), pipe) != nil else { return nil }
        let numbers = line.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }.trimmingWhitespace.split(
            separator: "."
        ).compactMap { Int($0) }
        return numbers.count >= 2 ? numbers : nil
    }
}

/// A failure of the emulator itself (testbed setup, child process); printed and exit status 70.
struct EmulatorError: Error, CustomStringConvertible {
    var description: String

    init(_ description: String) { self.description = description }

    /// Takes the message of a GError and frees it.
    init(consuming error: UnsafeMutablePointer<GError>?) {
        if let error {
            description = String(cString: error.pointee.message)
            g_error_free(error)
        } else {
            description = "umockdev call failed"
        }
    }
}
