public import BootImages
public import USBModel

/// The SoC family the virtual board emulates.
public enum VirtualSoC: String, Sendable, Hashable, CaseIterable, Codable {
    case mp15, mp13, mp25

    /// `@Device ID` of the product strings (reference §2.3).
    public var deviceID: UInt16 {
        switch self {
        case .mp15: 0x500
        case .mp13: 0x501
        case .mp25: 0x505
        }
    }

    /// The family an FSBL's STM32 header must fit.
    public var family: ChipFamily {
        switch self {
        case .mp15: .mp15
        case .mp13: .mp13
        case .mp25: .mp2
        }
    }
}

/// Which TF-A the board runs after the ROM (reference §B).
public enum TFAVariant: String, Sendable, Hashable, CaseIterable, Codable {
    /// Upstream TF-A: FIP only, phases 0x03 (and 0x02 on MP2).
    case upstream
    /// ST's v2.4 fork on MP15: asks for the FlashLayout (phase 0x00 on alt 0) before the SSBL.
    case stV24
    /// ST's v2.0/v2.2 fork: legacy USB stack, product string equal to the ROM's.
    case stLegacy
}

/// A fault to inject, named as the failure it reproduces (reference §E).
public enum FaultScenario: String, Sendable, Hashable, CaseIterable, Codable {
    case none
    /// TF-A detaches after the FIP and nothing enumerates (U-Boot never starts USB).
    case noUBoot = "no-uboot"
    /// U-Boot rejects the FlashLayout with a `Layout line …` message.
    case layoutRejected = "layout-rejected"
    /// TF-A's FIP ToC check fails on the SSBL phase.
    case fipHeaderBad = "fip-header-bad"
    /// A partition write fails in U-Boot (`DFU write error`).
    case writeError = "write-error"
    /// The ROM comes back after the DETACH to U-Boot (the port was reset or the board browned out).
    case resetAfterDetach = "reset-after-detach"
    /// String descriptors STALL for the first requests after each enumeration.
    case transientStrings = "transient-strings"
    /// The command alternate's name (phase 0xF1) STALLs for its first requests after each
    /// enumeration, more of them than a host retries one string read: one open of each stage
    /// cannot read it, the next one can.
    case alternateNameStalls = "alternate-name-stalls"
    /// One GETSTATUS during a download STALLs.
    case getStatusStall = "getstatus-stall"
    /// The board disappears in the middle of a partition download.
    case vanishMidPartition = "vanish-mid-partition"
    /// The MP15 ROM drops off the bus at the FSBL's manifestation, as after a rejected FSBL.
    case vanishAfterFSBL = "vanish-after-fsbl"
    /// The serial string differs between stages.
    case serialChanges = "serial-changes"
    /// A storage TF-A was sent over USB: after the FSBL nothing TF-A-like appears.
    case bootInterfaceUnsupported = "boot-interface-unsupported"
    /// After TF-A's DETACH only failed enumerations happen (kernel `error -71` / `-110`).
    case enumerationErrors = "enumeration-errors"
    /// U-Boot enumerates on a neighbouring port (a hub or a VM re-mapped it), same serial.
    case movesPort = "moves-port"
    /// As `moves-port`, and U-Boot announces another serial (its `serial#` differs): nothing ties
    /// the new device to the board except timing.
    case movesPortNewSerial = "moves-port-new-serial"
    /// U-Boot's storage keeps a wrong byte every 64 KiB of user partitions (ID ≥ 0x10) while
    /// every DFU request succeeds: only a readback can tell.
    case storesWrongBytes = "stores-wrong-bytes"
    /// U-Boot without `LEGACY_IMAGE_FORMAT`: a script image on the FlashLayout alternate is
    /// parsed as a layout and rejected (`Layout: invalid FlashLayout`).
    case scriptRejected = "script-rejected"
    /// U-Boot without fastboot: `fastboot usb 0` is an unknown command (the script falls back
    /// to `stm32prog usb 0`).
    case noFastboot = "no-fastboot"
    /// U-Boot's fastboot flashes the other MMC (`getvar:mmcdev` names it).
    case fastbootOtherMMC = "fastboot-other-mmc"
    /// The ROM refuses every FSBL at its manifestation (dfuERROR, errVERIFY), as a closed chip
    /// does with an image it cannot authenticate.
    case fsblRejected = "fsbl-rejected"

    /// One line for `flash --list-scenarios`: what the virtual board does wrong.
    public var summary: String {
        switch self {
        case .none: "no fault: the board flashes normally"
        case .noUBoot: "TF-A detaches after the FIP and nothing enumerates (U-Boot never starts USB)"
        case .layoutRejected: "U-Boot rejects the FlashLayout with a 'Layout line …' message"
        case .fipHeaderBad: "TF-A's FIP header check fails on the SSBL phase"
        case .writeError: "a partition write fails in U-Boot (DFU write error)"
        case .resetAfterDetach: "the ROM comes back after the DETACH to U-Boot (port reset or brown-out)"
        case .transientStrings: "string descriptors STALL for the first requests after each enumeration"
        case .alternateNameStalls:
            "the command alternate's name STALLs after each enumeration for longer than one read retries"
        case .getStatusStall: "one GETSTATUS during a download STALLs"
        case .vanishMidPartition:
            "the board disappears in the middle of a partition download (at block --vanish-block, default 1)"
        case .vanishAfterFSBL: "the ROM drops off the bus when the FSBL manifests, as after a rejected FSBL"
        case .serialChanges: "the serial string differs between stages"
        case .bootInterfaceUnsupported: "a storage TF-A was sent over USB: nothing TF-A-like appears after the FSBL"
        case .enumerationErrors: "after TF-A's DETACH only failed enumerations happen (kernel error -71 / -110)"
        case .movesPort: "U-Boot enumerates on a neighbouring port (hub or VM re-mapping), same serial"
        case .movesPortNewSerial: "as moves-port, and U-Boot announces another serial"
        case .storesWrongBytes: "U-Boot stores a wrong byte every 64 KiB of user partitions; only a readback tells"
        case .scriptRejected:
            "U-Boot without legacy images parses the fastboot hand-off script as a layout and rejects it"
        case .noFastboot: "U-Boot has no fastboot: the hand-off script falls back to stm32prog (DFU)"
        case .fastbootOtherMMC: "U-Boot's fastboot flashes the other MMC device (getvar:mmcdev names it)"
        case .fsblRejected:
            "the ROM refuses the FSBL at its manifestation (errVERIFY), as a closed chip does an unauthenticated image"
        }
    }
}

/// Durations and throughputs of the virtual board, on the injected clock. Reference §C.9 says the
/// real values are UNCONFIRMED; the defaults are plausible orders of magnitude.
public struct BoardTiming: Sendable, Hashable {
    /// Fixed cost of every control transfer (SETUP + status stages, scheduling).
    public var controlOverhead: Duration
    /// EP0 data throughput in bytes per second, per stage.
    public var romBytesPerSecond: Int64
    public var tfaBytesPerSecond: Int64
    public var ubootBytesPerSecond: Int64
    /// Storage write throughput of U-Boot (buffer drains), bytes per second.
    public var storageBytesPerSecond: Int64
    /// Storage read throughput (U-Boot filling its DFU buffer for an UPLOAD), bytes per second.
    /// SD cards and eMMC read several times faster than they write; 80 MB/s is UNCONFIRMED.
    public var storageReadBytesPerSecond: Int64
    /// Erase throughput (D lines, RawImage), bytes per second.
    public var eraseBytesPerSecond: Int64
    /// Writing a GPT.
    public var gptWrite: Duration
    /// Time a legacy-stack device (ROM) stays dfuDNBUSY per block; announced in bwPollTimeout.
    public var romBlockStore: Duration
    /// DETACH → disconnect (TF-A: 100 µs; U-Boot: its grace loop).
    public var detachToDisconnect: Duration
    /// MP13/MP2: ROM DETACH → TF-A enumerates.
    public var romToTFA: Duration
    /// MP2: TF-A DDR phase DETACH → TF-A enumerates again.
    public var tfaReconnect: Duration
    /// TF-A DETACH → U-Boot enumerates (loads the FIP, boots U-Boot).
    public var tfaToUBoot: Duration
    /// U-Boot enumeration 1 DETACH → enumeration 2, not counting erases and GPT.
    public var ubootReenumeration: Duration
    /// U-Boot reset → ROM enumerates.
    public var resetToROM: Duration

    public init(
        controlOverhead: Duration = .microseconds(125), romBytesPerSecond: Int64 = 1_000_000,
        tfaBytesPerSecond: Int64 = 8_000_000, ubootBytesPerSecond: Int64 = 20_000_000,
        storageBytesPerSecond: Int64 = 20_000_000, eraseBytesPerSecond: Int64 = 500_000_000,
        gptWrite: Duration = .milliseconds(50), romBlockStore: Duration = .milliseconds(2),
        detachToDisconnect: Duration = .milliseconds(10), romToTFA: Duration = .milliseconds(1500),
        tfaReconnect: Duration = .milliseconds(1500), tfaToUBoot: Duration = .seconds(3),
        ubootReenumeration: Duration = .seconds(1), resetToROM: Duration = .seconds(2),
        storageReadBytesPerSecond: Int64 = 80_000_000
    ) {
        self.storageReadBytesPerSecond = storageReadBytesPerSecond
        self.controlOverhead = controlOverhead
        self.romBytesPerSecond = romBytesPerSecond
        self.tfaBytesPerSecond = tfaBytesPerSecond
        self.ubootBytesPerSecond = ubootBytesPerSecond
        self.storageBytesPerSecond = storageBytesPerSecond
        self.eraseBytesPerSecond = eraseBytesPerSecond
        self.gptWrite = gptWrite
        self.romBlockStore = romBlockStore
        self.detachToDisconnect = detachToDisconnect
        self.romToTFA = romToTFA
        self.tfaReconnect = tfaReconnect
        self.tfaToUBoot = tfaToUBoot
        self.ubootReenumeration = ubootReenumeration
        self.resetToROM = resetToROM
    }

    /// Everything instantaneous (throughputs "infinite"), for tests that only care about order.
    public static let zero = BoardTiming(
        controlOverhead: .zero, romBytesPerSecond: 0, tfaBytesPerSecond: 0, ubootBytesPerSecond: 0,
        storageBytesPerSecond: 0, eraseBytesPerSecond: 0, gptWrite: .zero, romBlockStore: .zero,
        detachToDisconnect: .zero, romToTFA: .zero, tfaReconnect: .zero, tfaToUBoot: .zero,
        ubootReenumeration: .zero, resetToROM: .zero, storageReadBytesPerSecond: 0)

    /// The same board `speed` times faster (every delay divided, every throughput multiplied), so
    /// that demos and tests of the station run in real time without waiting a whole flash per plug-in.
    public func scaled(by speed: Double) -> BoardTiming {
        guard speed > 0, speed != 1 else { return self }
        func time(_ duration: Duration) -> Duration { duration / speed }
        func rate(_ value: Int64) -> Int64 { value == 0 ? 0 : Int64((Double(value) * speed).rounded()) }
        return BoardTiming(
            controlOverhead: time(controlOverhead), romBytesPerSecond: rate(romBytesPerSecond),
            tfaBytesPerSecond: rate(tfaBytesPerSecond), ubootBytesPerSecond: rate(ubootBytesPerSecond),
            storageBytesPerSecond: rate(storageBytesPerSecond), eraseBytesPerSecond: rate(eraseBytesPerSecond),
            gptWrite: time(gptWrite), romBlockStore: time(romBlockStore), detachToDisconnect: time(detachToDisconnect),
            romToTFA: time(romToTFA), tfaReconnect: time(tfaReconnect), tfaToUBoot: time(tfaToUBoot),
            ubootReenumeration: time(ubootReenumeration), resetToROM: time(resetToROM),
            storageReadBytesPerSecond: rate(storageReadBytesPerSecond))
    }

    /// Time to move `bytes` at `rate` bytes per second (0 = instantaneous).
    static func transfer(_ bytes: Int, rate: Int64) -> Duration {
        guard rate > 0, bytes > 0 else { return .zero }
        return .nanoseconds(Int64(bytes) * 1_000_000_000 / rate)
    }
}

/// One storage device of the board (`mmc0`, `mmc1`, `nor0`, …).
public struct StorageDeviceConfiguration: Sendable, Hashable {
    /// The FlashLayout IP name: `mmc0`, `nor0`, `nand0`, `spi-nand0`.
    public var name: String
    public var size: UInt64
    public var eraseSize: UInt64
    /// eMMC hardware boot partitions (boot1/boot2) of this size; nil for SD cards and MTD.
    public var bootPartitionSize: UInt64?

    public init(name: String, size: UInt64 = 4 << 30, eraseSize: UInt64 = 512, bootPartitionSize: UInt64? = nil) {
        self.name = name
        self.size = size
        self.eraseSize = eraseSize
        self.bootPartitionSize = bootPartitionSize
    }

    /// An SD card: 512-byte erase group, no boot partitions.
    public static func sdCard(_ name: String = "mmc0", size: UInt64 = 4 << 30) -> Self {
        Self(name: name, size: size, eraseSize: 512)
    }

    /// An eMMC: 512 KiB erase group, two 4 MiB boot partitions.
    public static func eMMC(_ name: String = "mmc1", size: UInt64 = 4 << 30, bootPartitionSize: UInt64 = 4 << 20)
        -> Self
    {
        Self(name: name, size: size, eraseSize: 512 << 10, bootPartitionSize: bootPartitionSize)
    }
}

/// Everything that makes one virtual board.
public struct BoardConfiguration: Sendable {
    public var soc: VirtualSoC
    public var tfaVariant: TFAVariant
    /// 24 upper-case hex digits (the chip UID as every stage prints it).
    public var serial: String
    public var port: PortPath
    /// Folder of the storage images (`<ip>.img`, `<ip>-boot1.img`, …); created if missing.
    public var storageDirectory: String
    public var storage: [StorageDeviceConfiguration]
    /// U-Boot offers the OTP alternate (0xF2).
    public var otpEnabled: Bool
    /// U-Boot offers the PMIC alternate (0xF4).
    public var pmicEnabled: Bool
    /// bcdDFUVersion of the ROM (0x0110, or 0x011A for some early ROMs — UNCONFIRMED, §A.3).
    public var romDFUVersion: UInt16
    /// wTransferSize of the ROM (1024 in every log; other values exercise the host's rounding).
    public var romTransferSize: UInt16
    /// MP13/MP25 ROM: index of the `virtual` alternate (UNCONFIRMED, §A.2); FSBL is alt 0.
    public var romVirtualAlternate: UInt8
    /// MP25: after the ROM's DETACH the identity changes in place instead of a re-enumeration
    /// (UNCONFIRMED, §A.4).
    public var mp25ROMChangesInPlace: Bool
    /// MP15: the GETSTATUS right after FSBL manifestation fails with an I/O error (DH log).
    public var mp15ROMStatusFailsAfterFSBL: Bool
    public var timing: BoardTiming
    public var fault: FaultScenario
    /// transient-strings: how many string requests STALL after each enumeration.
    public var transientStringFailures: Int
    /// alternate-name-stalls: how many requests for the command alternate's name STALL after each
    /// enumeration (the default outlasts USBHost's 10 attempts plus the kernel's own read).
    public var alternateNameFailures = 12
    /// alternate-name-stalls: the stages whose enumerations do it.
    public var alternateNameStallStages = Set(FirmwareStage.allCases)
    /// U-Boot's DFU buffer (`CONFIG_SYS_DFU_DATA_BUF_SIZE`); drained to storage when full.
    public var ubootBufferSize: Int
    /// Link speed of the port.
    public var speed: USBSpeed
    /// vanish-mid-partition: the data block (counted from 0) of the first partition at which the
    /// board drops off the bus.
    public var vanishBlock: Int = 1
    /// U-Boot's fastboot (the fast path of `flash --transport fastboot`).
    public var fastboot = FastbootSettings()
    /// The ROM keeps the part of an FSBL it received when DFU_ABORT ends the download, and a new
    /// download goes on after it (the default: it starts over). Which one a real ROM does is
    /// UNCONFIRMED (its USB stack is not public); this models the worse case.
    public var romKeepsFSBLAfterAbort = false
    /// Where TF-A's FIP download buffer starts (`DWL_BUFFER_BASE`); nil: TF-A's default
    /// (0xC7000000 on MP15/MP13, 0x87000000 on MP2). The MP2 DDR firmware's buffer does not move.
    public var tfaBufferBase: UInt32?

    public init(
        soc: VirtualSoC = .mp15, tfaVariant: TFAVariant = .upstream, serial: String = "0029002A4C4250110038344D",
        port: PortPath = PortPath(bus: 1, ports: [2]), storageDirectory: String,
        storage: [StorageDeviceConfiguration] = [.sdCard("mmc0"), .eMMC("mmc1")], otpEnabled: Bool = true,
        pmicEnabled: Bool = true, romDFUVersion: UInt16 = 0x0110, romTransferSize: UInt16 = 1024,
        romVirtualAlternate: UInt8? = nil,
        mp25ROMChangesInPlace: Bool = false, mp15ROMStatusFailsAfterFSBL: Bool = false, timing: BoardTiming = .init(),
        fault: FaultScenario = .none, transientStringFailures: Int = 3, ubootBufferSize: Int = 8 << 20,
        speed: USBSpeed = .high
    ) {
        self.soc = soc
        self.tfaVariant = tfaVariant
        self.serial = serial
        self.port = port
        self.storageDirectory = storageDirectory
        self.storage = storage
        self.otpEnabled = otpEnabled
        self.pmicEnabled = pmicEnabled
        self.romDFUVersion = romDFUVersion
        self.romTransferSize = romTransferSize
        self.romVirtualAlternate = romVirtualAlternate ?? 1
        self.mp25ROMChangesInPlace = mp25ROMChangesInPlace
        self.mp15ROMStatusFailsAfterFSBL = mp15ROMStatusFailsAfterFSBL
        self.timing = timing
        self.fault = fault
        self.transientStringFailures = transientStringFailures
        self.ubootBufferSize = ubootBufferSize
        self.speed = speed
    }
}
