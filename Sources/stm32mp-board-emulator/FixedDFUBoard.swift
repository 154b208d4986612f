import Glibc
import USBModel

/// `--fixed-dfu`: a plain DFU 1.1 device with one alternate setting, no STM32 protocol (no
/// GetPhase), for bringing up hosts and debugging. It shows the ROM code's identity strings first;
/// DFU_DETACH makes it re-enumerate on the same port as a second generation with U-Boot's
/// product string and another serial. Each completed download is written to
/// `<storage>/fixed-dfu-alt0.bin` and can be read back with UPLOAD.
final class FixedDFUBoard: SimulatedBoard {
    let port: PortPath
    private let settings: FixedDFUSettings
    private var device: FixedDFUDevice?
    private var generation = 1
    /// Pending transitions, in time order.
    private var schedule: [(time: Duration, transition: () -> BusTransition)] = []

    init(port: PortPath, settings: FixedDFUSettings) {
        self.port = port
        self.settings = settings
        device = FixedDFUDevice(generation: 1, settings: settings)
    }

    var attachedDevice: (any USBDeviceModel)? { device }

    /// Re-enumerates as if the device had received DFU_DETACH (the emulator's SIGUSR1).
    func requestReenumeration() { device?.detachRequested = true }
    var nextTransitionTime: Duration? { schedule.first?.time }

    func advance(to now: Duration) -> [BusTransition] {
        if let device, device.detachRequested {
            device.detachRequested = false
            let next = generation + 1
            schedule.append(
                (
                    now + .milliseconds(20),
                    { [unowned self] in
                        self.device = nil
                        return .detach(port: self.port)
                    }
                ))
            schedule.append(
                (
                    now + .milliseconds(80),
                    { [unowned self] in
                        self.generation = next
                        let device = FixedDFUDevice(generation: next, settings: self.settings)
                        self.device = device
                        return .attach(port: self.port, device: device)
                    }
                ))
        }
        var due: [BusTransition] = []
        while let first = schedule.first, first.time <= now {
            schedule.removeFirst()
            due.append(first.transition())
        }
        return due
    }
}

struct FixedDFUSettings {
    var chipDeviceID: UInt16 = 0x500
    var transferSize: UInt16 = 1024
    var storageDirectory: String?
    /// How long GETSTATUS holds its answer after a DNLOAD block (exercises deferred URBs).
    var downloadLatency: Duration = .zero
    /// How many string descriptor requests after each enumeration STALL, as boards do for a
    /// moment right after enumerating (the host must retry).
    var unreadableStringRequests = 0
}

/// The DFU 1.1 state machine of the fixed device (DFU 1.1 §6, states and requests by number).
final class FixedDFUDevice: USBDeviceModel {
    private enum State: UInt8 {
        case idle = 2, downloadSync = 3, downloadIdle = 5, manifestSync = 6, uploadIdle = 9, error = 10
    }

    let generation: Int
    private let settings: FixedDFUSettings
    private var state = State.idle
    private var status: UInt8 = 0
    private var receiving: [UInt8] = []
    private var stored: [UInt8] = []
    private var stringStallsLeft: Int
    var detachRequested = false

    init(generation: Int, settings: FixedDFUSettings) {
        self.generation = generation
        self.settings = settings
        stringStallsLeft = settings.unreadableStringRequests
    }

    var deviceDescriptor: DeviceDescriptor { DeviceDescriptor(vendorID: 0x0483, productID: 0xDF11, bcdDevice: 0x0200) }

    var configuration: ConfigurationDescriptor {
        let size = settings.transferSize
        let functional: [UInt8] = [
            9, DescriptorType.dfuFunctional, 0x0F, 0xFF, 0x00, UInt8(size & 0xFF), UInt8(size >> 8), 0x10, 0x01,
        ]
        return ConfigurationDescriptor(interfaces: [
            InterfaceAltSetting(
                interfaceNumber: 0, alternateSetting: 0, interfaceClass: 0xFE, interfaceSubClass: 0x01,
                interfaceProtocol: 0x02, interfaceStringIndex: 4, extra: [functional])
        ])
    }

    var speed: USBSpeed { .high }

    var strings: [UInt8: String] {
        let id = String(settings.chipDeviceID, radix: 16, uppercase: true)
        return generation == 1
            ? [
                1: "STMicroelectronics", 2: "DFU in HS Mode @Device ID /0x\(id), @Revision ID /0x0000",
                3: "002800423232511538303631", 4: "@fixed-dfu /0x00/1*1Me",
            ]
            : [
                1: "STMicroelectronics",
                2:
                    "USB download gadget@Device ID /0x\(id), @Revision ID /0x2000, @Name /fixed-dfu generation \(generation),",
                3: "00280042323251153830\(String(0x3600 + generation, radix: 16, uppercase: true))",
                4: "@fixed-dfu /0x00/1*1Me",
            ]
    }

    func stringDescriptor(index: UInt8, languageID: UInt16) -> [UInt8]? {
        if index != 0 && stringStallsLeft > 0 {
            stringStallsLeft -= 1
            return nil
        }
        if index == 0 { return StringDescriptor.languageTable }
        return strings[index].map(StringDescriptor.encode)
    }

    func setInterface(_ interface: UInt8, alternate: UInt8) -> Bool {
        guard interface == 0, alternate == 0 else { return false }
        state = .idle
        status = 0
        return true
    }

    func busReset() {
        state = .idle
        status = 0
    }

    func control(_ setup: SetupPacket, data: [UInt8]) -> DeviceControlReply {
        switch (setup.requestType, setup.request) {
        case (USBRequest.classInterfaceOut, 0):  // DETACH
            detachRequested = true
            return .ack
        case (USBRequest.classInterfaceOut, 1):  // DNLOAD
            return download(data)
        case (USBRequest.classInterfaceIn, 2):  // UPLOAD
            return upload(block: Int(setup.value), length: Int(setup.length))
        case (USBRequest.classInterfaceIn, 3):  // GETSTATUS
            let latency = state == .downloadSync ? settings.downloadLatency : .zero
            if state == .downloadSync { state = .downloadIdle }
            if state == .manifestSync { manifest() }
            return .data([status, 0, 0, 0, state.rawValue, 0], latency: latency)
        case (USBRequest.classInterfaceOut, 4):  // CLRSTATUS
            if state == .error { (state, status) = (.idle, 0) }
            return .ack
        case (USBRequest.classInterfaceIn, 5):  // GETSTATE
            return .data([state.rawValue])
        case (USBRequest.classInterfaceOut, 6):  // ABORT
            (state, status) = (.idle, 0)
            return .ack
        default:
            return .stall
        }
    }

    private func download(_ data: [UInt8]) -> DeviceControlReply {
        switch (state, data.isEmpty) {
        case (.idle, false):
            receiving = data
            state = .downloadSync
        case (.downloadIdle, false):
            receiving += data
            state = .downloadSync
        case (.downloadIdle, true):
            state = .manifestSync
        default:
            (state, status) = (.error, 0x0F)  // errSTALLEDPKT
            return .stall
        }
        return .ack
    }

    private func upload(block: Int, length: Int) -> DeviceControlReply {
        guard state == .idle || state == .uploadIdle else {
            (state, status) = (.error, 0x0F)
            return .stall
        }
        let start = min(block * Int(settings.transferSize), stored.count)
        let chunk = Array(stored[start..<min(start + length, stored.count)])
        state = chunk.count < length ? .idle : .uploadIdle
        return .data(chunk)
    }

    /// Manifestation-tolerant: straight back to dfuIDLE (a dfuMANIFEST answer makes dfu-util sleep 1 s).
    private func manifest() {
        stored = receiving
        receiving = []
        state = .idle
        if let directory = settings.storageDirectory {
            writeFile(directory + "/fixed-dfu-alt0.bin", stored)
        }
    }
}

/// Writes `bytes` to `path` (replacing it); reports failures on stderr.
func writeFile(_ path: String, _ bytes: [UInt8]) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { return printError("cannot write \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var offset = 0
    while offset < bytes.count {
        let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written > 0 else { return printError("cannot write \(path): \(String(cString: strerror(errno)))") }
        offset += written
    }
}
