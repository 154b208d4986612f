import Glibc

/// Which folder a relative Binary is read from when it exists both ways and they are different
/// files (`--binaries-from`). Without a choice `check` warns and `flash` refuses.
public enum BinaryBase: String, Sendable, CaseIterable {
    /// Next to the layout, as STM32CubeProgrammer resolves them.
    case layout
    /// From the working directory.
    case cwd
}

/// Where a Binary column's file is. Absolute paths are used as given. A relative one may exist
/// relative to the working directory and relative to the layout's folder (where
/// STM32CubeProgrammer looks); when both exist and are different files the choice is ambiguous,
/// and the layout's copy is the default.
public struct BinaryLocation: Sendable, Hashable {
    /// The path used, nil when nothing exists under either name.
    public var path: String?
    /// Every path tried, in order.
    public var candidates: [String]
    /// Both candidates exist and are different files: (working directory's, layout's).
    public var shadowed: (fromWorkingDirectory: String, besideLayout: String)?

    public static func == (a: BinaryLocation, b: BinaryLocation) -> Bool {
        a.path == b.path && a.candidates == b.candidates && a.shadowed?.0 == b.shadowed?.0
            && a.shadowed?.1 == b.shadowed?.1
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(path) }
}

public enum BinaryPath {
    /// Finds the file of `binary`; `base` settles the case where it exists both ways.
    public static func locate(_ binary: String, layoutDirectory: String, base: BinaryBase? = nil) -> BinaryLocation {
        if binary.hasPrefix("/") {
            return BinaryLocation(path: exists(binary) ? binary : nil, candidates: [binary], shadowed: nil)
        }
        let beside = (layoutDirectory.isEmpty ? "." : layoutDirectory) + "/" + binary
        let asGiven = exists(binary)
        let besideExists = exists(beside)
        var location = BinaryLocation(path: nil, candidates: [binary, beside], shadowed: nil)
        switch (asGiven, besideExists) {
        case (true, true):
            if !sameFile(binary, beside) { location.shadowed = (binary, beside) }
            location.path = base == .cwd ? binary : beside
        case (true, false): location.path = binary
        case (false, true): location.path = beside
        case (false, false): break
        }
        return location
    }

    /// The path U-Boot's host side will read for `binary`, nil when neither exists.
    public static func resolve(_ binary: String, layoutDirectory: String, base: BinaryBase? = nil) -> String? {
        locate(binary, layoutDirectory: layoutDirectory, base: base).path
    }

    /// True when `path` names a directory entry (a dangling or looping link counts: opening it
    /// then says why it is unusable, which beats "not found").
    static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    static func sameFile(_ a: String, _ b: String) -> Bool {
        var first = stat()
        var second = stat()
        guard stat(a, &first) == 0, stat(b, &second) == 0 else { return false }
        return first.st_dev == second.st_dev && first.st_ino == second.st_ino
    }

    /// True when `path` (resolved through links) lies outside `directory`'s tree.
    public static func isOutside(_ path: String, directory: String) -> Bool {
        guard let file = realPath(path), let root = realPath(directory.isEmpty ? "." : directory) else { return false }
        let prefix = root.hasSuffix("/") ? root : root + "/"
        return !file.hasPrefix(prefix)
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}

/// Why a Binary cannot be flashed although its name exists.
public struct UnusableBinary: Error, Sendable, Hashable, CustomStringConvertible {
    public var path: String
    /// What the file is, or the OS reason it cannot be opened.
    public var reason: String
    public var description: String { "'\(path)' \(reason)" }
}

/// The one gate every Binary passes before anything reads it: opened without blocking (a FIFO
/// would otherwise hang `check`, `plan` and `flash` forever) and accepted only when it is a
/// non-empty regular file. Block devices are refused too: their `stat` size is 0 and a Binary
/// that changes under the tool is not an image; copy the device to a file first.
public enum BinaryFile {
    /// The size of the regular file at `path`, or why it cannot be flashed.
    public static func inspect(_ path: String) -> Result<Int64, UnusableBinary> {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            // ENOENT means a dangling link only when the path itself exists (as a link).
            var linkInfo = stat()
            let dangling = code == ENOENT && lstat(path, &linkInfo) == 0
            let reason =
                code == ELOOP
                ? "cannot be opened: too many levels of symbolic links (a link loop)"
                : dangling
                    ? "is a symbolic link to a missing file" : "cannot be opened: \(String(cString: strerror(code)))"
            return .failure(UnusableBinary(path: path, reason: reason))
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            return .failure(
                UnusableBinary(path: path, reason: "cannot be examined: \(String(cString: strerror(errno)))"))
        }
        let kind: String
        switch info.st_mode & S_IFMT {
        case S_IFREG:
            guard info.st_size > 0 else {
                return .failure(UnusableBinary(path: path, reason: "is empty: there is nothing to flash"))
            }
            return .success(Int64(info.st_size))
        case S_IFDIR: kind = "is a directory"
        case S_IFIFO: kind = "is a FIFO (named pipe)"
        case S_IFCHR: kind = "is a character device"
        case S_IFBLK: kind = "is a block device (copy it to an image file first)"
        case S_IFSOCK: kind = "is a socket"
        default: kind = "is not a regular file"
        }
        return .failure(UnusableBinary(path: path, reason: kind + "; a Binary must be a regular file"))
    }
}
