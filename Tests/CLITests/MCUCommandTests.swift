import Foundation
import TestSupport
import Testing

/// `stm32mp-flash mcu …` on virtual MCUs, run as a user would: every seed failure ends with its
/// diagnosis code, JSON ends with `done`/`failed`, memory persists between commands in --sim-dir.
@Suite("stm32mp-flash mcu on virtual MCUs")
struct MCUCommandTests {
    let tool: ExternalTool

    init() throws { tool = try BuiltProducts.tool("stm32mp-flash") }

    func events(_ text: String) throws -> [[String: Any]] {
        try text.split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    func file(_ folder: TemporaryDirectory, _ name: String, bytes: Int, seed: UInt8 = 1) throws -> String {
        let path = folder.file(name)
        try Data((0..<bytes).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }).write(
            to: URL(fileURLWithPath: path))
        return path
    }

    @Test("write then read in a later command gives the same bytes; JSON ends with done")
    func writeThenRead() throws {
        let folder = try TemporaryDirectory()
        let input = try file(folder, "app.bin", bytes: 70_000)
        let sim = ["--simulate", "--mcu", "f746", "--sim-dir", folder.file("sim"), "--json"]
        let write = try tool.run(["mcu", "write", input, "--address", "0x08000000"] + sim)
        #expect(write.status == 0, "\(write.standardOutput)\(write.standardError)")
        let lines = try events(write.standardOutput)
        #expect(lines.first?["event"] as? String == "start")
        #expect(lines.last?["event"] as? String == "done")
        #expect(lines.last?["verified"] as? Bool == true)
        #expect((lines.last?["erased"] as? [String]) == ["0x08000000", "0x08008000", "0x08010000"])
        let found = try #require(lines.first { $0["event"] as? String == "found" })
        #expect(found["kind"] as? String == "system-bootloader" && found["family"] as? String == "f746")
        let read = try tool.run(
            ["mcu", "read", "--address", "0x08000000", "--length", "70000", "--output", folder.file("back.bin")] + sim)
        #expect(read.status == 0, "\(read.standardOutput)")
        #expect(
            FileManager.default.contents(atPath: folder.file("back.bin")) == FileManager.default.contents(atPath: input)
        )
    }

    @Test(
        "each seed failure ends with its code",
        arguments: [
            ("f105", "app-dfu", ["write", "APP", "--address", "0x08008000"], "mcu-app-dfu"),
            (
                "f105", "rdp1", ["read", "--address", "0x08000000", "--length", "16", "--output", "OUT"],
                "mcu-read-protected"
            ),
            ("f746", "write-protected", ["write", "APP", "--address", "0x08000000"], "mcu-write-protected"),
            ("f746", "hse-misdetect", ["option-bytes"], "mcu-usb-clock"),
        ])
    func seeds(_ mcu: String, _ scenario: String, _ command: [String], _ code: String) throws {
        let folder = try TemporaryDirectory()
        let app = try file(folder, "app.bin", bytes: 160 << 10)
        let arguments = command.map { $0 == "APP" ? app : $0 == "OUT" ? folder.file("out.bin") : $0 }
        let result = try tool.run(
            ["mcu"] + arguments + [
                "--simulate", "--mcu", mcu, "--sim-scenario", scenario, "--sim-dir", folder.path, "--json",
            ])
        #expect(result.status == 1)
        let lines = try events(result.standardOutput)
        #expect(lines.last?["event"] as? String == "failed")
        #expect(lines.last?["code"] as? String == code, "\(result.standardOutput)")
        let diagnosis = try #require(lines.first { $0["event"] as? String == "diagnosis" })
        #expect(diagnosis["code"] as? String == code)
        #expect(!((diagnosis["evidence"] as? [String]) ?? []).isEmpty)
        #expect(!((diagnosis["nextSteps"] as? [String]) ?? []).isEmpty)
    }

    @Test("text output names the code, what was seen and the troubleshooting section")
    func textDiagnosis() throws {
        let folder = try TemporaryDirectory()
        let app = try file(folder, "app.bin", bytes: 4096)
        let result = try tool.run([
            "mcu", "write", app, "--address", "0x08008000", "--simulate", "--mcu", "f105", "--sim-scenario", "app-dfu",
            "--sim-dir", folder.path,
        ])
        #expect(result.status == 1)
        // Human output goes to stderr (stdout is for data), as for `flash`.
        let text = result.standardError
        #expect(text.contains("mcu-app-dfu: This is your firmware's DFU class"), "\(text)")
        #expect(text.contains("\"STM32 DownLoad Firmware Update\""))
        #expect(text.contains("More: docs/troubleshooting.md#mcu-app-dfu"))
    }

    @Test("a file past the flash is refused with the addresses before anything is erased; code null")
    func doesNotFit() throws {
        let folder = try TemporaryDirectory()
        let big = try file(folder, "big.bin", bytes: 300 << 10)
        let result = try tool.run([
            "mcu", "write", big, "--address", "0x08000000", "--simulate", "--mcu", "f105", "--sim-dir", folder.path,
            "--json",
        ])
        #expect(result.status == 1)
        let last = try #require(try events(result.standardOutput).last)
        #expect(last["event"] as? String == "failed")
        #expect(last["code"] is NSNull)
        #expect((last["error"] as? String)?.contains("0x08040000 is outside every memory") == true)
        #expect(try events(result.standardOutput).allSatisfy { $0["event"] as? String != "erase" })
    }

    @Test("unprotect needs --yes; with it the rdp1 MCU is erased, reset, followed and unprotected")
    func unprotect() throws {
        let folder = try TemporaryDirectory()
        let sim = ["--simulate", "--mcu", "f105", "--sim-scenario", "rdp1", "--sim-dir", folder.path, "--json"]
        let refused = try tool.run(["mcu", "unprotect"] + sim)
        #expect(refused.status == 1 && refused.standardError.contains("--yes"))
        let result = try tool.run(["mcu", "unprotect", "--yes"] + sim)
        #expect(result.status == 0, "\(result.standardOutput)")
        let lines = try events(result.standardOutput)
        #expect(lines.contains { $0["event"] as? String == "reenumeration" })
        #expect(lines.last?["readProtected"] as? Bool == false)
        // Persisted: a plain run now reads (the scenario would protect again, so run without it).
        let info = try tool.run([
            "mcu", "option-bytes", "--simulate", "--mcu", "f105", "--sim-dir", folder.path, "--json",
        ])
        #expect(info.status == 0, "\(info.standardOutput)")
    }

    @Test("every mcu --json line uses only keys docs/json.md documents for mcu")
    func contract() throws {
        let contract = try JSONContract()
        let folder = try TemporaryDirectory()
        let app = try file(folder, "app.bin", bytes: 8192)
        let sim = ["--simulate", "--mcu", "f105", "--sim-dir", folder.path, "--json"]
        let runs = [
            ["mcu", "info"] + sim, ["mcu", "write", app, "--address", "0x08000000"] + sim,
            ["mcu", "erase", "--address", "0x08000000", "--length", "4K"] + sim, ["mcu", "option-bytes"] + sim,
            ["mcu", "option-bytes", "--set", "DATA0=0x12"] + sim, ["mcu", "leave", "--address", "0x08000000"] + sim,
            ["mcu", "write", app, "--address", "0x08008000", "--sim-scenario", "app-dfu"] + sim,
        ]
        for arguments in runs {
            let result = try tool.run(arguments)
            for line in result.standardOutput.split(separator: "\n") {
                let json = try JSONSerialization.jsonObject(with: Data(line.utf8))
                #expect(contract.undocumentedKeys(json, section: "mcu … --json") == [], "\(arguments): \(line)")
            }
        }
    }

    @Test("info --json: kind, version, Get, maps, decoded option bytes, serial rule; H5 note; app-dfu warning")
    func infoJSON() throws {
        let folder = try TemporaryDirectory()
        let result = try tool.run(["mcu", "info", "--simulate", "--mcu", "h562", "--sim-dir", folder.path, "--json"])
        #expect(result.status == 0)
        let info = try #require(try events(result.standardOutput).first { $0["event"] as? String == "info" })
        #expect(info["commands"] as? [String] == ["00", "21", "41"])
        #expect(info["bootloaderVersion"] as? String == "3.0")
        let decoded = (info["decoded"] as? [[String: Any]]) ?? []
        #expect(
            decoded.contains { $0["name"] as? String == "PRODUCT_STATE" && $0["meaning"] as? String == "0xED (Open)" })
        #expect(info["serialMatchesUID"] as? Bool == true)
        // The device ID comes from the memory map (the bootloaders do not upload DBGMCU_IDCODE).
        #expect(info["deviceID"] as? String == "0x484" && info["deviceIDSource"] as? String == "memory-map")
        #expect(info["series"] as? String == "STM32H562/563")
        #expect(((info["notes"] as? [String]) ?? []).contains { $0.contains("h5-obk-with-usb") })
        let app = try tool.run([
            "mcu", "info", "--simulate", "--mcu", "f105", "--sim-scenario", "app-dfu", "--sim-dir", folder.path,
            "--json",
        ])
        let lines = try events(app.standardOutput)
        #expect(lines.first { $0["event"] as? String == "diagnosis" }?["code"] as? String == "mcu-app-dfu")
        #expect(lines.last?["event"] as? String == "done")
    }

    @Test("info text names the device ID; --quiet drops steps and progress but keeps info's data and failures")
    func quietAndDeviceIDText() throws {
        let folder = try TemporaryDirectory()
        let sim = ["--simulate", "--mcu", "f746", "--sim-dir", folder.file("sim")]
        let info = try tool.run(["mcu", "info"] + sim)
        #expect(info.status == 0)
        #expect(info.standardError.contains("device ID: 0x449 (STM32F74x/75x, from the memory map)"))
        #expect(info.standardError.contains("STM32 system bootloader v2.2"), "\(info.standardError)")

        let quietInfo = try tool.run(["mcu", "info", "--quiet"] + sim)
        #expect(quietInfo.status == 0)
        #expect(quietInfo.standardError.contains("device ID: 0x449"))
        #expect(
            !quietInfo.standardError.contains("Virtual STM32F74x")
                && !quietInfo.standardError.contains("STM32 system bootloader v2.2"))

        let input = try file(folder, "app.bin", bytes: 40_000)
        let loud = try tool.run(["mcu", "write", input, "--address", "0x08000000"] + sim)
        #expect(loud.status == 0 && loud.standardError.contains("Done:"))
        let quiet = try tool.run(["mcu", "write", input, "--address", "0x08000000", "-q"] + sim)
        #expect(quiet.status == 0, "\(quiet.standardError)")
        #expect(quiet.standardError.isEmpty && quiet.standardOutput.isEmpty, "\(quiet.standardError)")

        // A failure still prints its error and diagnosis under --quiet.
        let failed = try tool.run(
            ["mcu", "read", "--address", "0x08000000", "--length", "16", "--output", folder.file("o"), "--quiet"]
                + ["--simulate", "--mcu", "f105", "--sim-scenario", "rdp1", "--sim-dir", folder.file("rdp")])
        #expect(failed.status == 1)
        #expect(failed.standardError.contains("mcu-read-protected"), "\(failed.standardError)")
    }
}
