import ArgumentParser
import KVCore

/// `kv server`'s listeners for other systems' HTTP APIs. Each setting comes from its
/// flag, its environment variable, the YAML file or the default.
struct DialectOptions: ParsableArguments {
    @Option(
        name: .customLong("minikeyvalue-port"),
        help:
            "Also serve minikeyvalue's HTTP API (and kvDB's) on this port, at the root; 0 picks a free port (default: off)."
    )
    var minikeyvaluePort: Int?
    @Option(
        name: .customLong("minikeyvalue-table"),
        help:
            "NAMESPACE/TABLE the minikeyvalue API keeps its keys in, created on first use (default minikeyvalue/values)."
    )
    var minikeyvalueTable: String?
    @Option(
        name: .customLong("resp-port"),
        help:
            "Also serve the Redis protocol (RESP2/RESP3) on this port; database n is the last-writer-wins table redis/db<n>; 0 picks a free port (default: off)."
    )
    var respPort: Int?
    @Option(
        name: .customLong("mykeyv-port"),
        help:
            "Also serve Mykeyv's protocol (length-prefixed JSON commands) on this port, over the table mykeyv/records; 0 picks a free port (default: off)."
    )
    var mykeyvPort: Int?

    /// The YAML keys.
    struct File: Decodable {
        var minikeyvaluePort: Int?
        var minikeyvalueTable: String?
        var respPort: Int?
        var mykeyvPort: Int?

        enum CodingKeys: String, CodingKey {
            case minikeyvaluePort = "minikeyvalue_port"
            case minikeyvalueTable = "minikeyvalue_table"
            case respPort = "resp_port"
            case mykeyvPort = "mykeyv_port"
        }
    }

    /// The Mykeyv listener's port, or `nil` when it is off.
    func mykeyv(file: File, environment: [String: String]) throws -> Int? {
        var port = mykeyvPort ?? file.mykeyvPort
        if mykeyvPort == nil, let text = environment["KV_MYKEYV_PORT"] {
            guard let value = Int(text) else {
                throw ValidationError("KV_MYKEYV_PORT='\(text)' is not valid")
            }
            port = value
        }
        guard let port else { return nil }
        guard (0...65535).contains(port) else {
            throw ValidationError("the Mykeyv port must be 0 to 65535, not \(port)")
        }
        return port
    }

    /// The RESP listener's port, or `nil` when it is off.
    func resp(file: File, environment: [String: String]) throws -> Int? {
        var port = respPort ?? file.respPort
        if respPort == nil, let text = environment["KV_RESP_PORT"] {
            guard let value = Int(text) else { throw ValidationError("KV_RESP_PORT='\(text)' is not valid") }
            port = value
        }
        guard let port else { return nil }
        guard (0...65535).contains(port) else {
            throw ValidationError("the RESP port must be 0 to 65535, not \(port)")
        }
        return port
    }

    /// The minikeyvalue listener's port and table, or `nil` when it is off.
    func minikeyvalue(file: File, environment: [String: String]) throws -> (port: Int, table: TableName)? {
        var port = minikeyvaluePort ?? file.minikeyvaluePort
        if minikeyvaluePort == nil, let text = environment["KV_MINIKEYVALUE_PORT"] {
            guard let value = Int(text) else {
                throw ValidationError("KV_MINIKEYVALUE_PORT='\(text)' is not valid")
            }
            port = value
        }
        guard let port else { return nil }
        guard (0...65535).contains(port) else {
            throw ValidationError("the minikeyvalue port must be 0 to 65535, not \(port)")
        }
        let text =
            minikeyvalueTable ?? environment["KV_MINIKEYVALUE_TABLE"] ?? file.minikeyvalueTable
            ?? "minikeyvalue/values"
        return (port, try parseTable(text))
    }
}
