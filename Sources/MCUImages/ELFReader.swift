/// The loadable segments of a little-endian ELF file (32- or 64-bit): each PT_LOAD with file bytes
/// goes to its physical address (p_paddr), which is where a linker script's `AT>FLASH` puts
/// initialised data, as objcopy -O binary does.
enum ELFReader {
    static func parse(_ bytes: [UInt8], path: String) throws(MCUImageError) -> MCUImage {
        func fail(_ field: String, _ message: String) -> MCUImageError {
            MCUImageError(path: path, field: field, message: message)
        }
        guard bytes.count >= 52 else { throw fail("ELF header", "the file is too short for an ELF header") }
        let is64: Bool
        switch bytes[4] {
        case 1: is64 = false
        case 2: is64 = true
        default: throw fail("EI_CLASS", "unknown class \(bytes[4])")
        }
        guard bytes[5] == 1 else {
            throw fail("EI_DATA", "big-endian ELF files are not supported (STM32 is little-endian)")
        }
        func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
        func u32(_ at: Int) -> UInt64 {
            UInt64(bytes[at]) | UInt64(bytes[at + 1]) << 8 | UInt64(bytes[at + 2]) << 16 | UInt64(bytes[at + 3]) << 24
        }
        func u64(_ at: Int) -> UInt64 { u32(at) | u32(at + 4) << 32 }
        let phoff = Int(is64 ? u64(32) : u32(28))
        let phentsize = u16(is64 ? 54 : 42)
        let phnum = u16(is64 ? 56 : 44)
        guard phnum > 0 else {
            throw fail("e_phnum", "no program headers: link the file (an object file has no load segments)")
        }
        var segments: [MCUSegment] = []
        for index in 0..<phnum {
            let at = phoff + index * phentsize
            guard at + (is64 ? 56 : 32) <= bytes.count else {
                throw fail("program header \(index)", "runs past the end of the file")
            }
            guard u32(at) == 1 else { continue }  // PT_LOAD only
            let offset = Int(is64 ? u64(at + 8) : u32(at + 4))
            let physical = is64 ? u64(at + 24) : u32(at + 12)
            let fileSize = Int(is64 ? u64(at + 32) : u32(at + 16))
            guard fileSize > 0 else { continue }  // .bss
            guard offset + fileSize <= bytes.count else {
                throw fail(
                    "program header \(index) p_filesz",
                    "\(fileSize) bytes at offset \(offset) run past the end of the file")
            }
            segments.append(MCUSegment(address: physical, bytes: Array(bytes[offset..<offset + fileSize])))
        }
        return MCUImage(format: .elf, segments: segments)
    }
}
