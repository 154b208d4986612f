import BootImages
import Diagnostics
import FlashEngine
import FlashLayout
import FoundationEssentials
import Glibc
import StationRecords
import Synchronization
import SystemPackage
import USBModel

/// Where attempt records go when `--db` is not given: systemd's `$STATE_DIRECTORY` for the
/// service, else the XDG state folder (`$XDG_STATE_HOME`, default `~/.local/state`).
enum RecordLocation {
    static func defaultPath(environment: (String) -> String? = { getenv($0).map { String(cString: $0) } }) -> String {
        if let state = environment("STATE_DIRECTORY"), !state.isEmpty {
            return String(state.split(separator: ":").first ?? "") + "/records.sqlite"
        }
        let base =
            environment("XDG_STATE_HOME").flatMap { $0.hasPrefix("/") ? $0 : nil }
            ?? (environment("HOME") ?? "/tmp") + "/.local/state"
        return base + "/stm32mp-flash/records.sqlite"
    }

    /// Opens the store at `path`, creating its folder.
    /// - Throws: `RecordStoreError` naming the folder or the file.
    static func open(_ path: String) throws(RecordStoreError) -> RecordStore {
        let folder = parentDirectory(of: path)
        var built = ""
        for part in folder.split(separator: "/") {
            built += "/" + part
            if mkdir(built, 0o755) != 0 && errno != EEXIST {
                throw RecordStoreError(
                    path: path, reason: "cannot create \(built): \(String(cString: strerror(errno)))")
            }
        }
        return try RecordStore(path: path)
    }
}

/// The records of one board's run: the attempt row is written when the board is taken, then the
/// engine's events are collected (serial as last seen, partitions as sent) so that the end, done
/// or failed, is written in one transaction.
final class AttemptRecording: Sendable {
    let store: RecordStore
    let id: Int64
    private let plan: PartitionPlan
    private let seen = Mutex(Seen())

    private struct Seen {
        var serial: String?
        var soc: String?
        var port: String?
        var partitions: [PhaseResult] = []
        /// How each partition was checked after writing, by phase.
        var checks: [UInt8: PartitionCheck.Method] = [:]
    }

    /// Writes the unfinished attempt row.
    static func begin(
        store: RecordStore, layout: LayoutFingerprint, plan: PartitionPlan, port: PortPath?, serial: String?,
        soc: String?
    ) async throws(RecordStoreError) -> AttemptRecording {
        let id = try await store.begin(
            AttemptStart(
                serial: serial, port: port?.description ?? "", soc: soc, layoutPath: layout.path,
                layoutSHA256: layout.sha256, started: Date(), toolVersion: RootCommand.toolVersion,
                hostName: HostName.current))
        return AttemptRecording(store: store, id: id, plan: plan)
    }

    private init(store: RecordStore, id: Int64, plan: PartitionPlan) {
        self.store = store
        self.id = id
        self.plan = plan
    }

    /// Feed every engine event through here.
    func observe(_ event: FlashEvent) {
        seen.withLock { seen in
            switch event {
            case .board(let identity, _), .reenumerated(_, _, let identity, _):
                if let serial = identity.serial, !serial.isEmpty { seen.serial = serial }
                if let family = ChipFamily.fromProduct(identity.product) { seen.soc = family.rawValue }
                seen.port = identity.port.description
            case .phaseFinished(let result):
                seen.partitions.append(result)
            case .verified(let check):
                seen.checks[check.phase] = check.method
            default: break
            }
        }
    }

    /// Writes the end: `done`, or `failed`/`cancelled` with the diagnosis.
    func finish(result: AttemptResult, diagnosis: Diagnosis? = nil) async throws(RecordStoreError) {
        let seen = seen.withLock { $0 }
        var partitions: [PartitionRecord] = []
        for phase in seen.partitions {
            let sha256: String
            if let file = plan.files[phase.phase] {
                sha256 = (try? FileDigest.sha256(path: file.path)) ?? ""
            } else if phase.phase == 0x00 {
                sha256 = FileDigest.sha256(bytes: plan.payload.bytes)
            } else {
                sha256 = ""
            }
            // A partition sent twice (a retry) keeps its last sending. Verified: read back after
            // writing and equal (a mismatch fails the attempt before a check event is sent).
            partitions.removeAll { $0.id == phase.phase }
            let method = seen.checks[phase.phase]
            partitions.append(
                PartitionRecord(
                    id: phase.phase, name: phase.name, bytes: phase.bytes, sha256: sha256,
                    verified: method == .full || method == .sampled))
        }
        try await store.finish(
            id,
            AttemptEnd(
                result: result, ended: Date(), serial: seen.serial, soc: seen.soc, port: seen.port,
                diagnosisCode: diagnosis?.code.rawValue, diagnosisCause: diagnosis?.cause, partitions: partitions))
    }
}

/// The layout as recorded: its path and the SHA-256 of its bytes when the run started.
struct LayoutFingerprint: Sendable {
    var path: String
    var sha256: String

    init(path: String) throws(FileDigestError) {
        self.path =
            realpath(path, nil).map { resolved in
                defer { free(resolved) }
                return String(cString: resolved)
            } ?? path
        sha256 = try FileDigest.sha256(path: path)
    }
}

enum HostName {
    static var current: String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "unknown" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
