import DFU
import DfuSe
package import USBModel

/// A simulated STM32 MCU in its system bootloader (or, under `app-dfu`, running a CubeMX DFU
/// application): one port, one DfuSe device that resets and re-enumerates after an option-byte
/// write or Read Unprotect and leaves the bus when told to jump to the application. Memory lives in
/// files (see `MCUMemory`), so consecutive commands see each other's writes.
///
/// Not thread-safe by itself: its host (`VirtualUSBBus` or the emulator) serializes every call,
/// which is the invariant behind `@unchecked Sendable`.
package final class VirtualMCU: SimulatedBoard, @unchecked Sendable {
    package let configuration: MCUConfiguration
    let memory: MCUMemory
    package let port: PortPath
    package private(set) var now: Duration = .zero
    /// Enumerations so far (power-on is 1).
    package private(set) var enumerationCount = 0
    /// Data blocks (DNLOAD wValue ≥ 2 with data) received, counted for tests and benchmarks.
    package internal(set) var dataBlocksReceived = 0
    /// Control requests answered (class requests and SET_INTERFACE).
    package internal(set) var requestCount = 0
    /// The application was started (zero-length DNLOAD): the bootloader is gone until a reset.
    package private(set) var jumpedTo: UInt32?
    var current: MCUDevice?
    private var scheduled: [(time: Duration, order: Int, action: () -> BusTransition?)] = []
    private var order = 0

    /// Powers the MCU on with BOOT0 high: the bootloader enumerates at once.
    /// - Throws: `MCUMemoryError` when the memory files cannot be made in the folder.
    package init(configuration: MCUConfiguration) throws(MCUMemoryError) {
        self.configuration = configuration
        port = configuration.port
        memory = try MCUMemory(
            directory: configuration.memoryDirectory, family: configuration.family,
            defaultOptionBytes: Self.defaultOptionBytes(configuration.family))
        applyScenarioToOptionBytes()
        current = makeDevice()
    }

    package var attachedDevice: (any USBDeviceModel)? { current }
    package var nextTransitionTime: Duration? { scheduled.map(\.time).min() }

    package func advance(to time: Duration) -> [BusTransition] {
        if time > now { now = time }
        var transitions: [BusTransition] = []
        while let index = scheduled.indices.min(by: {
            (scheduled[$0].time, scheduled[$0].order) < (scheduled[$1].time, scheduled[$1].order)
        }), scheduled[index].time <= now {
            if let transition = scheduled.remove(at: index).action() { transitions.append(transition) }
        }
        return transitions
    }

    /// The folder's memory-file write failures (path and OS reason), for the CLI to report.
    package var hostFailures: [String] { memory.hostFailures }

    /// The files holding the memories.
    package var memoryFiles: [String] { memory.regions.compactMap(\.file) }

    /// The flash content now (tests).
    package var flashContent: [UInt8] { memory.index(named: "Internal Flash").map { memory.regions[$0].bytes } ?? [] }
    /// The option-byte block now (tests).
    package var optionBytes: [UInt8] { memory.index(named: "Option Bytes").map { memory.regions[$0].bytes } ?? [] }

    // MARK: - Used by the device

    func makeDevice() -> MCUDevice {
        enumerationCount += 1
        return MCUDevice(mcu: self, session: enumerationCount)
    }

    private func schedule(after delay: Duration, _ action: @escaping () -> BusTransition?) {
        order += 1
        scheduled.append((now + delay, order, action))
    }

    /// A system reset: the device drops off now and the bootloader enumerates again (BOOT0 is
    /// still high) after the reset time.
    func resetChip() {
        schedule(after: .milliseconds(2)) { [unowned self] in
            current = nil
            return .detach(port: port)
        }
        schedule(after: configuration.resetTime) { [unowned self] in
            let device = makeDevice()
            current = device
            return .attach(port: port, device: device)
        }
    }

    /// Leave DFU: the application at `address` runs; the DFU device is gone for good.
    func jump(to address: UInt32) {
        jumpedTo = address
        schedule(after: .milliseconds(2)) { [unowned self] in
            current = nil
            return .detach(port: port)
        }
    }

    /// RDP level 1 now (H5: product state Closed or Locked).
    var readProtected: Bool {
        let block = optionBytes
        if configuration.family.id == "h562" {
            let state = configuration.family.optionBytes.first { $0.name == "PRODUCT_STATE" }?.value(in: block)
            return state == 0x72 || state == 0x5C
        }
        return configuration.family.optionBytes.contains { $0.isReadProtected(block) }
    }

    /// Erases the whole flash and resets the option bytes to their defaults (Read Unprotect, or an
    /// RDP regression from level 1 to 0).
    func eraseEverything() {
        if let flash = memory.index(named: "Internal Flash") {
            memory.erase(flash, 0..<memory.regions[flash].bytes.count)
        }
        if let options = memory.index(named: "Option Bytes") {
            memory.replace(options, offset: 0, Self.defaultOptionBytes(configuration.family))
        }
    }

    // MARK: - Option bytes

    /// Level 0, no write protection, as the chips leave the factory.
    static func defaultOptionBytes(_ family: MCUFamily) -> [UInt8] {
        guard let map = family.optionByteMap else { return [] }
        var block = [UInt8](repeating: 0xFF, count: Int(map.totalSize))
        for field in family.optionBytes {
            switch field.meaning {
            case .readProtection(let level0, _): block = field.setting(UInt32(level0), in: block)
            case .productState: block = field.setting(0xED, in: block)
            case .writeProtection(let inverted): block = field.setting(inverted ? 0xFF : 0, in: block)
            case .raw:
                if field.name.hasPrefix("BOOT_ADD") { block = field.setting(0x0080, in: block) }
                if field.name == "WRP1A" { block = field.setting(0x0000_00FF, in: block) }
                if field.complementOffset != nil { block = field.setting(0xFF, in: block) }
            }
        }
        return block
    }

    private func applyScenarioToOptionBytes() {
        guard let options = memory.index(named: "Option Bytes") else { return }
        var block = memory.regions[options].bytes
        let family = configuration.family
        switch configuration.scenario {
        case .rdp1:
            if let rdp = family.optionBytes.first(where: {
                if case .readProtection = $0.meaning { true } else { false }
            }) {
                block = rdp.setting(0x00, in: block)
            } else if let state = family.optionBytes.first(where: { $0.meaning == .productState }) {
                block = state.setting(0x72, in: block)
            }
        case .writeProtected:
            // Sectors 2 and 3: F1 WRP0 bit 1 (pages 2–3), F7 nWRP bits 2 and 3, G0 WRP1A pages 2–3.
            if let field = family.optionBytes.first(where: { $0.name == "WRP0" }) {
                block = field.setting(0xFD, in: block)
            }
            if let field = family.optionBytes.first(where: { $0.name == "nWRP" }) {
                block = field.setting(0xF3, in: block)
            }
            if let field = family.optionBytes.first(where: { $0.name == "WRP1A" }) {
                block = field.setting(0x0003_0002, in: block)
            }
        default: return
        }
        memory.replace(options, offset: 0, block)
    }
}
