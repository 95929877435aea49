extension KeyPart {
    /// Parses one key part from its textual form for `type`:
    /// - `string`: the bytes must be valid UTF-8;
    /// - `bytes`: taken as they are (URL paths carry them percent-encoded);
    /// - `int64`: optional `-`, then decimal digits, within 64 bits;
    /// - `uuid`: the canonical `8-4-4-4-12` hexadecimal form.
    public static func parse(_ text: [UInt8], as type: KeyPartType) throws(KVError) -> KeyPart {
        switch type {
        case .bytes:
            return .bytes(text)
        case .string:
            guard let string = String(validating: text, as: UTF8.self) else {
                throw KVError(.invalidKeyPart, "a string key part is not valid UTF-8")
            }
            return .string(string)
        case .int64:
            let string = String(decoding: text, as: UTF8.self)
            let digits = string.hasPrefix("-") ? string.dropFirst() : Substring(string)
            guard !digits.isEmpty, digits.utf8.allSatisfy({ (0x30...0x39).contains($0) }),
                let number = Int64(string)
            else {
                throw KVError(.invalidKeyPart, "'\(string.prefix(40))' is not a 64-bit integer")
            }
            return .int64(number)
        case .uuid:
            let string = String(decoding: text, as: UTF8.self)
            guard let id = UUIDValue(string) else {
                throw KVError(
                    .invalidKeyPart, "'\(string.prefix(40))' is not a UUID (8-4-4-4-12 hexadecimal digits)")
            }
            return .uuid(id)
        }
    }

    /// Parses one key part from a string (see ``parse(_:as:)-([UInt8],_)``).
    public static func parse(_ text: String, as type: KeyPartType) throws(KVError) -> KeyPart {
        try parse(Array(text.utf8), as: type)
    }

    /// The part's textual form, as ``parse(_:as:)-([UInt8],_)`` reads it; bytes parts are
    /// returned raw, for the caller to escape as its format requires.
    public var textBytes: [UInt8] {
        switch self {
        case .string(let text): Array(text.utf8)
        case .bytes(let data): data
        case .int64(let number): Array(String(number).utf8)
        case .uuid(let id): Array(id.description.utf8)
        }
    }
}
