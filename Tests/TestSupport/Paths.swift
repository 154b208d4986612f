import FoundationEssentials
import Glibc

/// Where test inputs live, found from this file's path so tests run from any working directory.
public enum TestPaths {
    /// The repository root (the folder holding Package.swift).
    public static let repositoryRoot: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        parts.removeLast(3)  // Tests/TestSupport/Paths.swift
        return parts.joined(separator: "/")
    }()

    /// The project's shared reference folder: `$STM32MP_SHARED`, else `../shared` beside the repo.
    public static let shared: String = {
        if let env = getenv("STM32MP_SHARED") { return String(cString: env) }
        let parent = repositoryRoot.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(
            separator: "/")
        return parent + "/shared"
    }()

    /// The real-world FlashLayout corpus.
    public static let realLayouts = shared + "/corpus/flashlayouts/real"

    /// Our own example layouts.
    public static let exampleLayouts = repositoryRoot + "/layouts"
}
