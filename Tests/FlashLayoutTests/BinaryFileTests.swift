import Foundation
import TestSupport
import Testing

@testable import FlashLayout

/// Binaries that cannot be flashed are errors with the reason, and none of them blocks `check`
/// (a FIFO used to hang it forever).
@Suite("check: Binary file types", .timeLimit(.minutes(10)))
struct BinaryFileTests {
    let directory: TemporaryDirectory

    init() throws { directory = try TemporaryDirectory() }

    /// A layout whose one programmed partition reads `binary`.
    func check(binary: String) throws -> [LayoutDiagnostic] {
        let text = "P\t0x10\tbootfs\tSystem\tmmc0\t0x4400\t\(binary)\n"
        try text.write(toFile: directory.file("layout.tsv"), atomically: true, encoding: .utf8)
        return LayoutChecker.check(path: directory.file("layout.tsv")).diagnostics
    }

    func unusable(_ binary: String) throws -> LayoutDiagnostic? {
        try check(binary: binary).first { $0.code == "unusable-file" }
    }

    @Test("an empty file is an error")
    func empty() throws {
        #expect(FileManager.default.createFile(atPath: directory.file("empty.bin"), contents: Data()))
        let found = try #require(try unusable("empty.bin"))
        #expect(found.severity == .error)
        #expect(found.message.contains("is empty"))
    }

    @Test("character devices are errors", arguments: ["/dev/null", "/dev/zero"])
    func characterDevice(path: String) throws {
        #expect(try unusable(path)?.message.contains("is a character device") == true)
    }

    @Test("a FIFO is an error, and check returns")
    func fifo() throws {
        #expect(mkfifo(directory.file("pipe"), 0o600) == 0)
        #expect(try unusable("pipe")?.message.contains("FIFO") == true)
    }

    @Test("a FIFO as the layout itself is an error, not a hang")
    func layoutFIFO() throws {
        #expect(mkfifo(directory.file("layout-pipe"), 0o600) == 0)
        let result = LayoutChecker.check(path: directory.file("layout-pipe"))
        #expect(result.diagnostics.map(\.code) == ["unreadable"])
        #expect(result.diagnostics.first?.message.contains("FIFO") == true)
    }

    @Test("a directory is an error")
    func directoryBinary() throws {
        try FileManager.default.createDirectory(atPath: directory.file("folder"), withIntermediateDirectories: false)
        #expect(try unusable("folder")?.message.contains("is a directory") == true)
    }

    @Test("a symbolic link loop is an error naming the loop, not a missing file")
    func linkLoop() throws {
        #expect(symlink("loop-b", directory.file("loop-a")) == 0)
        #expect(symlink("loop-a", directory.file("loop-b")) == 0)
        let found = try check(binary: "loop-a")
        #expect(found.contains { $0.code == "unusable-file" && $0.message.contains("symbolic links") }, "\(found)")
        #expect(!found.contains { $0.code == "missing-file" })
    }

    @Test("a non-empty regular file passes; one outside the layout's folder gets a note")
    func regular() throws {
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: directory.file("ok.bin")))
        #expect(try check(binary: "ok.bin").allSatisfy { $0.severity != .error })
        let elsewhere = try TemporaryDirectory()
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: elsewhere.file("far.bin")))
        let found = try check(binary: elsewhere.file("far.bin"))
        #expect(found.contains { $0.code == "binary-outside-layout" && $0.severity == .note })
        #expect(!(try check(binary: "ok.bin")).contains { $0.code == "binary-outside-layout" })
    }
}
