import Foundation
import GPT
import TestSupport
import Testing

@testable import VirtualBoard

/// Issue 9 item 15: the virtual board's images are never written through links, never resized
/// silently, never shared by two runs, and stay sparse when a partition is mostly zeros.
@Suite("virtual board storage safety")
struct StorageSafetyTests {
    let directory: TemporaryDirectory
    init() throws { directory = try TemporaryDirectory() }

    func storage(size: UInt64 = 64 << 20) -> BoardStorage {
        BoardStorage(directory: directory.path, devices: [.sdCard("mmc0", size: size)])
    }

    @Test("a symlinked image is refused and its target left untouched")
    func symlink() throws {
        let target = directory.file("precious.bin")
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: target))
        #expect(Glibc.symlink(target, directory.file("mmc0.img")) == 0)
        let board = storage()
        #expect {
            try board.prepareAll()
        } throws: { ($0 as? StorageError)?.reason.contains("symbolic link") == true }
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "keep me")
    }

    @Test("an existing image of another size is refused, or recreated when asked")
    func otherSize() throws {
        try Data(repeating: 7, count: 4096).write(to: URL(fileURLWithPath: directory.file("mmc0.img")))
        let board = storage()
        #expect {
            try board.prepareAll()
        } throws: { ($0 as? StorageError)?.reason.contains("holds 4096 bytes") == true }
        board.closeAll()
        let replacing = storage()
        replacing.replacesMismatchedImages = true
        try replacing.prepareAll()
        #expect(try replacing.read(device: "mmc0", offset: 0, length: 4) == [0, 0, 0, 0])
        var info = stat()
        #expect(stat(directory.file("mmc0.img"), &info) == 0 && info.st_size == 64 << 20)
    }

    @Test("two runs on one folder: the second is told another run uses it")
    func locked() throws {
        let first = storage()
        try first.prepareAll()
        let second = storage()
        #expect {
            try second.prepareAll()
        } throws: {
            ($0 as? StorageError)?.reason.contains("another run is using this virtual board (process \(getpid()))")
                == true
        }
        first.closeAll()
        try second.prepareAll()
    }

    @Test("zero blocks are not written into holes; zeros over earlier data read back as zeros")
    func sparse() throws {
        let board = storage(size: 256 << 20)
        var chunk = [UInt8](repeating: 0, count: 8 << 20)
        chunk[0] = 1
        chunk[chunk.count - 1] = 2
        for index in 0..<16 {
            try board.write(device: "mmc0", offset: UInt64(index) * UInt64(chunk.count) + 4096 * 3 + 17, bytes: chunk)
        }
        var info = stat()
        #expect(stat(directory.file("mmc0.img"), &info) == 0)
        #expect(
            Int64(info.st_blocks) * 512 < 1 << 20, "128 MiB of mostly zeros use \(Int64(info.st_blocks) * 512) bytes")
        #expect(try board.read(device: "mmc0", offset: 4096 * 3 + 17, length: 2) == [1, 0])

        // Overwriting data with zeros must really clear it.
        try board.write(device: "mmc0", offset: 0, bytes: [UInt8](repeating: 0xAA, count: 65536))
        try board.write(device: "mmc0", offset: 0, bytes: [UInt8](repeating: 0, count: 65536))
        #expect(try board.read(device: "mmc0", offset: 0, length: 65536).allSatisfy { $0 == 0 })
    }

    @Test("zeros over earlier data punch holes: the image stays byte-exact and gives the space back")
    func zerosOverDataPunchHoles() throws {
        let board = storage(size: 64 << 20)
        let data = (0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        try board.write(device: "mmc0", offset: 1 << 20, bytes: data)
        let full = try allocatedBytes(directory.file("mmc0.img"))
        #expect(full >= 4 << 20, "4 MiB of data use only \(full) bytes")

        // The same range again, zeros except one byte in the middle and one unaligned edge.
        var zeros = [UInt8](repeating: 0, count: 4 << 20)
        zeros[2 << 20] = 0x5A
        try board.write(device: "mmc0", offset: 1 << 20, bytes: zeros)
        try board.write(device: "mmc0", offset: (1 << 20) + 100, bytes: [UInt8](repeating: 0, count: 8192))
        let after = try allocatedBytes(directory.file("mmc0.img"))
        #expect(after < 1 << 20, "zeros over 4 MiB of data still use \(after) bytes")
        let back = try board.read(device: "mmc0", offset: 1 << 20, length: 4 << 20)
        #expect(back == zeros, "the image must read back exactly what was written last")
        var info = stat()
        #expect(stat(directory.file("mmc0.img"), &info) == 0)
        #expect(info.st_size == 64 << 20, "punching holes must keep the image's size")
    }

    func allocatedBytes(_ path: String) throws -> Int64 {
        var info = stat()
        try #require(stat(path, &info) == 0)
        return Int64(info.st_blocks) * 512
    }
}
