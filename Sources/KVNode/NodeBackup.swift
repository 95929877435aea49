import Glibc
import KVCore
import KVReplica
import KVStorage

/// Backups of a node while it serves: the engine's consistent copy (for RocksDB a
/// checkpoint) and a manifest, in a directory of their own under the node's backup
/// directory.
///
/// The copy holds everything the node keeps (rows, hints, the anti-entropy index and
/// its cluster metadata and identity), as of one instant; the manifest is written last,
/// so a directory without one is an interrupted backup and restores nothing. The
/// cluster secret is not in it: keep it with your other secrets.
extension ClusterNode {
    /// The longest backup name.
    static let maximumBackupNameBytes = 128

    public func backup(name: String?) async throws(KVError) -> BackupReport {
        guard let root = local.settings.backupDirectory else {
            throw KVError(.invalidRequest, "this node's engine keeps nothing on disk to back up")
        }
        let takenAt = Self.millisecondsSinceEpoch()
        let name = name ?? "backup-\(takenAt)-\(nodeID)"
        guard !name.isEmpty, name.utf8.count <= Self.maximumBackupNameBytes, name.first != ".",
            name.unicodeScalars.allSatisfy({
                $0.isASCII
                    && ($0.properties.isAlphabetic || $0.properties.numericType != nil
                        || "-_.".unicodeScalars.contains($0))
            })
        else {
            throw KVError(
                .invalidRequest,
                "a backup name has 1 to \(Self.maximumBackupNameBytes) letters, digits, '-', '_' or '.', and does not start with '.'"
            )
        }
        let path = root + "/" + name
        let layoutVersion = metadata.layout?.version ?? 0
        let manifest = """
            {"format":1,"node_id":"\(nodeID)","taken_at_ms":\(takenAt),"layout_version":\(layoutVersion),\
            "partitions":\(local.identity.partitionCount),"engine":"\(local.engineName)","version":"\(Self.version)"}

            """
        let engine = local.engine
        try await local.blocking { () throws(KVError) in
            try Self.makeDirectory(root, existingIsFine: true)
            try Self.makeDirectory(path, existingIsFine: false)
            try storageWork("backup") { try engine.backup(to: path + "/" + Self.engineDirectory) }
            try Self.writeFile(path + "/" + Self.manifestName, manifest)
        }
        return BackupReport(
            nodeID: nodeID, path: path, takenAtMilliseconds: takenAt, layoutVersion: layoutVersion)
    }

    /// The engine's copy inside a backup.
    public static let engineDirectory = "rocksdb"
    /// The manifest inside a backup.
    public static let manifestName = "manifest.json"

    private static func millisecondsSinceEpoch() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
    }

    private static func makeDirectory(_ path: String, existingIsFine: Bool) throws(KVError) {
        if mkdir(path, 0o700) == 0 { return }
        let failure = errno
        if failure == EEXIST {
            if existingIsFine { return }
            throw KVError(
                .backupExists, "a backup named \(path.split(separator: "/").last ?? "") exists already")
        }
        throw KVError(.storageIO, "cannot create \(path): \(String(cString: strerror(failure)))")
    }

    private static func writeFile(_ path: String, _ text: String) throws(KVError) {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw KVError(.storageIO, "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        guard written == bytes.count, fsync(descriptor) == 0 else {
            throw KVError(.storageIO, "cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }
}
