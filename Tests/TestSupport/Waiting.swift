import FoundationEssentials

/// Polls `condition` every 10 ms until it holds or `seconds` pass, suspending (never
/// blocking a thread of the cooperative pool, which parallel tests share). Tests wait on what
/// happened, with `seconds` only as a guard against a hung run, never as the measure.
public func waitUntil(timeout seconds: Double, _ condition: () -> Bool) async {
    let deadline = Date().addingTimeInterval(seconds)
    while !condition() && Date() < deadline {
        try? await Task.sleep(for: .milliseconds(10))
    }
}
