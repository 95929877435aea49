import ArgumentParser
import KVClient
import KVCore

struct TableCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "table", abstract: "Create, list, describe, clear and drop tables.",
        subcommands: [Create.self, List.self, Describe.self, Clear.self, Drop.self, DropNamespace.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a table (re-running with the same key schema keeps its data).")

        @OptionGroup var options: ClientOptions
        @Argument(help: "NAMESPACE/TABLE") var table: String
        @Option(help: "Key part types, comma-separated: string, bytes, int64, uuid.") var key: String
        @Option(help: "How many leading key parts decide placement (default: all).") var partitionKeyLength:
            Int?
        @OptionGroup(title: "Defaults of the table's requests (N=3, R=W=DW=2, PR=PW=0 unless given)")
        var quorum: QuorumFlags

        func run() async throws {
            let name = try parseTable(table)
            var types: [KeyPartType] = []
            for text in key.split(separator: ",") {
                guard let type = KeyPartType(rawValue: text.trimmingCharacters(in: .whitespaces)) else {
                    throw ValidationError("unknown key part type '\(text)'; use string, bytes, int64 or uuid")
                }
                types.append(type)
            }
            try await options.withService { service in
                // Given settings lower the ones they imply (w=1 lowers dw), as requests do.
                let defaults = quorum.overrides.applied(
                    to: ReplicationDefaults(), availableReplicas: ReplicationDefaults.maximumReplicas)
                let descriptor = try await service.createTable(
                    TableDescriptor(
                        name: name, schema: try KeySchema(types, partitionKeyLength: partitionKeyLength),
                        defaults: defaults))
                if options.json {
                    options.printJSON(WireTable(descriptor))
                } else {
                    print("table \(descriptor.name): key \(descriptor.schema)")
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the tables of a namespace (or the namespaces).")

        @OptionGroup var options: ClientOptions
        @Argument(help: "NAMESPACE (omit to list namespaces)") var namespace: String?

        func run() async throws {
            try await options.withService { service in
                guard let namespace else {
                    let namespaces = try await service.namespaces()
                    if options.json {
                        options.printJSON(["namespaces": namespaces])
                    } else {
                        for namespace in namespaces { print(namespace) }
                    }
                    return
                }
                let tables = try await service.tables(in: namespace)
                if options.json {
                    options.printJSON(["tables": tables.map(WireTable.init)])
                } else {
                    for table in tables { print("\(table.name)\tkey \(table.schema)") }
                }
            }
        }
    }

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a table's key schema and defaults.")

        @OptionGroup var options: ClientOptions
        @Argument(help: "NAMESPACE/TABLE") var table: String

        func run() async throws {
            let name = try parseTable(table)
            try await options.withService { service in
                let descriptor = try await service.table(name)
                if options.json {
                    options.printJSON(WireTable(descriptor))
                } else {
                    let defaults = descriptor.defaults
                    print("table \(descriptor.name)")
                    print("  key: \(descriptor.schema)")
                    print(
                        "  defaults: n=\(defaults.n) r=\(defaults.r) w=\(defaults.w) dw=\(defaults.dw) pr=\(defaults.pr) pw=\(defaults.pw)"
                    )
                }
            }
        }
    }

    struct Clear: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove every row of a table, keeping the table.")

        @OptionGroup var options: ClientOptions
        @Argument(help: "NAMESPACE/TABLE") var table: String

        func run() async throws {
            let name = try parseTable(table)
            try await options.withService { service in
                try await service.clearTable(name)
                if !options.json { print("cleared \(name)") }
            }
        }
    }

    struct Drop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Drop a table and its rows.")

        @OptionGroup var options: ClientOptions
        @Argument(help: "NAMESPACE/TABLE") var table: String

        func run() async throws {
            let name = try parseTable(table)
            try await options.withService { service in
                try await service.dropTable(name)
                if !options.json { print("dropped \(name)") }
            }
        }
    }

    struct DropNamespace: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "drop-namespace", abstract: "Drop every table of a namespace.")

        @OptionGroup var options: ClientOptions
        @Argument(help: "NAMESPACE") var namespace: String

        func run() async throws {
            try await options.withService { service in
                try await service.dropNamespace(namespace)
                if !options.json { print("dropped namespace \(namespace)") }
            }
        }
    }
}
