import ArgumentParser
import Foundation
import KVServer

/// Where a node's first administrator token comes from: a file (`--admin-token-file`,
/// `KV_ADMIN_TOKEN_FILE`, the YAML key `admin_token_file`) or the token itself
/// (`KV_ADMIN_TOKEN`). Either turns access control on; neither leaves it off.
enum AdminTokenSetting {
    static func resolve(file: String?, value: String?) throws -> AccessControl {
        let token: String
        if let file, !file.isEmpty {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw ValidationError("cannot read the admin token file \(file)")
            }
            token = text.trimmingCharacters(in: .whitespacesAndNewlines)
        } else if let value, !value.isEmpty {
            token = value
        } else {
            return .off
        }
        do {
            return try AccessControl(adminToken: token)
        } catch {
            throw ValidationError(error.message)
        }
    }
}
