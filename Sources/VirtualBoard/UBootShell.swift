/// The part of U-Boot's hush shell a hand-off script uses: `;` and newlines, `&&`, `||`,
/// `if … then … [else …] fi`, double quotes, `\` escapes and `${name}` / `$name` expansion, and
/// the commands `env set`/`setenv`, `test` (`-z`, `-n`, `=`, `!=`), `gpt write mmc`,
/// `mmc partconf`/`bootbus`/`dev`/`read`, `crc32 ADDR LEN DEST`, `setexpr.l NAME *ADDR`, `echo`,
/// `true`/`false`, `fastboot usb 0` and `stm32prog usb 0`.
///
/// `fastboot` and `stm32prog` start a USB gadget loop and do not return until the host ends it;
/// the model stops the script there and reports which gadget to start. `resume()` goes on after
/// the gadget ended (fastboot `continue`, status 0) with whatever followed it, also inside
/// `if`/`&&`/`||`. Anything else is `Unknown command '…' - try 'help'` and fails, as in U-Boot.
struct UBootShell {
    /// How the script ended.
    enum Outcome: Equatable {
        /// Ran to the end; the status of the last command.
        case finished(status: Int)
        /// `fastboot usb 0` starts the fastboot gadget.
        case fastboot
        /// `stm32prog usb 0` starts stm32prog again (enumeration 1).
        case stm32prog
        /// Not parsable (`syntax error`).
        case syntaxError(String)
    }

    /// What the commands act on.
    struct Machine {
        var env: [String: String]
        var fastbootBuiltIn: Bool
        /// `gpt write mmc <dev> <partitions>`: nil on success, else U-Boot's error text.
        var gptWrite: (Int, String) -> String?
        /// `mmc partconf`/`mmc bootbus` with their arguments.
        var mmc: ([String]) -> Bool
        /// `mmc read`: `count` blocks of 512 bytes from `block` of MMC `device`'s hardware
        /// partition (0: user area); nil when it cannot be read.
        var mmcRead: (_ device: Int, _ hardwarePartition: Int, _ block: UInt64, _ count: Int) -> [UInt8]? = {
            _, _, _, _ in nil
        }
        /// CRC-32 of bytes (U-Boot's `crc32`).
        var crc32: ([UInt8]) -> UInt32 = { _ in 0 }
        var console: (String) -> Void
        /// The MMC `mmc dev` selected: device and hardware partition.
        var mmcDevice: (device: Int, hardwarePartition: Int)?
        /// RAM the commands wrote: blocks by start address.
        var memory: [UInt64: [UInt8]] = [:]
        /// Bytes `mmc read` fetched (the board's storage-time model charges them).
        var bytesRead = 0
    }

    indirect enum Node: Sendable {
        case command([Word])
        case and(Node, Node)
        case or(Node, Node)
        case sequence([Node])
        case conditional(condition: Node, then: Node, otherwise: Node?)
    }

    /// A word: literal parts and variable references, kept apart until expansion.
    struct Word: Sendable { var parts: [Part] }
    enum Part: Sendable {
        case text(String)
        case variable(String)
    }

    /// A gadget command stopped the script; `rest` is what runs after the gadget returned 0.
    private enum Stop: Error { case gadget(Outcome, rest: [Node]) }

    var machine: Machine
    /// Top-level commands after a gadget that stopped the script.
    private var pending: [Node] = []

    init(machine: Machine) { self.machine = machine }

    /// Runs `script`; `machine.env` keeps what it set.
    mutating func run(_ script: String) -> Outcome {
        let program: Node
        do {
            var parser = Parser(tokens: try Self.tokenize(script))
            program = try parser.parseList(until: [])
        } catch {
            machine.console("syntax error")
            return .syntaxError("\(error)")
        }
        guard case .sequence(let nodes) = program else { return .finished(status: 0) }
        return runTopLevel(nodes)
    }

    /// Goes on after the gadget loop returned (status 0).
    mutating func resume() -> Outcome {
        let rest = pending
        pending = []
        return runTopLevel(rest)
    }

    private mutating func runTopLevel(_ nodes: [Node]) -> Outcome {
        var state = machine
        defer { machine = state }
        do {
            return .finished(status: try Self.evaluate(.sequence(nodes), &state))
        } catch Stop.gadget(let outcome, let rest) {
            pending = rest
            return outcome
        } catch {
            return .finished(status: 1)
        }
    }

    // MARK: Evaluation

    private static func evaluate(_ node: Node, _ machine: inout Machine) throws -> Int {
        switch node {
        case .command(let words):
            let arguments = words.map { expand($0, machine.env) }
            guard !arguments.isEmpty else { return 0 }
            return try execute(arguments, &machine)
        case .and(let left, let right):
            let status: Int
            do {
                status = try evaluate(left, &machine)
            } catch Stop.gadget(let outcome, let rest) {
                // The gadget returns 0: the right side runs after whatever was left of the left.
                throw Stop.gadget(outcome, rest: rest.isEmpty ? [right] : [.and(.sequence(rest), right)])
            }
            return status == 0 ? try evaluate(right, &machine) : status
        case .or(let left, let right):
            let status: Int
            do {
                status = try evaluate(left, &machine)
            } catch Stop.gadget(let outcome, let rest) {
                throw Stop.gadget(outcome, rest: rest.isEmpty ? [] : [.or(.sequence(rest), right)])
            }
            return status != 0 ? try evaluate(right, &machine) : status
        case .sequence(let nodes):
            var status = 0
            for (index, node) in nodes.enumerated() {
                do {
                    status = try evaluate(node, &machine)
                } catch Stop.gadget(let outcome, let rest) {
                    throw Stop.gadget(outcome, rest: rest + nodes[(index + 1)...])
                }
            }
            return status
        case .conditional(let condition, let then, let otherwise):
            let status: Int
            do {
                status = try evaluate(condition, &machine)
            } catch Stop.gadget(let outcome, let rest) {
                throw Stop.gadget(
                    outcome,
                    rest: rest.isEmpty
                        ? [then] : [.conditional(condition: .sequence(rest), then: then, otherwise: otherwise)])
            }
            if status == 0 { return try evaluate(then, &machine) }
            return try otherwise.map { try evaluate($0, &machine) } ?? 0
        }
    }

    private static func expand(_ word: Word, _ env: [String: String]) -> String {
        word.parts.map { part in
            switch part {
            case .text(let text): text
            case .variable(let name): env[name] ?? ""
            }
        }.joined()
    }

    private static func execute(_ arguments: [String], _ machine: inout Machine) throws -> Int {
        let name = arguments[0]
        let rest = Array(arguments.dropFirst())
        switch name {
        case "true": return 0
        case "false": return 1
        case "echo":
            machine.console(rest.joined(separator: " "))
            return 0
        case "env" where rest.first == "set", "setenv":
            let values = name == "env" ? Array(rest.dropFirst()) : rest
            guard let variable = values.first else { return 1 }
            let value = values.dropFirst().joined(separator: " ")
            machine.env[variable] = value.isEmpty ? nil : value
            return 0
        case "test":
            return test(rest) ? 0 : 1
        case "gpt" where rest.count >= 4 && rest[0] == "write" && rest[1] == "mmc":
            guard let device = Int(rest[2]) else { return 1 }
            if let error = machine.gptWrite(device, rest[3]) {
                machine.console(error)
                return 1
            }
            return 0
        case "mmc" where rest.first == "partconf" || rest.first == "bootbus":
            return machine.mmc(rest) ? 0 : 1
        case "mmc" where rest.first == "dev":
            guard rest.count >= 2, let device = Int(rest[1]), let part = rest.count > 2 ? Int(rest[2]) : 0,
                machine.mmcRead(device, part, 0, 1) != nil
            else {
                machine.console("Can't set block device")
                return 1
            }
            machine.mmcDevice = (device, part)
            machine.console("switch to partitions #\(part), OK")
            return 0
        case "mmc" where rest.first == "read":
            return mmcRead(rest, &machine)
        case "crc32":
            return crc32(rest, &machine)
        case "setexpr.l":
            // Only `setexpr.l NAME *ADDR`: a native (little-endian) 32-bit load, printed `%lx`.
            guard rest.count == 2, rest[1].hasPrefix("*"), let address = UInt64(rest[1].dropFirst(), radix: 16),
                let word = load(address, 4, machine.memory)
            else { return 1 }
            let value = word.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
            machine.env[rest[0]] = String(value, radix: 16)
            return 0
        case "fastboot" where rest == ["usb", "0"]:
            guard machine.fastbootBuiltIn else { break }
            throw Stop.gadget(.fastboot, rest: [])
        case "stm32prog" where rest == ["usb", "0"]:
            throw Stop.gadget(.stm32prog, rest: [])
        default:
            break
        }
        machine.console("Unknown command '\(name)' - try 'help'")
        return 1
    }

    /// `mmc read ADDR BLK CNT` (hex) from the device and hardware partition `mmc dev` selected.
    private static func mmcRead(_ arguments: [String], _ machine: inout Machine) -> Int {
        guard arguments.count == 4, let address = UInt64(arguments[1], radix: 16),
            let block = UInt64(arguments[2], radix: 16), let count = Int(arguments[3], radix: 16),
            let selected = machine.mmcDevice
        else { return 1 }
        let (device, part) = selected
        machine.console("MMC read: dev # \(device), block # \(block), count \(count) ... ")
        guard let bytes = machine.mmcRead(device, part, block, count) else {
            machine.console("0 blocks read: ERROR")
            return 1
        }
        store(bytes, at: address, &machine.memory)
        machine.bytesRead += bytes.count
        machine.console("\(count) blocks read: OK")
        return 0
    }

    /// `crc32 ADDR LEN [DEST]`: prints the CRC; with DEST stores it big-endian there
    /// (`crc32_wd_buf()`, `store_result()` without env: DEST is an address).
    private static func crc32(_ arguments: [String], _ machine: inout Machine) -> Int {
        guard arguments.count >= 2, let address = UInt64(arguments[0], radix: 16),
            let length = Int(arguments[1], radix: 16), let bytes = load(address, length, machine.memory)
        else { return 1 }
        let crc = machine.crc32(bytes)
        machine.console("crc32 for \(arguments[0]) ... ==> \(String(crc, radix: 16))")
        if arguments.count > 2 {
            guard let destination = UInt64(arguments[2], radix: 16) else { return 1 }
            store((0..<4).map { UInt8(truncatingIfNeeded: crc >> (24 - 8 * $0)) }, at: destination, &machine.memory)
        }
        return 0
    }

    /// Writes into the block holding `address` when it fits there, else starts a new block.
    private static func store(_ bytes: [UInt8], at address: UInt64, _ memory: inout [UInt64: [UInt8]]) {
        let end = address + UInt64(bytes.count)
        if let entry = memory.first(where: { $0.key <= address && end <= $0.key + UInt64($0.value.count) }),
            entry.value.count != bytes.count
        {
            var changed = entry.value
            let start = Int(address - entry.key)
            changed.replaceSubrange(start..<start + bytes.count, with: bytes)
            memory[entry.key] = changed
            return
        }
        memory = memory.filter { $0.key + UInt64($0.value.count) <= address || $0.key >= end }
        memory[address] = bytes
    }

    /// Bytes written earlier (nil: nothing written there, which real RAM would not tell).
    private static func load(_ address: UInt64, _ length: Int, _ memory: [UInt64: [UInt8]]) -> [UInt8]? {
        let end = address + UInt64(length)
        guard let entry = memory.first(where: { $0.key <= address && end <= $0.key + UInt64($0.value.count) })
        else { return nil }
        let start = Int(address - entry.key)
        return Array(entry.value[start..<start + length])
    }

    private static func test(_ arguments: [String]) -> Bool {
        switch arguments.count {
        case 2 where arguments[0] == "-z": arguments[1].isEmpty
        case 2 where arguments[0] == "-n": !arguments[1].isEmpty
        case 3 where arguments[1] == "=": arguments[0] == arguments[2]
        case 3 where arguments[1] == "!=": arguments[0] != arguments[2]
        case 1: !arguments[0].isEmpty
        default: false
        }
    }

    // MARK: Tokens and parsing

    enum Token: Equatable {
        case word(Word)
        case separator  // ; or newline
        case and, or
    }

    struct SyntaxError: Error, CustomStringConvertible {
        var description: String
    }

    static func tokenize(_ text: String) throws -> [Token] {
        var tokens: [Token] = []
        var parts: [Part] = []
        var literal = ""
        var inWord = false
        var quoted = false
        let characters = Array(text)
        var index = 0
        func flushLiteral() {
            if !literal.isEmpty { parts.append(.text(literal)) }
            literal = ""
        }
        func endWord() {
            flushLiteral()
            if inWord { tokens.append(.word(Word(parts: parts))) }
            parts = []
            inWord = false
        }
        while index < characters.count {
            let character = characters[index]
            if character == "\\", index + 1 < characters.count {
                literal.append(characters[index + 1])
                inWord = true
                index += 2
                continue
            }
            if character == "\"" {
                quoted.toggle()
                inWord = true
                index += 1
                continue
            }
            if character == "$" {
                var name = ""
                var next = index + 1
                if next < characters.count, characters[next] == "{" {
                    next += 1
                    while next < characters.count, characters[next] != "}" {
                        name.append(characters[next])
                        next += 1
                    }
                    guard next < characters.count else { throw SyntaxError(description: "unterminated ${") }
                    next += 1
                } else {
                    while next < characters.count,
                        characters[next].isLetter || characters[next].isNumber
                            || characters[next] == "_"
                    {
                        name.append(characters[next])
                        next += 1
                    }
                }
                if name.isEmpty {
                    literal.append("$")
                } else {
                    flushLiteral()
                    parts.append(.variable(name))
                }
                inWord = true
                index = next
                continue
            }
            if quoted {
                literal.append(character)
                index += 1
                continue
            }
            switch character {
            case " ", "\t":
                endWord()
            case ";", "\n":
                endWord()
                tokens.append(.separator)
            case "&" where index + 1 < characters.count && characters[index + 1] == "&":
                endWord()
                tokens.append(.and)
                index += 1
            case "|" where index + 1 < characters.count && characters[index + 1] == "|":
                endWord()
                tokens.append(.or)
                index += 1
            default:
                literal.append(character)
                inWord = true
            }
            index += 1
        }
        guard !quoted else { throw SyntaxError(description: "unterminated quote") }
        endWord()
        return tokens
    }

    struct Parser {
        var tokens: [Token]
        var position = 0

        /// Commands until one of `keywords` starts a command (or the end).
        mutating func parseList(until keywords: Set<String>) throws -> Node {
            var nodes: [Node] = []
            while position < tokens.count {
                if tokens[position] == .separator {
                    position += 1
                    continue
                }
                if let keyword = keyword(at: position), keywords.contains(keyword) { break }
                nodes.append(try parseAndOr())
            }
            return .sequence(nodes)
        }

        mutating func parseAndOr() throws -> Node {
            var node = try parseCommand()
            while position < tokens.count {
                if tokens[position] == .and {
                    position += 1
                    node = .and(node, try parseCommand())
                } else if tokens[position] == .or {
                    position += 1
                    node = .or(node, try parseCommand())
                } else {
                    break
                }
            }
            return node
        }

        mutating func parseCommand() throws -> Node {
            if keyword(at: position) == "if" {
                position += 1
                let condition = try parseList(until: ["then"])
                try expect("then")
                let then = try parseList(until: ["else", "fi"])
                var otherwise: Node?
                if keyword(at: position) == "else" {
                    position += 1
                    otherwise = try parseList(until: ["fi"])
                }
                try expect("fi")
                return .conditional(condition: condition, then: then, otherwise: otherwise)
            }
            var words: [Word] = []
            while position < tokens.count, case .word(let word) = tokens[position] {
                words.append(word)
                position += 1
            }
            guard !words.isEmpty else { throw SyntaxError(description: "expected a command") }
            return .command(words)
        }

        mutating func expect(_ keyword: String) throws {
            guard self.keyword(at: position) == keyword else { throw SyntaxError(description: "expected \(keyword)") }
            position += 1
        }

        /// The plain word at `index` when it is a reserved word.
        func keyword(at index: Int) -> String? {
            guard index < tokens.count, case .word(let word) = tokens[index], word.parts.count == 1,
                case .text(let text) = word.parts[0], ["if", "then", "else", "fi"].contains(text)
            else { return nil }
            return text
        }
    }
}

extension UBootShell.Word: Equatable {
    static func == (a: Self, b: Self) -> Bool { "\(a.parts)" == "\(b.parts)" }
}
