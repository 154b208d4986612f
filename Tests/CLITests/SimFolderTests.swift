import Foundation
import Glibc
import TestSupport
import Testing

/// Issue 9 item 10: problems with the virtual board's folder are this computer's: `host-file`,
/// naming the path and the OS reason, never a board code. Root passes mode bits, so read-only and
/// full folders are real file systems: a tmpfs mounted read-only or with a size limit.
@Suite("the virtual board's folder: host faults", .serialized, .timeLimit(.minutes(10)))
struct SimFolderTests {
    let tool: ExternalTool
    let examples: String

    init() throws {
        tool = try BuiltProducts.tool("stm32mp-flash")
        examples = try CLIExamples.directory()
    }

    /// `flash --json --simulate` into `folder`: exit 1 and a `failed` line with code `host-file`
    /// whose error names `path` and says `reason`.
    func expectHostFile(folder: String, path: String, reason: String, stage: String? = nil) throws {
        let result = try tool.run([
            "flash", "--json", "--simulate", "--sim-dir", folder, "--late-grace", "0", "\(examples)/mp15-sdcard.tsv",
        ])
        #expect(result.status == 1, "\(result.standardOutput)\(result.standardError)")
        let failed = try #require(result.standardOutput.split(separator: "\n").last.map(String.init))
        #expect(failed.contains(#""event":"failed""#) && failed.contains(#""code":"host-file""#), "\(failed)")
        #expect(failed.contains(path) && failed.contains(reason), "\(failed)")
        #expect(!failed.contains("board-error") && !failed.contains("device-init-failed"), "\(failed)")
        if let stage { #expect(failed.contains(#""stage":"\#(stage)""#), "\(failed)") }
    }

    @Test("the folder is a file")
    func isAFile() throws {
        let directory = try TemporaryDirectory()
        let file = directory.file("not-a-folder")
        try Data("x".utf8).write(to: URL(fileURLWithPath: file))
        try expectHostFile(folder: file, path: file, reason: "is a file, not a folder (Not a directory)")
    }

    @Test("the folder's parent does not exist")
    func missingParent() throws {
        let directory = try TemporaryDirectory()
        let folder = directory.file("missing/board")
        try expectHostFile(
            folder: folder, path: folder,
            reason: "its parent folder '\(directory.file("missing"))' does not exist (No such file or directory)")
    }

    @Test("the folder is on a read-only file system")
    func readOnly() throws {
        let mount = try TmpfsMount(options: "ro,size=1m")
        defer { mount.unmount() }
        try expectHostFile(
            folder: mount.path + "/board", path: mount.path + "/board",
            reason: "cannot be created: Read-only file system")
        try expectHostFile(folder: mount.path, path: mount.path, reason: "is not writable: Read-only file system")
    }

    /// 256 KiB fills up while partitions are written; 8 KiB already while the virtual U-Boot
    /// writes the GPT with the GPT module's own writer (seen under load with two boards, then
    /// ending `device-init-failed`). Either way the file system is the host's: `host-file`.
    @Test(
        "the file system fills up in the middle of the run: host-file, not a board error",
        arguments: ["size=256k", "size=8k"])
    func full(size: String) throws {
        let mount = try TmpfsMount(options: size)
        defer { mount.unmount() }
        try expectHostFile(
            folder: mount.path, path: mount.path + "/mmc0.img", reason: "cannot be written: No space left on device",
            stage: "uboot")
    }

    @Test("several boards: a folder that fills up ends each board host-file, naming its image")
    func fullWithSeveralBoards() throws {
        let mount = try TmpfsMount(options: "size=256k")
        defer { mount.unmount() }
        let result = try tool.run([
            "flash", "--json", "--simulate", "--boards", "2", "--sim-dir", mount.path, "--late-grace", "0",
            "\(examples)/mp15-sdcard.tsv",
        ])
        #expect(result.status == 1, "\(result.standardOutput)\(result.standardError)")
        let lines = result.standardOutput.split(separator: "\n").map(String.init)
        let last = try #require(lines.last)
        #expect(last.contains(#""event":"failed""#) && last.contains(#""code":"boards-failed""#), "\(last)")
        #expect(!last.contains(#""result":"done""#), "\(last)")
        // Each board's own end names its image in its own folder and the OS reason.
        for port in ["1-1.1", "1-1.2"] {
            let image = mount.path + "/" + port + "/mmc0.img"
            #expect(
                lines.contains {
                    $0.contains(#""port":"\#(port)""#) && $0.contains(#""code":"host-file""#) && $0.contains(image)
                        && $0.contains("No space left on device")
                }, "\(result.standardOutput)")
        }
    }
}

/// A tmpfs mounted for one test (needs CAP_SYS_ADMIN: the tests run as root here and in CI).
struct TmpfsMount {
    struct Failed: Error, CustomStringConvertible { var description: String }
    let directory: TemporaryDirectory
    var path: String { directory.path }

    init(options: String) throws {
        directory = try TemporaryDirectory()
        let result = Self.run("/bin/mount", ["-t", "tmpfs", "-o", options, "tmpfs", directory.path])
        guard result == 0 else {
            throw Failed(description: "mount -t tmpfs -o \(options) failed (status \(result)); these tests need root")
        }
    }

    func unmount() { _ = Self.run("/bin/umount", [path]) }

    static func run(_ executable: String, _ arguments: [String]) -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        do {
            try process.run()
        } catch {
            return -1
        }
        process.waitUntilExit()
        return process.terminationStatus
    }
}
