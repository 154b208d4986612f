import Foundation
import Testing

/// dfu-util and lsusb, unmodified, walk the emulated MP15 board through every stage in one
/// emulator session, the way a user without stm32mp-flash would: what they list at each stage is
/// the alternate strings of the protocol reference §3 (and §B.1, §C.3, §C.5).
@Suite struct DFUUtilStageWalkTests {
    @Test func dfuUtilWalksTheMP15BoardThroughEveryStage() async throws {
        let directory = try ShortTemporaryDirectory()
        let examples = try await makeExamples(in: directory)
        let layout = examples + "/mp15-sdcard.tsv"
        let script = directory.file("walk.sh")
        try stageWalkScript.write(toFile: script, atomically: true, encoding: .utf8)
        let result = try await run(
            try builtExecutable("stm32mp-board-emulator"),
            ["--soc", "mp15", "--", "sh", script, examples + "/mp15-sdcard", layout], in: directory,
            timeout: 120)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let sections = scriptSections(result.stdout)

        // §3 / §A.2: the MP15 ROM.
        let rom = [
            0: "@Partition0 /0x00/1*256Ke", 1: "@FSBL /0x01/1*1Me", 2: "@Partition2 /0x02/1*1Me",
            3: "@Partition3 /0x03/1*16Me", 4: "@Partition4 /0x04/1*16Me", 5: "@virtual /0xF1/1*512Ba",
        ]
        #expect(try listedAlternates(sections["rom"]) == rom)
        #expect(try interfaceStrings(sections["rom-lsusb"]) == rom)
        #expect(sections["rom-lsusb"]?.contains("DFU in HS Mode @Device ID /0x500") == true)

        // §A.4: TF-A keeps the ROM's session and the ROM's configuration (same string indices),
        // and republishes the ROM's alternates (§B.1), so dfu-util lists the same strings.
        #expect(try listedAlternates(sections["tfa"]) == rom)

        // §C.3: U-Boot's first enumeration.
        let flashLayout = [
            0: "@FlashLayout/0x00/1*256Ke", 1: "@virtual/0xf1/1*512Be", 2: "@OTP/0xf2/1*776Be",
            3: "@PMIC/0xf4/1*8Be",
        ]
        #expect(try listedAlternates(sections["uboot-1"]) == flashLayout)
        #expect(try interfaceStrings(sections["uboot-1-lsusb"]) == flashLayout)
        // bmAttributes 15: manifestation tolerant, so dfu-util returns to dfuIDLE after a
        // download and never resets the port (a reset would make U-Boot reset the board).
        #expect(sections["uboot-1-lsusb"]?.contains("Manifestation Tolerant") == true)
        #expect(sections["uboot-1-lsusb"]?.contains("wTransferSize                    4096 bytes") == true)
        let layoutDownload = try #require(sections["layout-download"])
        #expect(layoutDownload.contains("Done!") && !layoutDownload.contains("Resetting USB"), "\(layoutDownload)")

        // §C.5: one alternate per non-none line by increasing Id, then virtual, OTP, PMIC; the
        // names are what `plan` computes with the board's geometry.
        let plan = try await boardPlan(layout, in: directory)
        let planned = plan.devices.flatMap(\.partitions).sorted { $0.id < $1.id }.map(\.alternate)
        let expected = planned + ["@virtual/0xf1/1*512Be", "@OTP/0xf2/1*776Be", "@PMIC/0xf4/1*8Be"]
        let listed = try listedAlternates(sections["uboot-2"])
        #expect(listed.keys.sorted() == Array(0..<expected.count))
        #expect(listed.keys.sorted().map { listed[$0]! } == expected)
        #expect(try interfaceStrings(sections["uboot-2-lsusb"]) == listed)
    }
}

/// Walks the board with dfu-util alone: `$1` the example binaries, `$2` the layout. Each
/// `=== name` line starts a section of the output the test reads.
private let stageWalkScript = """
    set -e
    binaries="$1"
    layout="$2"
    # Lists until an alternate matching $1 shows up: at most 10 s (TF-A → U-Boot takes ~3 s).
    wait_for() {
        tries=0
        until dfu-util -l 2>/dev/null | grep -q -- "$1"; do
            tries=$((tries + 1))
            if [ $tries -ge 100 ]; then echo "no alternate $1 after 10 s"; exit 1; fi
            sleep 0.1
        done
    }
    echo "=== rom"; dfu-util -l
    echo "=== rom-lsusb"; lsusb -v -d 0483:df11
    echo "=== fsbl-download"; dfu-util -a 1 -D "$binaries/tf-a-usb.stm32" 2>&1
    echo "=== tfa"; dfu-util -l
    echo "=== fip-download"; dfu-util -a 3 -D "$binaries/fip.bin" 2>&1
    echo "=== tfa-detach"; dfu-util -a 5 -e 2>&1
    wait_for "@FlashLayout/0x00"
    echo "=== uboot-1"; dfu-util -l
    echo "=== uboot-1-lsusb"; lsusb -v -d 0483:df11
    echo "=== layout-download"; dfu-util -a 0 -D "$layout" 2>&1
    echo "=== uboot-1-detach"; dfu-util -a 1 -e 2>&1
    wait_for "@fsbl1/"
    echo "=== uboot-2"; dfu-util -l
    echo "=== uboot-2-lsusb"; lsusb -v -d 0483:df11
    echo "=== end"

    """

/// The script's output split at its `=== name` lines.
func scriptSections(_ output: String) -> [String: String] {
    var sections: [String: String] = [:]
    var name = ""
    for line in output.split(separator: "\n", omittingEmptySubsequences: false) {
        if line.hasPrefix("=== ") {
            name = String(line.dropFirst(4))
            sections[name] = ""
        } else {
            sections[name, default: ""] += line + "\n"
        }
    }
    return sections
}

/// alt → name of the `Found DFU:` lines of a `dfu-util -l` section.
private func listedAlternates(_ section: String?) throws -> [Int: String] {
    let section = try #require(section, "the section is missing")
    var alternates: [Int: String] = [:]
    for line in section.split(separator: "\n") where line.hasPrefix("Found DFU:") {
        let (number, name) = try alternate(String(line))
        alternates[number] = name
    }
    return alternates
}

/// bAlternateSetting → iInterface string of an `lsusb -v` section.
private func interfaceStrings(_ section: String?) throws -> [Int: String] {
    let section = try #require(section, "the section is missing")
    var strings: [Int: String] = [:]
    var alternate: Int?
    for line in section.split(separator: "\n") {
        let fields = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
        if fields.first == "bAlternateSetting", fields.count >= 2 { alternate = Int(fields[1]) }
        if fields.first == "iInterface", fields.count == 3, let alternate { strings[alternate] = String(fields[2]) }
    }
    return strings
}
