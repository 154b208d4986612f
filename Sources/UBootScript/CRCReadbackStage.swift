/// The verification stage of the hand-off script (`flash --transport fastboot --verify`).
///
/// U-Boot's fastboot on ST's configs has no upload and runs no commands (no `FASTBOOT_OEM_RUN`,
/// no UCmd), so the board itself checks what it stored: after the host ends fastboot with
/// `continue`, the script reads every written range back from the MMC into RAM (`mmc read`),
/// computes its CRC-32 (`crc32 ADDR LEN DEST`, `CMD_CRC32` is on by default), loads the
/// result into an environment variable (`setexpr.l fastboot.NAME *DEST`, `CMD_SETEXPR`, on by
/// default) and starts fastboot again, where the host reads each one with `getvar:NAME`
/// (`fastboot_getvar()` answers env `fastboot.NAME` first). Every construct is UNCONFIRMED on a
/// board; the sources read are listed in docs/flashing.md.
public struct CRCReadbackStage: Sendable, Hashable {
    /// One range the board reads back and checks: at most `chunk` bytes, so it fits the buffer.
    public struct Check: Sendable, Hashable {
        /// The layout line the range belongs to.
        public var lineID: UInt8
        /// 0: the user area; 1/2: eMMC boot partition 1/2 (`mmc dev N 1|2`).
        public var hardwarePartition: Int
        /// Bytes from the start of the partition's Binary.
        public var start: Int64
        public var length: Int64
        /// Where the Binary's byte 0 lies on the (hardware) partition.
        public var deviceOffset: UInt64

        public init(lineID: UInt8, hardwarePartition: Int, start: Int64, length: Int64, deviceOffset: UInt64) {
            self.lineID = lineID
            self.hardwarePartition = hardwarePartition
            self.start = start
            self.length = length
            self.deviceOffset = deviceOffset
        }

        public var range: Range<Int64> { start..<start + length }
    }

    /// The MMC index the ranges are on.
    public var mmcIndex: Int
    /// Free RAM for the reads: `CONFIG_FASTBOOT_BUF_ADDR`, unused once fastboot ended.
    public var bufferAddress: UInt64
    public var checks: [Check]

    public init(mmcIndex: Int, bufferAddress: UInt64, checks: [Check]) {
        self.mmcIndex = mmcIndex
        self.bufferAddress = bufferAddress
        self.checks = checks
    }

    /// The most bytes one check reads: ST's `CONFIG_FASTBOOT_BUF_SIZE` (32 MiB on MP13/15/25).
    public static let defaultChunk: Int64 = 0x0200_0000

    /// `CONFIG_FASTBOOT_BUF_ADDR` of ST's defconfigs: DDR base on MP13/MP15, 0x84000000 on MP2.
    public static func defaultBufferAddress(mp2: Bool) -> UInt64 { mp2 ? 0x8400_0000 : 0xC000_0000 }

    /// The `getvar` name of check `index` (env `fastboot.<name>`).
    public static func variable(_ index: Int) -> String { "vcrc\(index)" }

    /// The CRC-32 a `getvar` answer stands for. `crc32` stores its result big-endian
    /// (`crc32_wd_buf()`: `htonl`), `setexpr.l` loads it as a native (little-endian) word and
    /// `env_set_hex()` prints it as `%lx`, so the value comes back byte-swapped.
    public static func crc(fromAnswer text: String) -> UInt32? {
        let digits = text.hasPrefix("0x") ? String(text.dropFirst(2)) : text
        guard !digits.isEmpty, digits.count <= 8, let word = UInt32(digits, radix: 16) else { return nil }
        return word.byteSwapped
    }

    /// The commands, one chain per check: a failing `mmc read` leaves its variable unset, which
    /// the host reports as "not checked", never as a pass.
    public var text: String {
        let buffer = String(bufferAddress, radix: 16)
        var commands: [String] = []
        var selected: Int?
        for (index, check) in checks.enumerated() {
            if selected != check.hardwarePartition {
                commands.append("mmc dev \(mmcIndex) \(check.hardwarePartition)")
                selected = check.hardwarePartition
            }
            let firstBlock = (check.deviceOffset + UInt64(check.start)) / 512
            let blocks = (check.length + 511) / 512
            commands.append(
                "mmc read \(buffer) \(hex(firstBlock)) \(hex(UInt64(blocks))) && crc32 \(buffer) \(hex(UInt64(check.length))) \(buffer)"
                    + " && setexpr.l fastboot.\(Self.variable(index)) *\(buffer)")
        }
        if selected != nil, selected != 0 { commands.append("mmc dev \(mmcIndex) 0") }
        return commands.joined(separator: "; ")
    }

    private func hex(_ value: UInt64) -> String { String(value, radix: 16) }
}
