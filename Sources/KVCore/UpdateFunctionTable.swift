/// Where the cluster keeps registered update functions: one row per function, keyed by
/// its name, holding the module in binary form. A system table, replicated, handed off
/// and repaired like any other, and out of reach of user names (they cannot start with
/// `_`).
public enum UpdateFunctionTable {
    /// The table's name within the system namespace.
    public static let tableName = "functions"

    /// The descriptor every node knows without being told (fixed generation, as the chunk
    /// table's). Registering a name again replaces the module: last writer wins.
    public static let descriptor = TableDescriptor(
        name: TableName(systemNamespace: LargeValue.systemNamespace, table: tableName),
        schema: try! KeySchema([.string]),
        defaults: ReplicationDefaults(),
        generation: 0x6b76_5f66_756e_6373,
        conflictPolicy: .lastWriterWins)

    /// The row of the function `name`.
    public static func key(_ name: String) -> RowKey {
        RowKey(table: descriptor.name, parts: [.string(name)])
    }
}
