// The FlashLayout parser, linter and planner under libFuzzer (`scripts/fuzz`), or, in a normal
// build, a replayer: `layout-fuzzer FILE...` runs the same checks on saved inputs (crashes found
// by the fuzzer, the corpus) so a crash can be reproduced and debugged without the sanitizer.
//
// Properties checked on every input, beyond "does not crash":
// - U-Boot's raw parser and the linter both return;
// - when the linter finds no error, U-Boot's parser accepts the normalized payload with the same
//   rows (what we accept, the board accepts).
import FlashLayout
import FoundationEssentials

/// Runs every check on one input.
func checkLayout(_ bytes: [UInt8]) {
    _ = UBootLayout.parse(bytes)
    let result = LayoutChecker.check(bytes: bytes, path: "fuzz.tsv", options: LayoutCheckOptions(layoutOnly: true))
    guard !result.hasErrors else { return }
    let payload = LayoutPayload.normalized(result.lines)
    switch UBootLayout.parse(payload.bytes) {
    case .success(let rows):
        precondition(rows.count == result.lines.count, "payload row count differs")
    case .failure(let error):
        preconditionFailure("U-Boot rejects the payload of a clean layout: \(error.message)")
    }
    _ = PartitionPlanner.plan(result.lines)
}

#if FUZZING
    /// libFuzzer's entry for programs that keep their own `main` (SwiftPM names an executable's entry
    /// point `<module>_main` and aliases `main` to it, so libFuzzer's `main` is never linked).
    @_silgen_name("LLVMFuzzerRunDriver")
    func runFuzzerDriver(
        _ argc: UnsafeMutablePointer<CInt>,
        _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
        _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
    ) -> CInt

    @_cdecl("layout_fuzzer_main")
    func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
        var count = argc
        var arguments = argv
        return runFuzzerDriver(&count, &arguments) { data, size in
            checkLayout(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
            return 0
        }
    }
#else
    @main
    struct Replay {
        static func main() {
            for path in CommandLine.arguments.dropFirst() {
                guard let data = FileManager.default.contents(atPath: path) else {
                    print("\(path): cannot read")
                    continue
                }
                checkLayout(Array(data))
                print("\(path): ok")
            }
        }
    }
#endif
