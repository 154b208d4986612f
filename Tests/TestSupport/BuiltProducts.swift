import Foundation

/// The executables `swift build` made, next to the running test bundle (`.build/<triple>/<config>`).
/// Tests that run them fail, never skip, when one is missing: build first (`swift build`).
public enum BuiltProducts {
    public static let directory: String = {
        let bundle =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return (bundle as NSString).deletingLastPathComponent
    }()

    /// The path of built executable `name`.
    /// - Throws: `MissingProduct`, saying how to build it.
    public static func path(_ name: String) throws -> String {
        let path = directory + "/" + name
        guard FileManager.default.isExecutableFile(atPath: path) else { throw MissingProduct(path: path) }
        return path
    }

    /// The tool as an `ExternalTool`, ready to run.
    public static func tool(_ name: String) throws -> ExternalTool { ExternalTool(path: try path(name)) }
}

public struct MissingProduct: Error, CustomStringConvertible {
    public let path: String
    public var description: String { "\(path) is missing: run `swift build` before `swift test`" }
}
