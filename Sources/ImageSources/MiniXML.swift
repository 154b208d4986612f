/// A small strict XML reader for block maps: elements, attributes, text, comments and the XML
/// declaration, each element with the line it starts on so that errors can point at it. No DTDs,
/// no namespaces, no CDATA: bmaptool writes none of them, and refusing them is safer than guessing.
struct XMLElement {
    var name: String
    var attributes: [String: String]
    var text: String
    var children: [XMLElement]
    var line: Int

    func child(_ name: String) -> XMLElement? { children.first { $0.name == name } }
}

struct XMLSyntaxError: Error {
    var line: Int
    var message: String
}

enum MiniXML {
    /// Parses a whole document and returns its root element.
    static func parse(_ bytes: [UInt8]) throws(XMLSyntaxError) -> XMLElement {
        var reader = Reader(bytes: bytes)
        return try reader.document()
    }

    private struct Reader {
        let bytes: [UInt8]
        var index = 0
        var line = 1

        init(bytes: [UInt8]) { self.bytes = bytes }

        func error(_ message: String) -> XMLSyntaxError { XMLSyntaxError(line: line, message: message) }

        func peek(_ text: String) -> Bool {
            let utf8 = Array(text.utf8)
            return index + utf8.count <= bytes.count && Array(bytes[index..<index + utf8.count]) == utf8
        }

        mutating func advance(_ count: Int = 1) {
            for _ in 0..<count where index < bytes.count {
                if bytes[index] == UInt8(ascii: "\n") { line += 1 }
                index += 1
            }
        }

        mutating func skip(until terminator: String, what: String) throws(XMLSyntaxError) {
            let start = line
            while index < bytes.count, !peek(terminator) { advance() }
            guard index < bytes.count else {
                throw XMLSyntaxError(line: start, message: "\(what) is never closed with '\(terminator)'")
            }
            advance(terminator.utf8.count)
        }

        mutating func skipSpace() {
            while index < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { advance() }
        }

        /// Skips whitespace, comments and processing instructions.
        mutating func skipMisc() throws(XMLSyntaxError) {
            while true {
                skipSpace()
                if peek("<!--") {
                    try skip(until: "-->", what: "a comment")
                } else if peek("<?") {
                    try skip(until: "?>", what: "a processing instruction")
                } else {
                    return
                }
            }
        }

        mutating func document() throws(XMLSyntaxError) -> XMLElement {
            if peek("\u{FEFF}") { advance(3) }
            try skipMisc()
            if peek("-----BEGIN PGP") {
                throw error("this block map is GPG clear-signed; give the plain XML map (gpg --decrypt)")
            }
            guard peek("<") else { throw error("expected an XML element") }
            let root = try element()
            try skipMisc()
            guard index == bytes.count else { throw error("unexpected content after the root element") }
            return root
        }

        mutating func name() throws(XMLSyntaxError) -> String {
            let start = index
            while index < bytes.count {
                let byte = bytes[index]
                let isName =
                    (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39)
                    || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".")
                    || byte == UInt8(ascii: ":")
                guard isName else { break }
                advance()
            }
            guard index > start else { throw error("expected a name") }
            return String(decoding: bytes[start..<index], as: UTF8.self)
        }

        mutating func element() throws(XMLSyntaxError) -> XMLElement {
            let startLine = line
            advance()  // <
            if peek("!") { throw error("DTDs and CDATA sections are not accepted in a block map") }
            var element = XMLElement(name: try name(), attributes: [:], text: "", children: [], line: startLine)
            while true {
                skipSpace()
                if peek("/>") {
                    advance(2)
                    return element
                }
                if peek(">") {
                    advance()
                    break
                }
                let attribute = try name()
                skipSpace()
                guard peek("=") else { throw error("attribute '\(attribute)' has no value") }
                advance()
                skipSpace()
                guard index < bytes.count, bytes[index] == 0x22 || bytes[index] == 0x27 else {
                    throw error("the value of attribute '\(attribute)' is not quoted")
                }
                let quote = bytes[index]
                advance()
                let start = index
                while index < bytes.count, bytes[index] != quote { advance() }
                guard index < bytes.count else { throw error("the value of attribute '\(attribute)' is never closed") }
                element.attributes[attribute] = try decode(bytes[start..<index])
                advance()
            }
            var text: [UInt8] = []
            while true {
                guard index < bytes.count else {
                    throw XMLSyntaxError(line: startLine, message: "element <\(element.name)> is never closed")
                }
                if peek("<!--") {
                    try skip(until: "-->", what: "a comment")
                } else if peek("</") {
                    advance(2)
                    let closing = try name()
                    guard closing == element.name else {
                        throw error("</\(closing)> closes <\(element.name)> opened on line \(startLine)")
                    }
                    skipSpace()
                    guard peek(">") else { throw error("expected '>' after </\(closing)") }
                    advance()
                    element.text = try decode(text[...])
                    return element
                } else if peek("<?") {
                    try skip(until: "?>", what: "a processing instruction")
                } else if peek("<") {
                    element.children.append(try self.element())
                } else {
                    text.append(bytes[index])
                    advance()
                }
            }
        }

        func decode(_ raw: ArraySlice<UInt8>) throws(XMLSyntaxError) -> String {
            let text = String(decoding: raw, as: UTF8.self)
            guard text.contains("&") else { return text }
            var result = ""
            var rest = Substring(text)
            while let amp = rest.firstIndex(of: "&") {
                result += rest[..<amp]
                guard let semicolon = rest[amp...].firstIndex(of: ";") else { throw error("a bare '&' in text") }
                switch rest[rest.index(after: amp)..<semicolon] {
                case "amp": result += "&"
                case "lt": result += "<"
                case "gt": result += ">"
                case "quot": result += "\""
                case "apos": result += "'"
                case let other: throw error("unknown entity '&\(other);'")
                }
                rest = rest[rest.index(after: semicolon)...]
            }
            return result + rest
        }
    }
}
