import Foundation

/// How much a directory holds on disk, for tests that check space is returned.
public enum DiskUsage {
    /// The bytes of every regular file under `path`.
    public static func bytes(under path: String) -> Int {
        let files = FileManager.default.enumerator(atPath: path)?.compactMap { $0 as? String } ?? []
        return files.reduce(0) { total, file in
            let attributes = try? FileManager.default.attributesOfItem(atPath: path + "/" + file)
            guard attributes?[.type] as? FileAttributeType == .typeRegular else { return total }
            return total + ((attributes?[.size] as? Int) ?? 0)
        }
    }
}
