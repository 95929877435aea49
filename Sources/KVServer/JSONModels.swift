import FoundationEssentials
import KVCore

enum JSON {
    static func encode<Value: Encodable>(_ value: Value) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array((try? encoder.encode(value)) ?? Data("{}".utf8))
    }

    static func decode<Value: Decodable>(_ type: Value.Type, from bytes: [UInt8]) throws(KVError) -> Value {
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch {
            throw KVError(.invalidRequest, "the body is not the expected JSON: \(describe(error))")
        }
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): "missing field '\(key.stringValue)'"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            "wrong type at '\(context.codingPath.map(\.stringValue).joined(separator: "."))'"
        case DecodingError.dataCorrupted(let context) where context.codingPath.isEmpty: "malformed JSON"
        case DecodingError.dataCorrupted(let context):
            "invalid value at '\(context.codingPath.map(\.stringValue).joined(separator: "."))'"
        default: "malformed JSON"
        }
    }
}

/// A batch body whose items are decoded one by one: an item that does not parse (a
/// missing field, a key part of the wrong JSON type, an integer out of range) is
/// answered in place with its error, and the other items still run.
struct BatchRequestBody: Decodable {
    /// Each item, or why it does not parse.
    var operations: [Result<WireBatchOperation, KVError>]

    private enum CodingKeys: String, CodingKey {
        case operations
    }

    /// One item: decoding it never fails, so one bad item cannot fail the array.
    private struct Item: Decodable {
        var parsed: Result<WireBatchOperation, KVError>

        init(from decoder: any Decoder) {
            do {
                parsed = .success(try WireBatchOperation(from: decoder))
            } catch {
                let inKey = Self.path(of: error).contains {
                    $0.stringValue == WireBatchOperation.CodingKeys.key.stringValue
                }
                parsed = .failure(
                    KVError(
                        inKey ? .invalidKeyPart : .invalidRequest,
                        "the operation is not the expected JSON: \(JSON.describe(error))"))
            }
        }

        static func path(of error: any Error) -> [any CodingKey] {
            switch error {
            case DecodingError.keyNotFound(_, let context), DecodingError.typeMismatch(_, let context),
                DecodingError.valueNotFound(_, let context), DecodingError.dataCorrupted(let context):
                context.codingPath
            default: []
            }
        }
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        operations = try container.decode([Item].self, forKey: .operations).map(\.parsed)
    }
}
