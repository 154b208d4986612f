import Foundation
import TestSupport
import Testing

/// The completion scripts the argument parser generates, run in the real shells: values for
/// `--soc`, `--sim-scenario`, `--for`, and `.tsv` files for layouts.
@Suite("Shell completions")
struct ShellCompletionTests {
    let tool: ExternalTool
    let directory: TemporaryDirectory

    init() throws {
        tool = try BuiltProducts.tool("stm32mp-flash")
        directory = try TemporaryDirectory()
        for name in ["line-a.tsv", "line-b.tsv", "notes.txt"] {
            try Data().write(to: URL(fileURLWithPath: directory.file(name)))
        }
    }

    func script(_ shell: String) throws -> String {
        let result = try tool.run(["--generate-completion-script", shell])
        #expect(result.status == 0)
        let path = directory.file("completion.\(shell)")
        try result.standardOutput.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Completes the last word of `line` with bash's programmable completion.
    func bash(_ line: String) throws -> [String] {
        let script = try script("bash")
        let words = line.split(separator: " ", omittingEmptySubsequences: false).map { "'\($0)'" }
        let program = """
            shopt -s extglob; source '\(script)'
            COMP_WORDS=(\(words.joined(separator: " "))); COMP_CWORD=\(words.count - 1)
            COMP_LINE='\(line)'; COMP_POINT=${#COMP_LINE}
            _stm32mp-flash stm32mp-flash "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
            printf '%s\\n' "${COMPREPLY[@]}"
            """
        let result = try ExternalTool("bash", package: "bash").run(["-c", program], workingDirectory: directory.path)
        #expect(result.status == 0, "\(result.standardError)")
        return result.standardOutput.split(separator: "\n").map(String.init).sorted()
    }

    /// Completes `line` with fish's `complete -C`, values only.
    func fish(_ line: String) throws -> [String] {
        let script = try script("fish")
        let result = try ExternalTool("fish", package: "fish").run(
            ["-c", "source '\(script)'; complete -C '\(line)'"], workingDirectory: directory.path)
        #expect(result.status == 0, "\(result.standardError)")
        return result.standardOutput.split(separator: "\n").map { String($0.prefix { $0 != "\t" }) }.sorted()
    }

    @Test("bash completes values and layout files")
    func bashCompletes() throws {
        #expect(try bash("stm32mp-flash flash x.tsv --soc ") == ["mp13", "mp15", "mp25"])
        #expect(try bash("stm32mp-flash flash x.tsv --sim-scenario write").contains("write-error"))
        #expect(try bash("stm32mp-flash vm-filter --for v") == ["virtualbox", "vmware"])
        #expect(try bash("stm32mp-flash flash line") == ["line-a.tsv", "line-b.tsv"])
        #expect(try bash("stm32mp-flash check ").filter { $0.hasSuffix(".txt") }.isEmpty)
    }

    @Test("fish completes values and layout files")
    func fishCompletes() throws {
        #expect(try fish("stm32mp-flash flash x.tsv --soc ") == ["mp13", "mp15", "mp25"])
        #expect(try fish("stm32mp-flash flash x.tsv --sim-scenario ").contains("vanish-mid-partition"))
        #expect(try fish("stm32mp-flash vm-filter --for ").contains("proxmox"))
        #expect(try fish("stm32mp-flash plan line") == ["line-a.tsv", "line-b.tsv"])
    }

    @Test("zsh's script parses and carries the same value lists and the layout file pattern")
    func zshScript() throws {
        let path = try script("zsh")
        let check = try ExternalTool("zsh", package: "zsh").run(["-n", path])
        #expect(check.status == 0, "\(check.standardError)")
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.contains("___soc=('mp15' 'mp13' 'mp25')"))
        #expect(text.contains("___for=('virtualbox' 'vmware' 'qemu'"))
        #expect(text.contains("'write-error'"))
        #expect(text.contains(":layout:_files -g '\\''*.tsv'\\''"))
    }
}
