import DFU
import DfuSe
import USBModel

/// The DfuSe device of a virtual MCU: ST's bootloader state machine after AN3156 (a command or
/// data block runs on the first GETSTATUS, which answers dfuDNBUSY with a poll time; the second
/// answers dfuDNLOAD-IDLE or dfuERROR), or the CubeMX DFU application template under `app-dfu`.
final class MCUDevice: USBDeviceModel {
    unowned let mcu: VirtualMCU
    let session: Int
    private var state = DFUState.dfuIdle
    private var status = DFUStatusCode.ok
    private var alternate: UInt8 = 0
    private var pointer: UInt32
    private var pending: Pending?
    /// The outcome of the request run by the last GETSTATUS, reported by the next one.
    private var outcome: UInt8?
    private var stringRequests = 0
    private var optionUploads = 0

    private enum Pending {
        case command([UInt8])
        case data(block: UInt16, bytes: [UInt8])
        case leave
    }

    static let transferSize: UInt16 = 2048

    init(mcu: VirtualMCU, session: Int) {
        self.mcu = mcu
        self.session = session
        pointer = mcu.configuration.family.flash.start
    }

    private var configurationValues: MCUConfiguration { mcu.configuration }
    private var isApplication: Bool { configurationValues.scenario == .appDFU }

    var deviceDescriptor: DeviceDescriptor {
        DeviceDescriptor(
            maxPacketSize0: 64, vendorID: 0x0483, productID: 0xDF11,
            bcdDevice: isApplication ? 0x0200 : configurationValues.family.bcdDevice)
    }

    var configuration: ConfigurationDescriptor {
        let names = configurationValues.alternates
        let functional = DFUFunctionalDescriptor(
            attributes: isApplication ? 0x0B : 0x0B, detachTimeoutMS: 255, transferSize: Self.transferSize,
            dfuVersion: 0x011A)
        let interfaces = names.indices.map { index in
            InterfaceAltSetting(
                interfaceNumber: 0, alternateSetting: UInt8(index), interfaceClass: 0xFE, interfaceSubClass: 0x01,
                interfaceProtocol: 0x02, interfaceStringIndex: UInt8(4 + index),
                extra: index == names.count - 1 ? [functional.bytes] : [])
        }
        return ConfigurationDescriptor(attributes: 0xC0, maxPower: 0x32, interfaces: interfaces)
    }

    var speed: USBSpeed { .full }

    func stringDescriptor(index: UInt8, languageID: UInt16) -> [UInt8]? {
        stringRequests += 1
        // hse-misdetect: USB runs on a clock a few percent off; every third string request fails.
        if configurationValues.scenario == .hseMisdetect, stringRequests % 3 == 2 { return nil }
        switch index {
        case 0: return StringDescriptor.languageTable
        case 1: return StringDescriptor.encode("STMicroelectronics")
        case 2:
            return StringDescriptor.encode(
                isApplication ? "STM32 DownLoad Firmware Update" : configurationValues.family.product)
        case 3: return StringDescriptor.encode(configurationValues.serial)
        default:
            let names = configurationValues.alternates
            let alt = Int(index) - 4
            return names.indices.contains(alt) ? StringDescriptor.encode(names[alt]) : nil
        }
    }

    func setInterface(_ interface: UInt8, alternate: UInt8) -> Bool {
        mcu.requestCount += 1
        guard interface == 0, Int(alternate) < configurationValues.alternates.count else { return false }
        self.alternate = alternate
        return true
    }

    func busReset() {}

    func control(_ setup: SetupPacket, data: [UInt8]) -> DeviceControlReply {
        mcu.requestCount += 1
        let bytes = max(data.count, setup.isIn ? Int(setup.length) : 0)
        // Full speed: ~1 MB/s of EP0 payload plus a fixed cost per transfer.
        let latency = Duration.microseconds(100) + .microseconds(Int64(bytes))
        switch setup.request {
        case DFURequest.download: return download(setup, data, latency)
        case DFURequest.upload: return upload(setup, latency)
        case DFURequest.getStatus: return .data(getStatus().bytes, latency: latency)
        case DFURequest.getState: return .data([state.rawValue], latency: latency)
        case DFURequest.clearStatus:
            state = .dfuIdle
            status = DFUStatusCode.ok
            return DeviceControlReply(.ok([]), latency: latency)
        case DFURequest.abort:
            state = .dfuIdle
            pending = nil
            return DeviceControlReply(.ok([]), latency: latency)
        case DFURequest.detach: return DeviceControlReply(.ok([]), latency: latency)
        default: return fail(DFUStatusCode.errStalledPacket)
        }
    }

    // MARK: - Requests

    private func fail(_ code: UInt8) -> DeviceControlReply {
        state = .error
        status = code
        return .stall
    }

    private func download(_ setup: SetupPacket, _ data: [UInt8], _ latency: Duration) -> DeviceControlReply {
        guard state == .dfuIdle || state == .dnloadIdle else { return fail(DFUStatusCode.errStalledPacket) }
        if data.isEmpty {
            pending = .leave
        } else if setup.value == 0 {
            pending = .command(data)
        } else if setup.value >= 2 {
            pending = .data(block: setup.value, bytes: data)
        } else {
            return fail(DFUStatusCode.errStalledPacket)
        }
        state = .dnloadSync
        return DeviceControlReply(.ok([]), latency: latency)
    }

    private func upload(_ setup: SetupPacket, _ latency: Duration) -> DeviceControlReply {
        guard state == .dfuIdle || state == .uploadIdle else { return fail(DFUStatusCode.errStalledPacket) }
        if setup.value == 0 {
            state = .uploadIdle
            let commands: [UInt8] = isApplication ? [0x00, 0x21, 0x41] : configurationValues.family.commands
            return .data(Array(commands.prefix(Int(setup.length))), latency: latency)
        }
        guard setup.value >= 2 else { return fail(DFUStatusCode.errStalledPacket) }
        let address = UInt64(pointer) + UInt64(setup.value - 2) * UInt64(Self.transferSize)
        let length = Int(setup.length)
        if !isApplication && mcu.readProtected { return fail(DFUStatusCode.errVendor) }
        if configurationValues.scenario == .hseMisdetect,
            mcu.memory.index(named: "Option Bytes") == locate(address)?.index
        {
            optionUploads += 1
            if optionUploads % 3 != 0 { return fail(DFUStatusCode.errStalledPacket) }
        }
        if let uid = uidBytes(address, length) {
            state = .uploadIdle
            return .data(uid, latency: latency)
        }
        guard let (index, offset) = locate(address, length: length) else { return fail(DFUStatusCode.errAddress) }
        let region = mcu.memory.regions[index]
        let available = min(length, region.bytes.count - offset)
        // Option bytes are read as a whole block only (AN3156 §4.1).
        if region.map.name.hasPrefix("Option Bytes"), offset != 0 || length < region.bytes.count {
            return fail(DFUStatusCode.errTarget)
        }
        state = available < length ? .dfuIdle : .uploadIdle
        return .data(mcu.memory.read(index, offset..<offset + available), latency: latency)
    }

    /// The unique ID, readable at the family's UID address like system memory.
    private func uidBytes(_ address: UInt64, _ length: Int) -> [UInt8]? {
        guard let base = configurationValues.family.uidAddress, address >= UInt64(base),
            address + UInt64(length) <= UInt64(base) + 12
        else { return nil }
        let start = Int(address - UInt64(base))
        return Array(configurationValues.uid[start..<start + length])
    }

    private func locate(_ address: UInt64, length: Int = 1) -> (index: Int, offset: Int)? {
        mcu.memory.locate(address, length: length)
    }

    private func getStatus() -> DFUStatusReply {
        switch state {
        case .dnloadSync:
            let (code, poll, next) = execute()
            outcome = code
            state = next
            return DFUStatusReply(status: DFUStatusCode.ok, pollTimeout: poll, state: next)
        case .dnBusy:
            let code = outcome ?? DFUStatusCode.ok
            outcome = nil
            if code == DFUStatusCode.ok {
                state = .dnloadIdle
            } else {
                state = .error
                status = code
            }
            return DFUStatusReply(status: code, state: state)
        default:
            return DFUStatusReply(status: status, state: state)
        }
    }

    // MARK: - Execution (on the first GETSTATUS)

    /// Runs the pending request: its status code, the poll time, and the state to report now.
    private func execute() -> (UInt8, Duration, DFUState) {
        let config = configurationValues
        defer { pending = nil }
        switch pending {
        case .none: return (DFUStatusCode.ok, .zero, .dnloadIdle)
        case .leave:
            mcu.jump(to: pointer)
            return (DFUStatusCode.ok, .zero, .manifest)
        case .command(let bytes):
            return command(bytes, config)
        case .data(let block, let bytes):
            mcu.dataBlocksReceived += 1
            let address = UInt64(pointer) + UInt64(block - 2) * UInt64(Self.transferSize)
            return (write(address, bytes, config), config.writeTime, .dnBusy)
        }
    }

    private func command(_ bytes: [UInt8], _ config: MCUConfiguration) -> (UInt8, Duration, DFUState) {
        func address() -> UInt32 {
            UInt32(bytes[1]) | UInt32(bytes[2]) << 8 | UInt32(bytes[3]) << 16 | UInt32(bytes[4]) << 24
        }
        switch (bytes[0], bytes.count) {
        case (DfuSeCommand.setAddressPointer, 5):
            pointer = address()
            return (DFUStatusCode.ok, .zero, .dnBusy)
        case (DfuSeCommand.erase, 5):
            let at = UInt64(address())
            guard !isApplication else { return (DFUStatusCode.ok, config.eraseTimeBase, .dnBusy) }
            guard !mcu.readProtected else { return (DFUStatusCode.errVendor, config.eraseTimeBase, .dnBusy) }
            guard let flash = mcu.memory.index(named: "Internal Flash"),
                let sectorIndex = mcu.memory.regions[flash].map.sectors.firstIndex(where: { $0.contains(at) })
            else { return (DFUStatusCode.errAddress, config.eraseTimeBase, .dnBusy) }
            let sector = mcu.memory.regions[flash].map.sectors[sectorIndex]
            let poll = config.eraseTimeBase + config.eraseTimePerKiB * Int(sector.size / 1024)
            // No error for a write-protected sector (AN3156 §5.3): it is simply not erased.
            if !config.protectedSectors.contains(sectorIndex) {
                let offset = Int(sector.address - mcu.memory.regions[flash].map.start)
                mcu.memory.erase(flash, offset..<offset + Int(sector.size))
            }
            return (DFUStatusCode.ok, poll, .dnBusy)
        case (DfuSeCommand.erase, 1):
            // The CubeMX template's Erase takes page addresses only (UNCONFIRMED: modelled on the F105 report).
            guard !isApplication else { return (DFUStatusCode.errTarget, config.eraseTimeBase, .dnBusy) }
            guard !mcu.readProtected else { return (DFUStatusCode.errVendor, config.massEraseTime, .dnBusy) }
            if let flash = mcu.memory.index(named: "Internal Flash") {
                for (index, sector) in mcu.memory.regions[flash].map.sectors.enumerated()
                where !config.protectedSectors.contains(index) {
                    let offset = Int(sector.address - mcu.memory.regions[flash].map.start)
                    mcu.memory.erase(flash, offset..<offset + Int(sector.size))
                }
            }
            return (DFUStatusCode.ok, config.massEraseTime, .dnBusy)
        case (DfuSeCommand.readUnprotect, 1) where !isApplication && config.family.hasReadUnprotect:
            // Erases flash (and RAM), option bytes back to level 0, then a system reset (AN3156 §5.4).
            if mcu.readProtected { mcu.eraseEverything() }
            mcu.resetChip()
            return (DFUStatusCode.ok, config.massEraseTime, .dnBusy)
        default:
            return (DFUStatusCode.errStalledPacket, .zero, .dnBusy)
        }
    }

    private func write(_ address: UInt64, _ bytes: [UInt8], _ config: MCUConfiguration) -> UInt8 {
        guard let (index, offset) = locate(address, length: bytes.count) else { return DFUStatusCode.errAddress }
        let region = mcu.memory.regions[index]
        if isApplication {
            // The template's MEM_If_Write is a stub: accepted, not stored.
            return DFUStatusCode.ok
        }
        if mcu.readProtected { return DFUStatusCode.errVendor }
        if region.map.name.hasPrefix("Option Bytes") {
            guard offset == 0, bytes.count == region.bytes.count else { return DFUStatusCode.errTarget }
            let wasProtected = mcu.readProtected
            mcu.memory.replace(index, offset: 0, bytes)
            // Leaving RDP level 1 mass-erases the flash (hardware), then the bootloader resets.
            if wasProtected && !mcu.readProtected { mcu.eraseEverything() }
            mcu.resetChip()
            return DFUStatusCode.ok
        }
        if region.map.name.hasPrefix("Internal Flash") {
            var cursor = 0
            while cursor < bytes.count {
                let at = UInt64(region.map.start) + UInt64(offset + cursor)
                guard let sectorIndex = region.map.sectors.firstIndex(where: { $0.contains(at) }) else { break }
                let sector = region.map.sectors[sectorIndex]
                let run = min(bytes.count - cursor, Int(sector.end - at))
                // Write-protected sectors: no error, nothing written (AN3156 §5.3).
                if !config.protectedSectors.contains(sectorIndex) {
                    mcu.memory.program(index, offset: offset + cursor, Array(bytes[cursor..<cursor + run]))
                }
                cursor += run
            }
            return DFUStatusCode.ok
        }
        if region.map.name.hasPrefix("OTP") {
            mcu.memory.program(index, offset: offset, bytes)
        } else {
            mcu.memory.replace(index, offset: offset, bytes)
        }
        return DFUStatusCode.ok
    }
}
