import Diagnostics
import FlashEngine
import FlashLayout
import Foundation
import TestSupport
import Testing

/// Issue 9 item 10: a Binary that cannot be read when its phase is sent is this computer's
/// problem: `host-file`, naming the path and the OS reason, never a board or protocol fault.
@Suite("Binaries unreadable at send time are host faults")
struct HostFileTests {
    /// The example set, copied so that one Binary can be broken after the plan is made.
    func rig() throws -> (SimulatedFlash, TemporaryDirectory) {
        let copy = try TemporaryDirectory()
        let examples = try SimulatedFlash.exampleSet.get().path
        for name in try FileManager.default.contentsOfDirectory(atPath: examples) {
            try FileManager.default.copyItem(atPath: examples + "/" + name, toPath: copy.file(name))
        }
        return (try SimulatedFlash(layout: "mp15-sdcard", examples: copy.path), copy)
    }

    @Test(
        "a Binary replaced or removed after the check: host-file with the path and the OS reason",
        arguments: ["is a directory", "removed"])
    func unreadableAtSendTime(change: String) async throws {
        let (rig, copy) = try rig()
        let path = try #require(rig.plan.files[0x10]?.path)
        try FileManager.default.removeItem(atPath: path)
        if change == "is a directory" {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        }
        do {
            _ = try await rig.run()
            Issue.record("flashed although \(path) \(change)")
        } catch {
            guard case .hostFile(let failedPath, let reason) = error.reason else {
                Issue.record("\(error) is not a host-file failure")
                return
            }
            #expect(failedPath == path)
            #expect(
                reason.contains(change == "removed" ? "No such file or directory" : "Is a directory"), "\(reason)")
            #expect(error.phase == 0x10)
            let diagnosis = Diagnoser.diagnose(Evidence(failure: error))
            #expect(diagnosis.code == .hostFile)
            #expect(diagnosis.evidence.contains { $0.contains(path) }, "\(diagnosis.evidence)")
        }
        _ = copy
    }
}
