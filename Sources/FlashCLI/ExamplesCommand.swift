import ArgumentParser
import BootImages
import GPT
import Glibc
import SystemPackage

/// `stm32mp-flash make-examples`: writes the example FlashLayouts and every binary they reference,
/// so that `check`, `plan` and `flash --virtual` can be tried without a BSP.
struct ExamplesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "make-examples",
        abstract: "Write the example FlashLayouts and the small synthetic binaries they reference.",
        discussion: """
            Writes mp15-sdcard.tsv, mp15-emmc.tsv, mp13-sdcard.tsv and mp25-sdcard.tsv into the output folder, \
            and next to them one folder per layout with TF-A images (valid STM32 headers), FIPs (valid ToC \
            headers), FWU metadata and ext4 file systems (made with mke2fs when it is installed). Payloads are \
            pseudo-random but deterministic; nothing here boots.
            """)

    @Option(name: .long, help: "Folder to write into (created if missing).")
    var out: String = "./layouts"

    func run() async throws {
        let report = try ExampleSetGenerator(outputDirectory: out).generate()
        for layout in report.layouts { print("wrote \(layout)") }
        for file in report.files { print("wrote \(file.path) (\(file.kind.rawValue), \(file.size) bytes)") }
        for note in report.notes { Terminal.error("note: \(note)") }
    }
}

/// One example layout: its file name without `.tsv` and its exact text.
public struct ExampleLayout: Sendable, Hashable {
    public let name: String
    /// TAB-separated, LF line ends, ending with a newline.
    public let text: String

    init(name: String, text: String) {
        self.name = name
        self.text = text + "\n"
    }

    /// Chip family the layout is for, from its name (`mp15-…`, `mp13-…`, `mp25-…`).
    var family: ChipFamily {
        if name.hasPrefix("mp15") { return .mp15 }
        if name.hasPrefix("mp13") { return .mp13 }
        return .mp2
    }
}

/// What `ExampleSetGenerator.generate()` wrote.
public struct ExampleSetReport: Sendable {
    public struct File: Sendable, Hashable {
        public enum Kind: String, Sendable, Hashable {
            case stm32Image = "STM32 image", fip = "FIP", fwuMetadata = "FWU metadata", ext4 = "ext4"
            /// mke2fs was missing: zeros of the file system's size instead.
            case zeroFilled = "zero-filled, no mke2fs"
        }

        public var path: String
        public var kind: Kind
        public var size: Int
    }

    /// Paths of the TSV files.
    public var layouts: [String] = []
    public var files: [File] = []
    /// Things the user should know, e.g. that mke2fs was not found.
    public var notes: [String] = []
}

public struct ExampleGenerationError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// Writes the example layouts and their binaries. Binary paths in the layouts are relative to
/// the layout's folder, so the output folder can be moved as a whole.
public struct ExampleSetGenerator: Sendable {
    public var outputDirectory: String
    /// mke2fs to build ext4 images with; nil writes zero-filled files and says so.
    public var mke2fsPath: String?

    public init(outputDirectory: String, mke2fsPath: String? = HostProgram.find("mke2fs")) {
        self.outputDirectory = outputDirectory
        self.mke2fsPath = mke2fsPath
    }

    public static let layouts: [ExampleLayout] = [
        ExampleLayout(
            name: "mp15-sdcard",
            text: """
                #Opt\tId\tName\tType\tIP\tOffset\tBinary
                -\t0x01\tfsbl-boot\tBinary\tnone\t0x0\tmp15-sdcard/tf-a-usb.stm32
                -\t0x03\tfip-boot\tFIP\tnone\t0x0\tmp15-sdcard/fip.bin
                P\t0x04\tfsbl1\tBinary\tmmc0\t0x00004400\tmp15-sdcard/tf-a-sdcard.stm32
                P\t0x05\tfsbl2\tBinary\tmmc0\t0x00044400\tmp15-sdcard/tf-a-sdcard.stm32
                P\t0x06\tmetadata1\tFWU_MDATA\tmmc0\t0x00084400\tmp15-sdcard/metadata.bin
                P\t0x07\tmetadata2\tFWU_MDATA\tmmc0\t0x000C4400\tmp15-sdcard/metadata.bin
                P\t0x08\tfip-a\tFIP\tmmc0\t0x00104400\tmp15-sdcard/fip.bin
                PED\t0x09\tfip-b\tFIP\tmmc0\t0x00304400\tnone
                PED\t0x0A\tu-boot-env\tENV\tmmc0\t0x00504400\tnone
                P\t0x10\tbootfs\tSystem\tmmc0\t0x00584400\tmp15-sdcard/bootfs.ext4
                P\t0x11\trootfs\tFileSystem\tmmc0\t0x00984400\tmp15-sdcard/rootfs.ext4
                P\t0x12\tuserfs\tFileSystem\tmmc0\t0x01184400\tmp15-sdcard/userfs.ext4
                """),
        ExampleLayout(
            name: "mp15-emmc",
            text: """
                #Opt\tId\tName\tType\tIP\tOffset\tBinary
                -\t0x01\tfsbl-boot\tBinary\tnone\t0x0\tmp15-emmc/tf-a-usb.stm32
                -\t0x03\tfip-boot\tFIP\tnone\t0x0\tmp15-emmc/fip.bin
                P\t0x04\tfsbl1\tBinary\tmmc1\tboot1\tmp15-emmc/tf-a-emmc.stm32
                P\t0x05\tfsbl2\tBinary\tmmc1\tboot2\tmp15-emmc/tf-a-emmc.stm32
                P\t0x06\tmetadata1\tFWU_MDATA\tmmc1\t0x00080000\tmp15-emmc/metadata.bin
                P\t0x07\tmetadata2\tFWU_MDATA\tmmc1\t0x00100000\tmp15-emmc/metadata.bin
                P\t0x08\tfip-a\tFIP\tmmc1\t0x00180000\tmp15-emmc/fip.bin
                PED\t0x09\tfip-b\tFIP\tmmc1\t0x00380000\tnone
                PED\t0x0A\tu-boot-env\tENV\tmmc1\t0x00580000\tnone
                P\t0x10\tbootfs\tSystem\tmmc1\t0x00600000\tmp15-emmc/bootfs.ext4
                P\t0x11\trootfs\tFileSystem\tmmc1\t0x00A00000\tmp15-emmc/rootfs.ext4
                P\t0x12\tuserfs\tFileSystem\tmmc1\t0x01200000\tmp15-emmc/userfs.ext4
                """),
        ExampleLayout(
            name: "mp13-sdcard",
            text: """
                #Opt\tId\tName\tType\tIP\tOffset\tBinary
                -\t0x01\tfsbl-boot\tBinary\tnone\t0x0\tmp13-sdcard/tf-a-usb.stm32
                -\t0x03\tfip-boot\tFIP\tnone\t0x0\tmp13-sdcard/fip.bin
                P\t0x04\tfsbl1\tBinary\tmmc0\t0x00004400\tmp13-sdcard/tf-a-sdcard.stm32
                P\t0x05\tfsbl2\tBinary\tmmc0\t0x00044400\tmp13-sdcard/tf-a-sdcard.stm32
                P\t0x06\tmetadata1\tFWU_MDATA\tmmc0\t0x00084400\tmp13-sdcard/metadata.bin
                P\t0x07\tmetadata2\tFWU_MDATA\tmmc0\t0x000C4400\tmp13-sdcard/metadata.bin
                P\t0x08\tfip-a\tFIP\tmmc0\t0x00104400\tmp13-sdcard/fip.bin
                PED\t0x09\tfip-b\tFIP\tmmc0\t0x00304400\tnone
                PED\t0x0A\tu-boot-env\tENV\tmmc0\t0x00504400\tnone
                P\t0x10\tbootfs\tSystem\tmmc0\t0x00584400\tmp13-sdcard/bootfs.ext4
                P\t0x11\trootfs\tFileSystem\tmmc0\t0x00984400\tmp13-sdcard/rootfs.ext4
                P\t0x12\tuserfs\tFileSystem\tmmc0\t0x01184400\tmp13-sdcard/userfs.ext4
                """),
        ExampleLayout(
            name: "mp25-sdcard",
            text: """
                #Opt\tId\tName\tType\tIP\tOffset\tBinary
                -\t0x01\tfsbl-boot\tBinary\tnone\t0x0\tmp25-sdcard/tf-a-usb.stm32
                -\t0x02\tfip-ddr\tFIP\tnone\t0x0\tmp25-sdcard/fip-ddr.bin
                -\t0x03\tfip-boot\tFIP\tnone\t0x0\tmp25-sdcard/fip.bin
                P\t0x04\tfsbla1\tBinary\tmmc0\t0x00004400\tmp25-sdcard/tf-a-sdcard.stm32
                P\t0x05\tfsbla2\tBinary\tmmc0\t0x00044400\tmp25-sdcard/tf-a-sdcard.stm32
                P\t0x06\tmetadata1\tFWU_MDATA\tmmc0\t0x00084400\tmp25-sdcard/metadata.bin
                P\t0x07\tmetadata2\tFWU_MDATA\tmmc0\t0x000C4400\tmp25-sdcard/metadata.bin
                P\t0x08\tfip-a\tFIP\tmmc0\t0x00104400\tmp25-sdcard/fip.bin
                PED\t0x09\tfip-b\tFIP\tmmc0\t0x00304400\tnone
                PED\t0x0A\tu-boot-env\tENV\tmmc0\t0x00504400\tnone
                P\t0x10\tbootfs\tSystem\tmmc0\t0x00584400\tmp25-sdcard/bootfs.ext4
                P\t0x11\trootfs\tFileSystem\tmmc0\t0x00984400\tmp25-sdcard/rootfs.ext4
                P\t0x12\tuserfs\tFileSystem\tmmc0\t0x01184400\tmp25-sdcard/userfs.ext4
                """),
    ]

    /// File-system images: size, and the files put in them.
    static func fileSystemContents(name: String, seed: String) -> (
        sizeKiB: Int, files: [(path: String, bytes: [UInt8])]
    ) {
        var random = SplitMix64(name: seed)
        let readme = Array("Example \(name) for stm32mp-flash; generated by `stm32mp-flash make-examples`.\n".utf8)
        switch name {
        case "bootfs":
            let extlinux =
                "label example\n    kernel /Image\n    fdt /board.dtb\n    append root=PARTLABEL=rootfs rootwait\n"
            return (
                512,
                [
                    ("extlinux/extlinux.conf", Array(extlinux.utf8)), ("Image", random.bytes(96 * 1024)),
                    ("board.dtb", random.bytes(16 * 1024)), ("README", readme),
                ]
            )
        case "rootfs":
            return (
                1024,
                [
                    ("etc/hostname", Array("stm32mp-example\n".utf8)),
                    ("etc/os-release", Array("NAME=\"stm32mp-flash example\"\nID=example\n".utf8)),
                    ("usr/bin/example", random.bytes(64 * 1024)), ("README", readme),
                ]
            )
        default:
            return (256, [("README", readme)])
        }
    }

    public func generate() throws(ExampleGenerationError) -> ExampleSetReport {
        var report = ExampleSetReport()
        try FileTree.makeDirectories(outputDirectory)
        if mke2fsPath == nil {
            report.notes.append(
                "mke2fs was not found (install e2fsprogs): the file-system images are zero-filled files, not ext4")
        }
        for layout in Self.layouts {
            let layoutPath = outputDirectory + "/" + layout.name + ".tsv"
            try FileTree.write(Array(layout.text.utf8), to: layoutPath)
            report.layouts.append(layoutPath)
            var written: Set<String> = []
            for row in Self.rows(of: layout) where row.binary != "none" && written.insert(row.binary).inserted {
                report.files.append(try generate(row, of: layout))
            }
        }
        return report
    }

    /// The fields the generator needs from each non-comment line: Name, Type and Binary.
    static func rows(of layout: ExampleLayout) -> [(name: String, type: String, binary: String)] {
        layout.text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { line in
            let fields = line.split(separator: "\t").map(String.init)
            return (fields[2], fields[3], fields[6])
        }
    }

    private func generate(
        _ row: (name: String, type: String, binary: String), of layout: ExampleLayout
    ) throws(ExampleGenerationError) -> ExampleSetReport.File {
        let path = outputDirectory + "/" + row.binary
        try FileTree.makeDirectories(FileTree.parent(of: path))
        let seed = layout.name + "/" + row.binary
        let bytes: [UInt8]
        let kind: ExampleSetReport.File.Kind
        switch row.type {
        case "Binary":
            (bytes, kind) = (ExampleBinaries.fsbl(family: layout.family, seed: seed), .stm32Image)
        case "FIP":
            bytes = row.name.contains("ddr") ? ExampleBinaries.ddrFIP(seed: seed) : ExampleBinaries.fip(seed: seed)
            kind = .fip
        case "FWU_MDATA":
            (bytes, kind) = (ExampleBinaries.fwuMetadata(), .fwuMetadata)
        case "System", "FileSystem":
            return try makeFileSystem(named: row.name, at: path, seed: seed)
        default:
            preconditionFailure("example layouts only use types the generator knows, not \(row.type)")
        }
        try FileTree.write(bytes, to: path)
        return .init(path: path, kind: kind, size: bytes.count)
    }

    /// `mke2fs -t ext4 -d <staging folder>`; a zero-filled file when mke2fs is missing.
    private func makeFileSystem(
        named name: String, at path: String, seed: String
    ) throws(ExampleGenerationError) -> ExampleSetReport.File {
        let contents = Self.fileSystemContents(name: name, seed: seed)
        let size = contents.sizeKiB * 1024
        guard let mke2fsPath else {
            try FileTree.write([UInt8](repeating: 0, count: size), to: path)
            return .init(path: path, kind: .zeroFilled, size: size)
        }
        let staging = path + ".staging"
        FileTree.removeTree(staging)
        defer { FileTree.removeTree(staging) }
        for file in contents.files {
            try FileTree.makeDirectories(FileTree.parent(of: staging + "/" + file.path))
            try FileTree.write(file.bytes, to: staging + "/" + file.path)
        }
        _ = unlink(path)
        var random = SplitMix64(name: seed)
        let uuid = GUID.random(using: &random).description.lowercased()
        try HostProgram(path: mke2fsPath).run([
            "-q", "-F", "-t", "ext4", "-L", name, "-U", uuid, "-E", "root_owner=0:0,hash_seed=\(uuid)",
            "-d", staging, path, "\(contents.sizeKiB)k",
        ])
        return .init(path: path, kind: .ext4, size: size)
    }
}
