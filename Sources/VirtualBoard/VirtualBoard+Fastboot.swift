import Decompression
import FlashLayout
import GPT
import UBootScript
import USBModel

/// The fast path of the virtual U-Boot (fastboot reference §1, §6): the script received on the
/// FlashLayout alternate runs at the DETACH in `UBootShell`; `fastboot usb 0` enumerates the
/// fastboot gadget, `stm32prog usb 0` enumeration 1 again.
extension VirtualBoard {
    /// `CONFIG_FASTBOOT_FLASH_MMC_DEV` of this board's U-Boot.
    var fastbootMMCDevice: Int {
        let stock = configuration.fastboot.mmcDevice ?? (configuration.soc == .mp13 ? 0 : 1)
        return configuration.fault == .fastbootOtherMMC ? (stock == 0 ? 1 : 0) : stock
    }

    /// U-Boot's environment after boot: `serial#` from the chip UID, `board`, and the
    /// `fastboot.mmcdev` ST's board code sets (downstream only).
    func resetUBootEnvironment() {
        ubootEnv = [
            "serial#": configuration.fastboot.environmentSerial ?? configuration.serial, "board": "stm32mp1",
            "fastboot.mmcdev": String(fastbootMMCDevice),
        ]
    }

    func recordFastboot(_ command: String) { fastbootCommands.append(command) }

    /// `cmd_source_script()` after `stm32prog` returned: check the image, run the script.
    func runScript(_ image: [UInt8]) {
        let loadAddress = configuration.soc == .mp25 ? "84000000" : "c2000000"
        console("## Executing script at \(loadAddress)")
        let script: LegacyScriptImage
        do {
            script = try LegacyScriptImage.decode(image)
        } catch {
            console("Bad \(error)")
            return
        }
        var shell = UBootShell(
            machine: UBootShell.Machine(
                env: ubootEnv, fastbootBuiltIn: configuration.fastboot.builtIn && configuration.fault != .noFastboot,
                gptWrite: { [unowned self] device, partitions in gptWrite(device: device, partitions: partitions) },
                mmc: { [unowned self] arguments in mmcCommand(["mmc"] + arguments) },
                mmcRead: { [unowned self] device, part, block, count in
                    // Past the end (or no such device/partition) the read fails, as `blk_dread()`.
                    let bytes = try? storage.read(
                        device: "mmc\(device)", hardwarePartition: part == 0 ? nil : part, offset: block * 512,
                        length: count * 512)
                    return bytes?.count == count * 512 ? bytes : nil
                },
                crc32: { ZlibCRC32.checksum($0) },
                console: { [unowned self] line in console(line) }))
        let outcome = shell.run(script.script)
        ubootEnv = shell.machine.env
        runningScript = shell
        startGadget(outcome)
    }

    /// Enumerates the gadget a script started, or leaves U-Boot at its prompt.
    func startGadget(_ outcome: UBootShell.Outcome, busy: Duration = .zero) {
        let delay = configuration.timing.detachToDisconnect + configuration.timing.ubootReenumeration + busy
        switch outcome {
        case .fastboot:
            schedule(after: delay) { [unowned self] in
                enumerationCount += 1
                let device = FastbootGadget(board: self, session: enumerationCount)
                gadget = device
                ubootDetachPending = false
                return .attach(port: port, device: device)
            }
        case .stm32prog:
            enumerate(after: delay) { [unowned self] in UBootFirmware.boot(board: self, ramLayout: nil) }
        case .finished, .syntaxError:
            runningScript = nil
            console("=> ")
        }
    }

    /// The fastboot loop ended: `continue` leaves U-Boot at its prompt; `reboot` resets into the
    /// ROM (the boot pins still select USB).
    func fastbootEnds(reboot: Bool) {
        if reboot {
            console("resetting ...")
            powerCycleToROM(after: configuration.timing.resetToROM)
        } else {
            disconnect(after: configuration.timing.detachToDisconnect)
            // `fastboot usb 0` returns 0; the script goes on (ours: `stm32prog usb 0`).
            guard var shell = runningScript else {
                console("=> ")
                return
            }
            shell.machine.env = ubootEnv
            shell.machine.bytesRead = 0
            let outcome = shell.resume()
            ubootEnv = shell.machine.env
            // What the script read back (the CRC stage of `--verify`) takes storage time.
            let busy = BoardTiming.transfer(shell.machine.bytesRead, rate: configuration.timing.storageBytesPerSecond)
            shell.machine.memory = [:]
            runningScript = shell
            startGadget(outcome, busy: busy)
        }
    }

    /// `gpt write mmc <device> "<partitions>"` (U-Boot's `set_gpt_info()` syntax): nil on success,
    /// else the error U-Boot prints.
    func gptWrite(device index: Int, partitions: String) -> String? {
        let name = "mmc\(index)"
        guard let size = storage.size(device: name) else { return "MMC Device \(index) not found" }
        let block: UInt64 = 512
        var entries: [GPTPartitionEntry] = []
        var next = 34 * block
        // The last usable block (`gpt_fill_header()`: lba - 34): where `size=-` ends.
        let last = (size / block - 34) * block
        for text in partitions.split(separator: ";") where !text.isEmpty {
            var fields: [String: String] = [:]
            var bootable = false
            for field in text.split(separator: ",") {
                let pair = field.split(separator: "=", maxSplits: 1).map(String.init)
                if pair.count == 2 { fields[pair[0]] = pair[1] } else if pair.first == "bootable" { bootable = true }
            }
            guard let partitionName = fields["name"], let sizeText = fields["size"] else {
                return "Writing GPT: error!"
            }
            let start = fields["start"].flatMap(Self.number) ?? next
            let length: UInt64
            if sizeText == "-" {
                guard last + block > start else { return "Writing GPT: error!" }
                length = last + block - start
            } else {
                guard let value = Self.number(sizeText) else { return "Writing GPT: error!" }
                length = value
            }
            let typeGUID = fields["type"].flatMap(Self.typeGUID) ?? GUID(GPTTypes.linuxData)!
            let unique = fields["uuid"].flatMap(GUID.init) ?? GUID.random()
            guard start % block == 0, length >= block, start + length <= last + block else {
                return "Writing GPT: error!"
            }
            var entry = GPTPartitionEntry(
                name: partitionName, typeGUID: typeGUID, uniqueGUID: unique, firstLBA: start / block,
                lastLBA: (start + length) / block - 1)
            entry.legacyBIOSBootable = bootable
            entries.append(entry)
            next = start + length
        }
        let disk = GPTDisk(
            totalSectors: size / block, diskGUID: GUID.random(), entries: entries, sectorSize: Int(block))
        do {
            try storage.writeGPT(disk, device: name)
        } catch {
            return "Writing GPT: error!"
        }
        console("Writing GPT: success!")
        return nil
    }

    /// `ustrtoull`: hex with 0x, decimal, optional K/M/G suffix.
    static func number(_ text: String) -> UInt64? {
        var digits = Substring(text)
        var multiplier: UInt64 = 1
        switch digits.last {
        case "K", "k": multiplier = 1 << 10
        case "M", "m": multiplier = 1 << 20
        case "G", "g": multiplier = 1 << 30
        default: break
        }
        if multiplier > 1 { digits = digits.dropLast() }
        let value =
            digits.hasPrefix("0x") || digits.hasPrefix("0X")
            ? UInt64(digits.dropFirst(2), radix: 16) : UInt64(digits, radix: 10)
        return value.map { $0 * multiplier }
    }

    /// A `type=` value: a GUID or one of U-Boot's shortcuts.
    static func typeGUID(_ text: String) -> GUID? {
        switch text {
        case "linux": GUID(GPTTypes.linuxData)
        case "system": GUID(GPTTypes.efiSystem)
        case "u-boot-env": GUID(GPTTypes.ubootEnv)
        default: GUID(text)
        }
    }

    /// `mmc partconf <dev> <ack> <part> <access>` and `mmc bootbus <dev> <width> <reset> <mode>`:
    /// recorded per device (persistent eMMC settings on real hardware).
    func mmcCommand(_ arguments: [String]) -> Bool {
        guard arguments.count == 6, arguments[0] == "mmc", let device = Int(arguments[2]),
            storage.device(named: "mmc\(device)")?.bootPartitionSize != nil
        else {
            console("\(arguments.joined(separator: " ")): not supported")
            return false
        }
        mmcBootSettings[device, default: [:]][arguments[1]] = Array(arguments[3...])
        console(arguments.joined(separator: " "))
        return true
    }
}
