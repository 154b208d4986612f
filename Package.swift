// swift-tools-version:6.2
//
// stm32mp-flash: flash STM32MP1/MP13/MP2 boards over USB from a FlashLayout TSV,
// and explain why it failed when it does. See docs/architecture.md for the target map.
import PackageDescription

/// Strict settings shared by every Swift target (see docs/architecture.md, "Build settings").
let strictSwift: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("NonisolatedNonsendingByDefault"),
    .treatAllWarnings(as: .error),
]

let argumentParser = Target.Dependency.product(name: "ArgumentParser", package: "swift-argument-parser")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let systemPackage = Target.Dependency.product(name: "SystemPackage", package: "swift-system")
let grdb = Target.Dependency.product(name: "GRDB", package: "GRDB.swift")
let crypto = Target.Dependency.product(name: "Crypto", package: "swift-crypto")
let prometheus = Target.Dependency.product(name: "Prometheus", package: "swift-prometheus")
let hummingbird = Target.Dependency.product(name: "Hummingbird", package: "hummingbird")

let package = Package(
    name: "stm32mp-flash",
    products: [
        .executable(name: "stm32mp-flash", targets: ["stm32mp-flash"]),
        .executable(name: "stm32mp-board-emulator", targets: ["stm32mp-board-emulator"]),
        .executable(name: "stm32mp-flash-bench", targets: ["stm32mp-flash-bench"]),
        .executable(name: "layout-fuzzer", targets: ["layout-fuzzer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
    ],
    targets: [
        // MARK: C libraries, each behind exactly one Swift wrapper target.
        .systemLibrary(
            name: "CLibUSB", pkgConfig: "libusb-1.0", providers: [.apt(["libusb-1.0-0-dev"])]),
        .systemLibrary(name: "CLibUdev", pkgConfig: "libudev", providers: [.apt(["libudev-dev"])]),
        .systemLibrary(
            name: "CUMockdev", pkgConfig: "umockdev-1.0", providers: [.apt(["libumockdev-dev"])]),
        // The codecs are linked from their static archives (module map `link ":libz.a"` etc., GNU ld's
        // exact-file form), so neither the tool nor its .deb needs zlib1g, liblzma5 or libzstd1 at run
        // time. No pkgConfig here: its `Libs: -lz` would put the shared library on every link line.
        .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CLzma", providers: [.apt(["liblzma-dev"])]),
        .systemLibrary(name: "CZstd", providers: [.apt(["libzstd-dev"])]),

        // MARK: Pure Swift foundations (no C).
        .target(name: "Timekeeping", swiftSettings: strictSwift),
        .target(name: "TerminalText", swiftSettings: strictSwift),
        .target(name: "NullEncoding", swiftSettings: strictSwift),
        .target(name: "USBModel", dependencies: ["Timekeeping"], swiftSettings: strictSwift),
        .target(name: "FileAccess", dependencies: [systemPackage], swiftSettings: strictSwift),
        .target(name: "BootImages", dependencies: ["FileAccess", systemPackage], swiftSettings: strictSwift),
        .target(name: "GPT", dependencies: ["FileAccess", systemPackage], swiftSettings: strictSwift),
        .target(
            name: "FlashLayout", dependencies: ["BootImages", "GPT", "FileAccess", "TerminalText", systemPackage],
            swiftSettings: strictSwift),
        .target(name: "DFU", dependencies: ["USBModel", "Timekeeping"], swiftSettings: strictSwift),
        .target(
            name: "DfuSe", dependencies: ["DFU", "USBModel", "Timekeeping"], swiftSettings: strictSwift),
        .target(
            name: "BoardTracking", dependencies: ["DfuSe", "DFU", "USBModel", "Timekeeping"], swiftSettings: strictSwift
        ),
        .target(
            name: "MCUImages", dependencies: ["DfuSe", "FileAccess", systemPackage], swiftSettings: strictSwift),
        .target(
            name: "FlashEngine",
            dependencies: [
                "BoardTracking", "BootImages", "DFU", "FlashLayout", "ImageSources", "USBModel", "Timekeeping",
                "FileAccess", systemPackage, logging, crypto, "Fastboot", "AndroidSparse", "UBootScript",
                "Decompression",
            ],
            swiftSettings: strictSwift),
        .target(
            name: "VirtualBoard",
            dependencies: [
                "DFU", "FlashLayout", "GPT", "BootImages", "USBModel", "Timekeeping", "FileAccess", systemPackage,
                "UBootScript", "AndroidSparse", "Decompression",
            ],
            swiftSettings: strictSwift),
        .target(
            name: "MCUEngine", dependencies: ["BoardTracking", "DfuSe", "MCUImages", "DFU", "USBModel", "Timekeeping"],
            swiftSettings: strictSwift),
        .target(
            name: "VirtualMCU", dependencies: ["DfuSe", "DFU", "USBModel", systemPackage], swiftSettings: strictSwift),
        .target(
            name: "Diagnostics",
            dependencies: [
                "FlashEngine", "BoardTracking", "BootImages", "ImageSources", "MCUEngine", "DfuSe", "DFU", "USBModel",
                "Timekeeping", systemPackage,
            ],
            swiftSettings: strictSwift),
        .target(name: "UBootScript", dependencies: ["FlashLayout", "GPT"], swiftSettings: strictSwift),
        .target(name: "AndroidSparse", dependencies: ["DFU"], swiftSettings: strictSwift),
        .target(name: "Fastboot", dependencies: ["DFU", "USBModel"], swiftSettings: strictSwift),

        .target(
            name: "StationRecords", dependencies: ["FileAccess", grdb, crypto, systemPackage],
            swiftSettings: strictSwift),
        .target(
            name: "StationMonitor", dependencies: ["BoardTracking", "FlashEngine", "USBModel", prometheus],
            swiftSettings: strictSwift),
        .target(
            name: "StatusServer", dependencies: ["StationMonitor", hummingbird, logging], swiftSettings: strictSwift),

        // MARK: C wrappers.
        .target(
            name: "USBHost", dependencies: ["CLibUSB", "USBModel", "Timekeeping"],
            swiftSettings: strictSwift),
        .target(name: "Hotplug", dependencies: ["CLibUdev", "USBModel"], swiftSettings: strictSwift),
        .target(
            name: "Decompression", dependencies: ["CZlib", "CLzma", "CZstd", "FileAccess", systemPackage],
            swiftSettings: strictSwift),

        // MARK: Images: block maps, holes, compressed Binaries (uses Decompression).
        .target(
            name: "ImageSources", dependencies: ["Decompression", "DFU", "FileAccess", crypto, systemPackage],
            swiftSettings: strictSwift),

        // MARK: Command line.
        .target(
            name: "FlashCLI",
            dependencies: [
                "FlashLayout", "BootImages", "GPT", "DFU", "BoardTracking", "FlashEngine", "ImageSources",
                "Decompression", "VirtualBoard", "Diagnostics", "DfuSe", "MCUImages", "MCUEngine", "VirtualMCU",
                "USBHost", "Hotplug", "USBModel", "Timekeeping", "StationRecords", "StationMonitor", "StatusServer",
                "TerminalText", "NullEncoding", argumentParser,
                logging, systemPackage,
            ],
            swiftSettings: strictSwift),
        .executableTarget(name: "stm32mp-flash", dependencies: ["FlashCLI"], swiftSettings: strictSwift),
        .executableTarget(
            name: "stm32mp-board-emulator",
            dependencies: [
                "CUMockdev", "VirtualBoard", "VirtualMCU", "DfuSe", "USBModel", "Timekeeping", argumentParser,
            ],
            swiftSettings: strictSwift),
        .executableTarget(
            name: "stm32mp-flash-bench",
            dependencies: [
                "FlashLayout", "BoardTracking", "FlashEngine", "ImageSources", "Decompression", "VirtualBoard", "DFU",
                "USBModel", "Timekeeping",
                systemPackage,
            ],
            swiftSettings: strictSwift),

        .executableTarget(name: "layout-fuzzer", dependencies: ["FlashLayout"], swiftSettings: strictSwift),

        // MARK: Tests (Swift Testing only).
        .target(
            name: "TestSupport", dependencies: ["FlashLayout", "USBModel", "Timekeeping", systemPackage],
            path: "Tests/TestSupport", swiftSettings: strictSwift),
        .target(
            name: "VirtualBoardTestSupport",
            dependencies: ["VirtualBoard", "DFU", "Timekeeping", "TestSupport", "USBModel"],
            path: "Tests/VirtualBoardTestSupport", swiftSettings: strictSwift),
        .testTarget(name: "TimekeepingTests", dependencies: ["Timekeeping"], swiftSettings: strictSwift),
        .testTarget(name: "TerminalTextTests", dependencies: ["TerminalText"], swiftSettings: strictSwift),
        .testTarget(name: "USBModelTests", dependencies: ["USBModel", "Timekeeping"], swiftSettings: strictSwift),
        .testTarget(
            name: "BoardTrackingTests",
            dependencies: [
                "BoardTracking", "VirtualBoard", "DFU", "USBModel", "Timekeeping", "TestSupport",
                "VirtualBoardTestSupport",
            ],
            swiftSettings: strictSwift),
        .testTarget(
            name: "BootImagesTests", dependencies: ["BootImages", "TestSupport"], swiftSettings: strictSwift),
        .testTarget(name: "GPTTests", dependencies: ["GPT", "TestSupport"], swiftSettings: strictSwift),
        .testTarget(
            name: "FlashLayoutTests", dependencies: ["FlashLayout", "BootImages", "GPT", "TestSupport"],
            swiftSettings: strictSwift),
        .testTarget(
            name: "DFUTests",
            dependencies: ["DFU", "VirtualBoard", "USBModel", "Timekeeping", "TestSupport", "VirtualBoardTestSupport"],
            swiftSettings: strictSwift),
        .testTarget(
            name: "FlashEngineTests",
            dependencies: [
                "BoardTracking", "FlashEngine", "ImageSources", "Diagnostics", "UBootScript", "VirtualMCU", "DfuSe",
                "VirtualBoard", "FlashLayout", "DFU", "GPT", "FlashCLI", "TestSupport",
                "VirtualBoardTestSupport",
            ],
            swiftSettings: strictSwift),
        .testTarget(
            name: "VirtualBoardTests",
            dependencies: [
                "VirtualBoard", "DFU", "GPT", "TestSupport", "VirtualBoardTestSupport", "Fastboot", "UBootScript",
                "AndroidSparse", "FlashLayout", "USBModel", "BootImages",
            ],
            swiftSettings: strictSwift),
        .testTarget(
            name: "DiagnosticsTests",
            dependencies: [
                "Diagnostics", "FlashEngine", "FlashCLI", "BoardTracking", "DFU", "VirtualBoard", "FlashLayout",
                "TestSupport", "VirtualBoardTestSupport", "USBModel", "Timekeeping",
            ],
            swiftSettings: strictSwift),
        .testTarget(
            name: "ImageSourcesTests", dependencies: ["ImageSources", "Decompression", "DFU", "TestSupport"],
            swiftSettings: strictSwift),
        .testTarget(
            name: "MCUTests",
            dependencies: [
                "BoardTracking", "DfuSe", "MCUImages", "MCUEngine", "VirtualMCU", "VirtualBoard", "Diagnostics", "DFU",
                "USBModel",
                "Timekeeping", "TestSupport",
            ],
            swiftSettings: strictSwift),
        .testTarget(
            name: "StationMonitorTests",
            dependencies: [
                "StationMonitor", "StatusServer", "FlashEngine", "BoardTracking", "USBModel", "TestSupport",
            ],
            swiftSettings: strictSwift),
        .testTarget(
            name: "StationRecordsTests", dependencies: ["StationRecords", "TestSupport"], swiftSettings: strictSwift),
        .testTarget(
            name: "UBootScriptTests", dependencies: ["UBootScript", "FlashLayout", "TestSupport"],
            swiftSettings: strictSwift),
        .testTarget(
            name: "AndroidSparseTests", dependencies: ["AndroidSparse", "DFU", "TestSupport"],
            swiftSettings: strictSwift),
        .testTarget(
            name: "FastbootTests", dependencies: ["Fastboot", "USBModel", "DFU"], swiftSettings: strictSwift),
        .testTarget(
            name: "CLITests", dependencies: ["FlashCLI", "StationRecords", "TestSupport", "NullEncoding"],
            swiftSettings: strictSwift),
        .testTarget(
            name: "USBIntegrationTests", dependencies: ["USBHost", "Hotplug", "TestSupport"],
            swiftSettings: strictSwift),
    ]
)
