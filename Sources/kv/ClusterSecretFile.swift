import ArgumentParser
import Foundation
import Glibc
import KVWire

/// Where a node's cluster secret comes from, and the one place that reads or writes it.
///
/// A secret is given by file (`--cluster-secret-file`, `KV_CLUSTER_SECRET_FILE`, the YAML
/// key `cluster_secret_file`) or by value (`KV_CLUSTER_SECRET`). Without one, a node keeps
/// its secret in its data directory: a node that forms a cluster of its own writes a new
/// random one there on first start, so a lone node needs no setup; a node that joins or
/// forms a cluster with others must be given the cluster's secret, since one it made up
/// could never match.
enum ClusterSecretFile {
    /// The name of the secret's file in a data directory.
    static let defaultName = "cluster-secret"

    /// What a node was given, and how to describe it at start.
    struct Resolved {
        var secret: ClusterSecret
        var origin: String
    }

    /// Reads the secret from `path`; warns if others than the owner can read the file.
    static func read(path: String) throws -> ClusterSecret {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ValidationError("cannot read the cluster secret file \(path)")
        }
        var status = stat()
        if stat(path, &status) == 0, status.st_mode & 0o077 != 0 {
            FileHandle.standardError.write(
                Data("kv: warning: others can read the cluster secret file \(path); chmod 600 it\n".utf8))
        }
        do {
            return try ClusterSecret(text)
        } catch {
            throw ValidationError("the cluster secret in \(path): \(error.message)")
        }
    }

    /// Writes a new random secret to `path`, readable by its owner only, unless a file is
    /// there already; either way returns the secret the file holds.
    static func createIfMissing(path: String) throws -> ClusterSecret {
        try createPrivateFile(path: path, contents: ClusterSecret.generate() + "\n", what: "cluster secret")
        return try read(path: path)
    }

    /// Writes `contents` to a new file at `path` readable by its owner only, unless a
    /// file is there already (another process may have created it first; then that one
    /// counts).
    static func createPrivateFile(path: String, contents: String, what: String) throws {
        if FileManager.default.fileExists(atPath: path) { return }
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            if errno == EEXIST { return }
            throw ValidationError(
                "cannot create the \(what) file \(path): \(String(cString: strerror(errno)))")
        }
        let bytes = Array(contents.utf8)
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        let synced = fsync(descriptor) == 0
        close(descriptor)
        guard written == bytes.count, synced else {
            unlink(path)
            throw ValidationError("cannot write the \(what) file \(path)")
        }
    }

    /// The secret of a node: the one it was given, or the one in its data directory.
    ///
    /// - Parameters:
    ///   - file: the secret file it was given, if any.
    ///   - value: the secret it was given by value, if any.
    ///   - dataDirectory: its data directory, `nil` if it keeps no data.
    ///   - alone: whether it forms a cluster of its own (neither joins nor lists peers).
    static func resolve(file: String?, value: String?, dataDirectory: String?, alone: Bool) throws -> Resolved
    {
        if let file, !file.isEmpty { return Resolved(secret: try read(path: file), origin: file) }
        if let value, !value.isEmpty {
            do {
                return Resolved(secret: try ClusterSecret(value), origin: "KV_CLUSTER_SECRET")
            } catch {
                throw ValidationError("KV_CLUSTER_SECRET: \(error.message)")
            }
        }
        let kept = dataDirectory.map { $0 + "/" + defaultName }
        if let kept, FileManager.default.fileExists(atPath: kept) {
            return Resolved(secret: try read(path: kept), origin: kept)
        }
        guard alone else {
            throw ValidationError(
                """
                a node that joins or forms a cluster with others needs the cluster's secret: give \
                --cluster-secret-file (or KV_CLUSTER_SECRET_FILE, or KV_CLUSTER_SECRET) with the secret \
                every member holds, such as the \(defaultName) file in a member's data directory
                """)
        }
        guard let kept else {
            return Resolved(
                secret: try ClusterSecret(ClusterSecret.generate()), origin: "generated, kept nowhere")
        }
        return Resolved(secret: try createIfMissing(path: kept), origin: kept)
    }
}
