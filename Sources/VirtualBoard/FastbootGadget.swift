import AndroidSparse
import GPT
import USBModel

/// What the virtual U-Boot's fastboot is built with (ST's defconfigs, fastboot reference §2.2).
public struct FastbootSettings: Sendable, Hashable {
    /// `CONFIG_USB_FUNCTION_FASTBOOT`: false makes `fastboot` an unknown command.
    public var builtIn: Bool
    /// `CONFIG_FASTBOOT_FLASH_MMC_DEV`; nil = the SoC's stock value (MP13 0 = SD, MP15/MP25 1 = eMMC).
    public var mmcDevice: Int?
    /// `CONFIG_FASTBOOT_BUF_SIZE`, what `getvar:max-download-size` answers (32 MiB on ST). Tests
    /// use a few KiB so that tiny images go in several sparse pieces.
    public var maxDownloadSize: Int
    /// Bulk throughput of the gadget (USB → DDR buffer), bytes per second; 0 = instantaneous.
    public var bytesPerSecond: Int64
    /// An environment `serial#` other than the chip UID (a saved U-Boot environment that sets
    /// it): fastboot then reports another serial than the DFU stages.
    public var environmentSerial: String?

    public init(
        builtIn: Bool = true, mmcDevice: Int? = nil, maxDownloadSize: Int = 0x0200_0000,
        bytesPerSecond: Int64 = 25_000_000
    ) {
        self.builtIn = builtIn
        self.mmcDevice = mmcDevice
        self.maxDownloadSize = maxDownloadSize
        self.bytesPerSecond = bytesPerSecond
    }
}

/// U-Boot's fastboot gadget (`drivers/usb/gadget/f_fastboot.c`, `drivers/fastboot/`) as ST's
/// U-Boot builds it: 0483:0afb, one FF/42/03 interface with two bulk endpoints; commands of at
/// most 64 bytes, answers OKAY/FAIL/DATA; `download` into one buffer, `flash` by GPT name, eMMC
/// boot partition name or the whole user area, raw or Android sparse (all four chunk types);
/// `erase`, `getvar` (env `fastboot.<name>` first), `oem format/partconf/bootbus`, `reboot`,
/// `continue`. The answer to `flash`/`erase` comes after the storage time.
final class FastbootGadget: USBBulkDeviceModel {
    unowned let board: VirtualBoard
    let session: Int
    let mmcDevice: Int
    static let outEndpoint: UInt8 = 0x01
    static let inEndpoint: UInt8 = 0x81

    private var buffer: [UInt8] = []
    private var expected = 0
    private var replies: [(bytes: [UInt8], readyAt: Duration)] = []
    private enum Ending { case reboot, leave }
    private var writeFaultDone = false
    private var endAfterReply: Ending?
    /// Time the gadget is busy until (download data arriving, a storage write).
    private var busyUntil: Duration = .zero

    init(board: VirtualBoard, session: Int) {
        self.board = board
        self.session = session
        mmcDevice = board.fastbootMMCDevice
    }

    var settings: FastbootSettings { board.configuration.fastboot }
    var deviceName: String { "mmc\(mmcDevice)" }

    // MARK: USBDeviceModel

    var deviceDescriptor: DeviceDescriptor {
        DeviceDescriptor(maxPacketSize0: 64, vendorID: 0x0483, productID: 0x0AFB, bcdDevice: 0x0200)
    }

    var configuration: ConfigurationDescriptor {
        let packet: UInt16 = speed == .full ? 64 : 512
        func endpoint(_ address: UInt8) -> [UInt8] {
            [7, DescriptorType.endpoint, address, 0x02, UInt8(packet & 0xFF), UInt8(packet >> 8), 0]
        }
        let interface = InterfaceAltSetting(
            interfaceNumber: 0, alternateSetting: 0, interfaceClass: 0xFF, interfaceSubClass: 0x42,
            interfaceProtocol: 0x03, interfaceStringIndex: 4,
            extra: [endpoint(Self.inEndpoint), endpoint(Self.outEndpoint)])
        return ConfigurationDescriptor(configurationValue: 1, attributes: 0xC0, maxPower: 0x32, interfaces: [interface])
    }

    var speed: USBSpeed { board.configuration.speed }

    func stringDescriptor(index: UInt8, languageID: UInt16) -> [UInt8]? {
        switch index {
        case 0: StringDescriptor.languageTable
        case 1: StringDescriptor.encode(StageIdentity.manufacturer)
        case 2: StringDescriptor.encode("USB download gadget")
        case 3: StringDescriptor.encode(board.ubootEnv["serial#"] ?? board.configuration.serial)
        case 4: StringDescriptor.encode("Android Fastboot")
        default: nil
        }
    }

    func setInterface(_ interface: UInt8, alternate: UInt8) -> Bool { interface == 0 && alternate == 0 }
    func control(_ setup: SetupPacket, data: [UInt8]) -> DeviceControlReply { .stall }
    func busReset() {}

    // MARK: Bulk

    func bulkOut(endpoint: UInt8, data: [UInt8]) -> DeviceControlReply {
        guard endpoint == Self.outEndpoint else { return .stall }
        let now = board.now
        if expected > 0 {
            let take = min(data.count, expected - buffer.count)
            buffer += data.prefix(take)
            let latency = BoardTiming.transfer(data.count, rate: settings.bytesPerSecond)
            busyUntil = max(busyUntil, now) + latency
            if buffer.count == expected {
                expected = 0
                board.console("downloading of \(buffer.count) bytes finished")
                // `fastboot_data_complete()`: `env_set_hex("filesize", image_size)`.
                board.ubootEnv["filesize"] = String(buffer.count, radix: 16)
                reply("OKAY")
            }
            return DeviceControlReply(.ok([]), latency: latency)
        }
        let command = String(decoding: data.prefix(64), as: UTF8.self)
        board.recordFastboot(command)
        handle(command)
        return .ack
    }

    func bulkIn(endpoint: UInt8, maxLength: Int) -> DeviceControlReply {
        guard endpoint == Self.inEndpoint else { return .stall }
        guard !replies.isEmpty else { return DeviceControlReply(.noAnswer) }
        let next = replies.removeFirst()
        if replies.isEmpty, let ending = endAfterReply {
            endAfterReply = nil
            board.fastbootEnds(reboot: ending == .reboot)
        }
        return DeviceControlReply(
            .ok(Array(next.bytes.prefix(maxLength))), latency: max(.zero, next.readyAt - board.now))
    }

    private func reply(_ text: String, after delay: Duration = .zero) {
        busyUntil = max(busyUntil, board.now) + delay
        replies.append((Array(text.utf8.prefix(64)), busyUntil))
    }

    // MARK: Commands (fb_command.c)

    private func handle(_ command: String) {
        let (name, parameter) = split(command)
        switch name {
        case "getvar": reply(getvar(parameter))
        case "download": download(parameter)
        case "flash": flash(parameter)
        case "erase": erase(parameter)
        case "oem format": oemFormat()
        case "oem partconf": oemMMC("partconf", parameter)
        case "oem bootbus": oemMMC("bootbus", parameter)
        case "reboot":
            // The reset happens when the OKAY has gone out (`compl_do_reset`).
            reply("OKAY")
            endAfterReply = .reboot
        case "continue":
            reply("OKAY")
            endAfterReply = .leave
        default:
            reply("FAILunrecognized command")
        }
    }

    /// `fastboot_handle_command()` splits at the first `:`.
    private func split(_ command: String) -> (String, String) {
        guard let colon = command.firstIndex(of: ":") else { return (command, "") }
        return (String(command[..<colon]), String(command[command.index(after: colon)...]))
    }

    private func getvar(_ name: String) -> String {
        if let value = board.ubootEnv["fastboot.\(name)"] { return "OKAY\(value)" }
        switch name {
        case "version": return "OKAY0.4"
        case "version-bootloader": return "OKAYU-Boot 2023.10-stm32mp-r2"
        case "max-download-size", "downloadsize": return "OKAY0x" + hex8(settings.maxDownloadSize)
        case "serialno": return "OKAY" + (board.ubootEnv["serial#"] ?? "")
        case "product": return "OKAY" + (board.ubootEnv["board"] ?? "")
        default:
            if name.hasPrefix("partition-size:") {
                guard let target = resolve(String(name.dropFirst("partition-size:".count))) else {
                    return "FAILno such partition"
                }
                let size = String(target.size, radix: 16)
                return "OKAY0x" + String(repeating: "0", count: max(0, 16 - size.count)) + size
            }
            if name.hasPrefix("partition-type:") {
                return resolve(String(name.dropFirst("partition-type:".count))) == nil
                    ? "FAILno such partition" : "OKAYraw"
            }
            return "FAILVariable not implemented"
        }
    }

    private func download(_ parameter: String) {
        guard let size = Int(parameter, radix: 16) else {
            reply("FAILfailed to parse size")
            return
        }
        guard size > 0 else {
            reply("FAILExpected nonzero image size")
            return
        }
        guard size <= settings.maxDownloadSize else {
            reply("FAIL" + parameter)
            return
        }
        buffer = []
        buffer.reserveCapacity(size)
        expected = size
        board.console("Starting download of \(size) bytes")
        reply("DATA" + hex8(size))
    }

    /// Where a `flash`/`erase` name lands (fb_mmc.c priority order): boot hwparts, the whole
    /// user area, then the GPT partition of that name on the compile-time device.
    struct Target {
        var hardwarePartition: Int?
        var offset: UInt64
        var size: UInt64
    }

    private func resolve(_ name: String) -> Target? {
        guard let device = board.storage.device(named: deviceName) else { return nil }
        if let boot = device.bootPartitionSize {
            if name == "\(deviceName)boot0" { return Target(hardwarePartition: 1, offset: 0, size: boot) }
            if name == "\(deviceName)boot1" { return Target(hardwarePartition: 2, offset: 0, size: boot) }
        }
        if name == deviceName { return Target(hardwarePartition: nil, offset: 0, size: device.size) }
        guard let path = try? board.storage.prepareImage(device: deviceName),
            let disk = try? GPTDisk.read(from: path),
            let entry = disk.entries.first(where: { $0.name == name })
        else { return nil }
        let sector = UInt64(disk.sectorSize)
        return Target(
            hardwarePartition: nil, offset: entry.firstLBA * sector, size: (entry.lastLBA - entry.firstLBA + 1) * sector
        )
    }

    private func flash(_ name: String) {
        guard let target = resolve(name) else {
            board.console("cannot find partition: '\(name)'")
            reply("FAILno such partition")
            return
        }
        // write-error: the first write to a user partition (after the boot stages) fails.
        if board.configuration.fault == .writeError, !writeFaultDone, target.hardwarePartition == nil,
            target.offset >= 0x0040_0000
        {
            writeFaultDone = true
            board.console("mmc write failed")
            reply("FAILfailed writing to device")
            return
        }
        let data = buffer
        var written = 0
        do {
            if SparseDecoder.isSparse(data) {
                board.console("Flashing sparse image at offset \(target.offset / 512)")
                written = try writeSparse(data, to: target)
            } else {
                guard UInt64(data.count) <= target.size else {
                    reply("FAILtoo large for partition")
                    return
                }
                board.console("Flashing Raw Image")
                try board.storage.write(
                    device: deviceName, hardwarePartition: target.hardwarePartition, offset: target.offset,
                    bytes: kept(data, at: 0, in: target))
                written = data.count
            }
        } catch let error as FlashFault {
            reply("FAIL" + error.message)
            return
        } catch {
            reply("FAILflash write failure")
            return
        }
        board.console("........ wrote \(written) bytes to '\(name)'")
        reply("OKAY", after: BoardTiming.transfer(written, rate: board.configuration.timing.storageBytesPerSecond))
    }

    struct FlashFault: Error { var message: String }

    /// What the medium keeps of `bytes` written at `start` of `target`: stores-wrong-bytes
    /// changes a byte every 64 KiB of user partitions past the boot stages (every `flash`
    /// still answers OKAY; only a readback tells).
    private func kept(_ bytes: [UInt8], at start: UInt64, in target: Target) -> [UInt8] {
        guard board.configuration.fault == .storesWrongBytes, target.hardwarePartition == nil,
            target.offset >= 0x0040_0000
        else { return bytes }
        return UBootFirmware.wrongByteEvery64K(bytes, start: start)
    }

    /// `write_sparse_image()`: RAW written, FILL written through a fill buffer, DONT_CARE
    /// skipped, CRC32 ignored; nothing may pass the partition's end.
    private func writeSparse(_ data: [UInt8], to target: Target) throws -> Int {
        let sparse: SparseDecoder
        do {
            sparse = try SparseDecoder(data)
        } catch .malformed(let why) {
            throw FlashFault(message: why)
        } catch {
            throw FlashFault(message: "\(error)")
        }
        let blockSize = UInt64(sparse.blockSize)
        var written = 0
        func place(_ block: Int64, _ count: UInt64) throws -> UInt64 {
            let start = UInt64(block) * blockSize
            guard start + count <= target.size else {
                throw FlashFault(message: "Request would exceed partition size!")
            }
            return target.offset + start
        }
        for chunk in sparse.chunks {
            switch chunk {
            case .raw(let block, let range):
                let offset = try place(block, UInt64(range.count))
                try board.storage.write(
                    device: deviceName, hardwarePartition: target.hardwarePartition, offset: offset,
                    bytes: kept(Array(data[range]), at: offset - target.offset, in: target))
                written += range.count
            case .fill(let block, let blocks, let word):
                let total = UInt64(blocks) * blockSize
                var offset = try place(block, total)
                let pattern = (0..<4).map { UInt8(truncatingIfNeeded: word >> (8 * $0)) }
                let fill = [UInt8]((0..<(1 << 16)).map { pattern[$0 % 4] })
                var left = total
                while left > 0 {
                    let count = Int(min(left, UInt64(fill.count)))
                    try board.storage.write(
                        device: deviceName, hardwarePartition: target.hardwarePartition, offset: offset,
                        bytes: kept(Array(fill.prefix(count)), at: offset - target.offset, in: target))
                    offset += UInt64(count)
                    left -= UInt64(count)
                }
                written += Int(total)
            case .dontCare(let block, let blocks):
                _ = try place(block, UInt64(blocks) * blockSize)
            case .crc32:
                break
            }
        }
        return written
    }

    private func erase(_ name: String) {
        guard let target = resolve(name) else {
            reply("FAILno such partition")
            return
        }
        do {
            try board.storage.erase(
                device: deviceName, hardwarePartition: target.hardwarePartition, offset: target.offset,
                length: target.size)
        } catch {
            reply("FAILfailed to erase partition")
            return
        }
        board.console("........ erased \(target.size) bytes from '\(name)'")
        reply(
            "OKAY",
            after: BoardTiming.transfer(
                Int(clamping: target.size), rate: board.configuration.timing.eraseBytesPerSecond))
    }

    private func oemFormat() {
        guard let partitions = board.ubootEnv["partitions"] else {
            reply("FAILpartitions not set")
            return
        }
        if let error = board.gptWrite(device: mmcDevice, partitions: partitions) {
            reply("FAIL" + error)
        } else {
            reply("OKAY")
        }
    }

    private func oemMMC(_ verb: String, _ parameter: String) {
        // `mmc partconf %x %s 0` (access back to the user area) and `mmc bootbus %x %s`.
        let arguments =
            [verb, String(mmcDevice)] + parameter.split(separator: " ").map(String.init)
            + (verb == "partconf" ? ["0"] : [])
        reply(board.mmcCommand(["mmc"] + arguments) ? "OKAY" : "FAILCannot \(verb)")
    }

    private func hex8(_ value: Int) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }
}
