import Foundation
import Testing

/// Virtual MCU bootloaders at the kernel interface: dfu-util and lsusb, unmodified, see what the
/// real bootloaders show (AN3156 alternates, DfuSe functional descriptor), and files move both
/// ways between dfu-util and `stm32mp-flash mcu` byte for byte.
@Suite(.timeLimit(.minutes(8))) struct MCUEmulationTests {
    @Test func dfuUtilAndMCUCommandsAgreeOnTheVirtualF746() async throws {
        let directory = try ShortTemporaryDirectory()
        let flash = try builtExecutable("stm32mp-flash")
        let a = directory.file("a.bin")
        let b = directory.file("b.bin")
        try Data((0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }).write(to: URL(fileURLWithPath: a))
        try Data((0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }).write(to: URL(fileURLWithPath: b))
        let script = directory.file("mcu.sh")
        try mcuScript.write(toFile: script, atomically: true, encoding: .utf8)
        let result = try await run(
            try builtExecutable("stm32mp-board-emulator"),
            ["--mcu", "f746", "--storage", directory.file("mem"), "--", "sh", script, flash, directory.path],
            in: directory, timeout: 420)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let sections = scriptSections(result.stdout)

        // dfu-util -l: the four F7 bootloader alternates, bcdDevice as `ver=2200`.
        let listed = try #require(sections["list"])
        for (index, name) in [
            "@Internal Flash  /0x08000000/04*032Kg,01*128Kg,03*256Kg", "@Option Bytes  /0x1FFF0000/01*032 e",
            "@OTP Memory /0x1FF0F000/01*1056 e", "@Device Feature/0xFFFF0000/01*004 e",
        ].enumerated() {
            #expect(listed.contains("ver=2200") && listed.contains("alt=\(index), name=\"\(name)\""), "\(listed)")
        }
        let lsusb = try #require(sections["lsusb"])
        #expect(lsusb.contains("STM32  BOOTLOADER") && lsusb.contains("bcdDFUVersion                   1.1a"))
        #expect(lsusb.contains("wTransferSize                    2048 bytes"))

        // dfu-util writes, stm32mp-flash reads; stm32mp-flash writes, dfu-util reads.
        #expect(sections["dfu-util-download"]?.contains("File downloaded successfully") == true)
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: directory.file("a.back")))
                == Data(contentsOf: URL(fileURLWithPath: a)))
        #expect(
            sections["mcu-write"]?.contains("70000 bytes written and verified") == true,
            "\(sections["mcu-write"] ?? "")")
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: directory.file("b.up")))
                == Data(contentsOf: URL(fileURLWithPath: b)))

        // An option-byte write resets the chip: followed across the real hot-plug events.
        let options = try #require(sections["option-bytes"])
        #expect(options.contains("\"event\":\"reenumeration\""), "\(options)")
        #expect(options.contains("{\"meaning\":\"0xFE\",\"name\":\"USER\",\"value\":254}"), "\(options)")
        #expect(options.split(separator: "\n").last?.contains("\"event\":\"done\"") == true)

        // `watch` saw the reset (remove, add) and names the MCU bootloader from its strings alone.
        let watched = try #require(sections["watch"]).split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let added = try #require(
            watched.first { $0["action"] as? String == "add" }, "\(watched) \(sections["watch-err"] ?? "")")
        let addedDevice = try #require(added["device"] as? [String: Any])
        #expect(addedDevice["stage"] as? String == "mcu-bootloader" && addedDevice["family"] as? String == "stm32-mcu")
        #expect((addedDevice["mcu"] as? [String: Any])?["kind"] as? String == "system-bootloader")

        // `list` tells the MCU bootloader from an STM32MP stage (same 0483:df11).
        let listLine = try #require(sections["tool-list"]?.split(separator: "\n").first)
        let device = try #require(try JSONSerialization.jsonObject(with: Data(listLine.utf8)) as? [String: Any])
        #expect(device["stage"] as? String == "mcu-bootloader" && device["family"] as? String == "stm32-mcu")
        let mcu = try #require(device["mcu"] as? [String: Any])
        #expect(mcu["kind"] as? String == "system-bootloader" && mcu["family"] as? String == "f746")
        #expect(mcu["bootloaderVersion"] as? String == "2.2")
        #expect(mcu["deviceID"] as? String == "0x449" && mcu["deviceIDSource"] as? String == "memory-map")

        // `doctor` reads the same device ID from sysfs: the interface record's `interface` string
        // (alternate 0's memory map), as the kernel writes it at enumeration.
        let doctorText = try #require(sections["doctor"])
        let doctor = try #require(try JSONSerialization.jsonObject(with: Data(doctorText.utf8)) as? [String: Any])
        let boards = try #require((doctor["environment"] as? [String: Any])?["boards"] as? [[String: Any]])
        #expect(boards.first?["interfaceName"] as? String == "@Internal Flash  /0x08000000/04*032Kg,01*128Kg,03*256Kg")
        let checks = try #require(doctor["checks"] as? [[String: Any]])
        let bootloaders = try #require(checks.first { $0["id"] as? String == "mcu-bootloaders" })
        let details = try #require(bootloaders["details"] as? [String])
        #expect(details.contains { $0.contains("device ID 0x449 (STM32F74x/75x") }, "\(details)")

        // Ctrl-C while the command waits for its MCU through the tracker: exit 130, `failed`
        // with code `cancelled` as the last JSON line, never `done`.
        let interrupt = try #require(sections["interrupt"])
        #expect(interrupt.contains("status=130"), "\(interrupt)")
        let last = try #require(interrupt.split(separator: "\n").last { $0.hasPrefix("{") })
        let failed = try #require(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any])
        #expect(failed["event"] as? String == "failed" && failed["code"] as? String == "cancelled", "\(interrupt)")
    }
}

/// `$1` stm32mp-flash, `$2` the folder with a.bin and b.bin; `=== name` starts a section.
private let mcuScript = """
    set -e
    tool="$1"; dir="$2"
    echo "=== list"; dfu-util -l 2>&1
    echo "=== lsusb"; lsusb -v -d 0483:df11 2>&1
    echo "=== dfu-util-download"; dfu-util -a 0 -s 0x08000000 -D "$dir/a.bin" 2>&1 | tr '\\r' '\\n' | tail -3
    echo "=== mcu-read"; "$tool" mcu read --address 0x08000000 --length 100000 --output "$dir/a.back" 2>&1
    echo "=== mcu-write"; "$tool" mcu write "$dir/b.bin" --address 0x08020000 2>&1
    echo "=== dfu-util-upload"; dfu-util -a 0 -s 0x08020000:70000 -U "$dir/b.up" 2>&1 | tail -2
    # umockdev binds each listening process's uevent socket to $UMOCKDEV_DIR/event<fd>: two
    # processes with the same fd numbers share one path and only the later one hears events
    # (docs/emulator.md). The watcher starts with fds 3-40 taken, so its sockets differ from the
    # mcu command's.
    bash -c 'for fd in $(seq 3 40); do eval "exec $fd</dev/null"; done; exec "$@"' fds \
        "$tool" watch --json --count 2 --timeout 300 > "$dir/watch.json" 2>"$dir/watch.err" &
    watcher=$!
    until grep -q Watching "$dir/watch.err" 2>/dev/null; do sleep 0.1; done
    sleep 1
    echo "=== option-bytes"; "$tool" mcu option-bytes --set USER=0xFE --json 2>&1
    wait $watcher || true
    echo "=== watch"; cat "$dir/watch.json"; echo "=== watch-err"; cat "$dir/watch.err"
    echo "=== tool-list"; "$tool" list --json
    echo "=== doctor"; "$tool" doctor --json 2>/dev/null || true
    echo "=== interrupt"
    "$tool" mcu info --port 1-9 --wait-timeout 60 --json > "$dir/int.json" 2>/dev/null &
    pid=$!
    until grep -q '"start"' "$dir/int.json" 2>/dev/null; do sleep 0.1; done
    sleep 1
    kill -INT $pid
    status=0; wait $pid || status=$?
    echo "status=$status"; cat "$dir/int.json"
    """
