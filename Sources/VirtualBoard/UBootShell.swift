/// The part of U-Boot's hush shell a hand-off script uses: `;` and newlines, `&&`, `||`,
/// `if … then … [else …] fi`, double quotes, `\` escapes and `${name}` / `$name` expansion, and
/// the commands `env set`/`setenv`, `test` (`-z`, `-n`, `=`, `!=`), `gpt write mmc`,
/// `mmc partconf`/`bootbus`, `echo`, `true`/`false`, `fastboot usb 0` and `stm32prog usb 0`.
///
/// `fastboot` and `stm32prog` start a USB gadget loop and do not return until the host ends it;
/// the model stops the script there and reports which gadget to start. `resume()` goes on after
/// the gadget ended (fastboot `continue`) when the gadget command stood at the script's top
/// level; inside `if`/`&&`/`||` the rest is not run (not modelled). Anything else is
/// `Unknown command '…' - try 'help'` and fails, as in U-Boot.
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
        var console: (String) -> Void
    }

    indirect enum Node {
        case command([Word])
        case and(Node, Node)
        case or(Node, Node)
        case sequence([Node])
        case conditional(condition: Node, then: Node, otherwise: Node?)
    }

    /// A word: literal parts and variable references, kept apart until expansion.
    struct Word { var parts: [Part] }
    enum Part {
        case text(String)
        case variable(String)
    }

    private enum Stop: Error { case gadget(Outcome) }

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
        var status = 0
        for (index, node) in nodes.enumerated() {
            do {
                status = try Self.evaluate(node, &state)
            } catch Stop.gadget(let outcome) {
                if case .command = node { pending = Array(nodes[(index + 1)...]) }
                return outcome
            } catch {
                status = 1
            }
        }
        return .finished(status: status)
    }

    // MARK: Evaluation

    private static func evaluate(_ node: Node, _ machine: inout Machine) throws -> Int {
        switch node {
        case .command(let words):
            let arguments = words.map { expand($0, machine.env) }
            guard !arguments.isEmpty else { return 0 }
            return try execute(arguments, &machine)
        case .and(let left, let right):
            let status = try evaluate(left, &machine)
            return status == 0 ? try evaluate(right, &machine) : status
        case .or(let left, let right):
            let status = try evaluate(left, &machine)
            return status != 0 ? try evaluate(right, &machine) : status
        case .sequence(let nodes):
            var status = 0
            for node in nodes { status = try evaluate(node, &machine) }
            return status
        case .conditional(let condition, let then, let otherwise):
            if try evaluate(condition, &machine) == 0 { return try evaluate(then, &machine) }
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
        case "fastboot" where rest == ["usb", "0"]:
            guard machine.fastbootBuiltIn else { break }
            throw Stop.gadget(.fastboot)
        case "stm32prog" where rest == ["usb", "0"]:
            throw Stop.gadget(.stm32prog)
        default:
            break
        }
        machine.console("Unknown command '\(name)' - try 'help'")
        return 1
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
