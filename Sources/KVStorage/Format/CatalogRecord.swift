import KVCore

/// How table descriptors are stored in the metadata keyspace:
/// `catalog/table/` · namespace · table (escaped string encoding) → descriptor.
package enum CatalogRecord {
    /// The prefix every catalog record's key starts with.
    package static let prefix = MetadataKeys.tableCatalogPrefix
    static let formatVersion: UInt8 = 1

    /// The key of `name`'s record.
    package static func key(_ name: TableName) -> [UInt8] {
        var key = prefix
        KeyEncoding.append(.string(name.namespace), to: &key)
        KeyEncoding.append(.string(name.table), to: &key)
        return key
    }

    /// The stored form of `descriptor`.
    package static func encode(_ descriptor: TableDescriptor) -> [UInt8] {
        var writer = BinaryWriter()
        writer.write(formatVersion)
        writer.writeLengthPrefixed(Array(descriptor.name.namespace.utf8))
        writer.writeLengthPrefixed(Array(descriptor.name.table.utf8))
        writer.writeVarint(UInt64(descriptor.schema.parts.count))
        for part in descriptor.schema.parts {
            let tag: UInt8 =
                switch part {
                case .string: 1
                case .bytes: 2
                case .int64: 3
                case .uuid: 4
                }
            writer.write(tag)
        }
        writer.writeVarint(UInt64(descriptor.schema.partitionKeyLength))
        let defaults = descriptor.defaults
        for value in [defaults.n, defaults.r, defaults.w, defaults.dw, defaults.pr, defaults.pw] {
            writer.writeVarint(UInt64(value))
        }
        writer.writeFixed(descriptor.generation)
        // Written only when it is not the default, so older records read the same.
        if descriptor.conflictPolicy == .lastWriterWins { writer.write(1) }
        return writer.bytes
    }

    /// Decodes a stored record; a damaged one is `corruptObject`.
    package static func decode(_ bytes: [UInt8]) throws(KVError) -> TableDescriptor {
        do {
            var reader = BinaryReader(bytes)
            guard try reader.readByte() == formatVersion else {
                throw KVError(.corruptObject, "a catalog record has an unknown format")
            }
            let namespace = String(decoding: try reader.readLengthPrefixed(maximumLength: 256), as: UTF8.self)
            let table = String(decoding: try reader.readLengthPrefixed(maximumLength: 256), as: UTF8.self)
            let count = try reader.readVarint()
            guard count <= UInt64(KeySchema.maximumPartCount) else {
                throw KVError(.corruptObject, "a catalog record has too many key parts")
            }
            var parts: [KeyPartType] = []
            for _ in 0..<count {
                switch try reader.readByte() {
                case 1: parts.append(.string)
                case 2: parts.append(.bytes)
                case 3: parts.append(.int64)
                case 4: parts.append(.uuid)
                default: throw KVError(.corruptObject, "a catalog record has an unknown key part type")
                }
            }
            let partitionKeyLength = Int(clamping: try reader.readVarint())
            var numbers: [Int] = []
            for _ in 0..<6 { numbers.append(Int(clamping: try reader.readVarint())) }
            let generation = try reader.readFixed()
            var policy = ConflictPolicy.siblings
            if !reader.isAtEnd {
                guard try reader.readByte() == 1 else {
                    throw KVError(.corruptObject, "a catalog record has an unknown conflict policy")
                }
                policy = .lastWriterWins
            }
            guard reader.isAtEnd else { throw KVError(.corruptObject, "a catalog record has trailing bytes") }
            return TableDescriptor(
                name: try TableName(namespace: namespace, table: table),
                schema: try KeySchema(parts, partitionKeyLength: partitionKeyLength),
                defaults: ReplicationDefaults(
                    n: numbers[0], r: numbers[1], w: numbers[2], dw: numbers[3], pr: numbers[4],
                    pw: numbers[5]),
                generation: generation, conflictPolicy: policy)
        } catch let error as KVError {
            throw error
        } catch {
            throw KVError(.corruptObject, "a catalog record is truncated", underlying: error)
        }
    }
}
