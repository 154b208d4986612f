import BootImages
import DFU
import FlashEngine

/// The FSBL at the ROM: refused by the ROM (item 2), or for another chip (item 9). The ROM says
/// only errVERIFY; the file, read on the host, tells which of its checks most likely failed.
enum FSBLRules {
    static func rejected(_ rejection: FSBLRejection, _ context: Diagnoser.Context) -> Diagnosis {
        var evidence = ["the ROM answered GETSTATUS with \(rejection.statusText)"]
        let name = rejection.path
        let cause: String
        var steps: [String]
        if let problem = rejection.imageProblem {
            evidence.append("the host cannot read a valid STM32 header in \(name): \(problem)")
            cause = "The ROM refused the FSBL: its STM32 header is not valid."
            steps = [
                "Point the phase 0x01 line (Id `fsbl-boot`) at TF-A's USB programmer image (`tf-a-<board>-usb.stm32`), unmodified.",
                "Run `stm32mp-flash check <layout>`: it decodes the header and names what is wrong.",
            ]
        } else if let image = rejection.image, case .stm32(let header) = image.kind {
            let version = header.version == .v1 ? "v1" : "v2"
            let fits = image.chipHint.map(\.description).joined(separator: "/")
            evidence.append(
                "\(name): STM32 header \(version) (\(fits)), \(image.fileSize) bytes, "
                    + (header.isSigned ? "signed" : "not signed"))
            if let board = rejection.board { evidence.append("the ROM's product string names an \(board)") }
            if let board = rejection.board, !image.chipHint.contains(board) {
                cause =
                    "The ROM refused the FSBL: its STM32 header \(version) is for \(fits), the board is an \(board)."
                steps = [
                    "Use the FlashLayout and TF-A built for this board's chip (\(board)).",
                    "`stm32mp-flash check --soc \(socOption(board)) <layout>` checks this offline.",
                ]
            } else if image.checksumMatches == false {
                evidence.append(
                    image.missingPayloadBytes > 0
                        ? "the file is \(image.missingPayloadBytes) bytes short of the length its header announces"
                        : "the payload's byte sum is 0x\(String(image.computedChecksum ?? 0, radix: 16, uppercase: true)), the header says 0x\(String(header.checksum, radix: 16, uppercase: true))"
                )
                cause =
                    "The ROM refused the FSBL: its payload does not match the STM32 header's checksum (a truncated or modified file)."
                steps = [
                    "Copy or build the TF-A image again; do not edit a .stm32 file after it is made (re-run `stm32image`/`mkimage` if you must).",
                    "Run `stm32mp-flash check <layout>`: it verifies the checksum before any run.",
                ]
            } else if header.isSigned {
                cause =
                    "The ROM refused the FSBL: the image is signed and its header and checksum are intact, so the signature (or the key hash in the chip's OTP, or the anti-rollback version) did not verify."
                steps = [
                    "Sign the FSBL with the key whose hash is programmed in this chip's OTP (ST's `STM32MP_SigningTool_CLI`), or send an unsigned image to an open chip.",
                    "Check the header's version number against the chip's anti-rollback counter.",
                ]
            } else {
                cause =
                    "The ROM refused the FSBL although its STM32 header, chip and checksum are right: the image is not signed, so a closed (secure-boot) chip refuses it."
                steps = [
                    "On a closed chip, send an FSBL signed with the chip's key (ST's `STM32MP_SigningTool_CLI`).",
                    "On an open chip, send the TF-A image of the same release that booted before, and report the case with the `--json` timeline.",
                ]
            }
        } else {
            evidence.append("\(name) has no STM32 header (it does not start with `STM2`)")
            cause = "The ROM refused the FSBL: the file is not an STM32 image."
            steps = [
                "Point the phase 0x01 line (Id `fsbl-boot`) at TF-A's `.stm32` USB programmer image, not at a raw `.bin` or a FIP.",
                "Run `stm32mp-flash check <layout>`: it tells an STM32 image from other files.",
            ]
        }
        steps.append("The ROM stays in DFU mode and waits for an FSBL again: no reset is needed before the next run.")
        return Diagnosis(
            code: .fsblRejected, cause: cause, evidence: evidence, nextSteps: steps)
    }

    static func wrongChip(_ mismatch: FSBLChipMismatch, _ context: Diagnoser.Context) -> Diagnosis {
        Diagnosis(
            code: .fsblWrongChip,
            cause:
                "The FSBL \(mismatch.path) is built for \(mismatch.fits.map(\.description).joined(separator: "/")), but the board is an \(mismatch.board); nothing was sent.",
            evidence: [
                "\(mismatch.path): \(mismatch.headerText)",
                "the ROM's product string: \"\(mismatch.product)\"",
            ],
            nextSteps: [
                "Use the FlashLayout and images made for this board's chip (\(mismatch.board)): STM32MP15 takes STM32 header v1 images, STM32MP13 and STM32MP2 v2.",
                "`stm32mp-flash check --soc \(socOption(mismatch.board)) <layout>` checks a layout against a chip offline.",
            ])
    }

    /// The `--soc` value of a family.
    static func socOption(_ family: ChipFamily) -> String {
        switch family {
        case .mp15: "mp15"
        case .mp13: "mp13"
        case .mp2: "mp25"
        }
    }
}
