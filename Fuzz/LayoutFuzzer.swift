// libFuzzer entry point for the FlashLayout parser, linter and planner. Built by scripts/fuzz
// together with the FlashLayout sources (one module), so internal checks run too.
//
// Properties checked on every input, beyond "does not crash":
// - U-Boot's raw parser and the linter both return;
// - when the linter finds no error, U-Boot's parser accepts the normalized payload with the same
//   rows (what we accept, the board accepts).

@_cdecl("LLVMFuzzerTestOneInput")
public func layoutFuzzerTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    _ = UBootLayout.parse(bytes)
    let result = LayoutChecker.check(bytes: bytes, path: "fuzz.tsv", options: LayoutCheckOptions(layoutOnly: true))
    if !result.hasErrors {
        let payload = LayoutPayload.normalized(result.lines)
        switch UBootLayout.parse(payload.bytes) {
        case .success(let rows):
            precondition(rows.count == result.lines.count, "payload row count differs")
        case .failure(let error):
            preconditionFailure("U-Boot rejects the payload of a clean layout: \(error.message)")
        }
        _ = PartitionPlanner.plan(result.lines)
    }
    return 0
}
