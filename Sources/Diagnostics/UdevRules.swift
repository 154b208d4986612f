import Glibc

/// The udev rule that lets a user open an STM32MP board at every stage without root.
///
/// One line per PID (df11 for ROM/TF-A/U-Boot DFU, 0afb for fastboot, 5720 for other U-Boot
/// gadgets), `TAG+="uaccess"` for the desktop user and MODE 0660 (never 0666). The file number 60
/// is below systemd's 73-seat-late.rules, which is where uaccess is applied.
public enum UdevRules {
    public static let installPath = "/etc/udev/rules.d/60-stm32mp-flash.rules"
    /// `udevadm` arguments, run in this order after writing the file.
    public static let reloadCommands = [
        ["udevadm", "control", "--reload-rules"], ["udevadm", "trigger", "--subsystem-match=usb"],
    ]

    /// Why a rule could not be produced or installed; the CLI prints it and exits 1.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// The rule file's text. A `group` adds `GROUP=` so users without a local seat (SSH, CI)
    /// get access by group membership.
    public static func text(group: String? = nil) throws(Failure) -> String {
        if let group { try validate(group: group) }
        var lines = [
            "# \(installPath): written by `stm32mp-flash udev-rules`.",
            "# STM32MP boards keep 0483:df11 in the ROM, TF-A and U-Boot stm32prog stages; U-Boot uses 0afb for",
            "# fastboot and 5720 for other gadgets. uaccess gives the logged-in user access (applied by",
            "# 73-seat-late.rules, hence a number below 73)"
                + (group == nil ? "." : "; GROUP covers users without a seat."),
        ]
        for product in ["df11", "0afb", "5720"] {
            var rule =
                "SUBSYSTEM==\"usb\", ENV{DEVTYPE}==\"usb_device\", ATTR{idVendor}==\"0483\", ATTR{idProduct}==\"\(product)\", MODE=\"0660\""
            if let group { rule += ", GROUP=\"\(group)\"" }
            rule += ", TAG+=\"uaccess\""
            lines.append(rule)
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Group names as `groupadd` accepts them; anything else could break out of the quoted value.
    static func validate(group: String) throws(Failure) {
        let allowed = group.utf8.allSatisfy { byte in
            (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x30 && byte <= 0x39)
                || byte == 0x5F || byte == 0x2D || byte == 0x2E
        }
        guard !group.isEmpty, group.count <= 32, allowed, group.first != "-" else {
            throw Failure(description: "\"\(group)\" is not a valid group name (letters, digits, '_', '-', '.').")
        }
    }

    /// Writes the rule below `root` and reloads udev.
    ///
    /// Refuses unless `effectiveUID` (default: the process's) is 0 (writing into a test root is allowed to anyone). The
    /// file is written to a temporary name in the same folder and renamed, so a failure never
    /// leaves a partial rule behind.
    /// - Parameter run: runs one command (argv) and returns its exit status (default: spawn it);
    ///   only called for the live root.
    /// - Returns: the path written.
    public static func install(
        group: String? = nil, root: String = "/", effectiveUID: UInt32? = nil,
        run: ((_ arguments: [String]) -> Int32)? = nil
    ) throws(Failure) -> String {
        let files = HostFiles(root: root)
        if files.isLiveSystem && (effectiveUID ?? geteuid()) != 0 {
            throw Failure(
                description:
                    "Installing a udev rule needs root: run `sudo stm32mp-flash udev-rules --install`. Nothing was written."
            )
        }
        let content = try text(group: group)
        let target = files.resolve(installPath)
        let folder = String(target[..<(target.lastIndex(of: "/") ?? target.endIndex)])
        try makeFolders(folder)
        let temporary = folder + "/.60-stm32mp-flash.rules.tmp"
        try write(content, to: temporary)
        guard rename(temporary, target) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw Failure(description: "Cannot create \(target): \(reason). Nothing was installed.")
        }
        if files.isLiveSystem {
            let runner = run ?? Subprocess.run
            for command in reloadCommands where runner(command) != 0 {
                throw Failure(
                    description:
                        "Wrote \(target), but `\(command.joined(separator: " "))` failed: reload udev yourself, then re-plug the board."
                )
            }
        }
        return target
    }

    static func makeFolders(_ path: String) throws(Failure) {
        var current = ""
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, 0o755) == 0 {
                // udev (and every user) must be able to traverse it, whatever the umask.
                _ = chmod(current, 0o755)
            } else if errno != EEXIST {
                throw Failure(
                    description: "Cannot create \(current): \(String(cString: strerror(errno))). Nothing was written.")
            }
        }
    }

    static func write(_ content: String, to path: String) throws(Failure) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else {
            throw Failure(
                description: "Cannot write \(path): \(String(cString: strerror(errno))). Nothing was written.")
        }
        // Rules must be readable by udev and by `doctor` run as a user: 0644 whatever the umask.
        guard fchmod(fd, 0o644) == 0 else {
            close(fd)
            unlink(path)
            throw Failure(description: "Cannot set the mode of \(path): \(String(cString: strerror(errno))).")
        }
        let bytes = Array(content.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else {
                close(fd)
                unlink(path)
                throw Failure(
                    description: "Cannot write \(path): \(String(cString: strerror(errno))). Nothing was written.")
            }
            offset += written
        }
        let synced = fsync(fd) == 0
        guard close(fd) == 0, synced else {
            unlink(path)
            throw Failure(description: "Cannot write \(path). Nothing was written.")
        }
    }
}
