import ArgumentParser
import Foundation
import KVClient
import KVCore

/// `kv cluster …`: what a node knows about its cluster.
struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster", abstract: "Inspect the cluster.",
        subcommands: [Status.self, LayoutCommand.self])

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "status",
            abstract: "Show the members, the layout version and the partitions per node.")

        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await options.withService { service in
                let status = try await service.clusterStatus()
                if options.json {
                    options.printJSON(WireClusterStatus(status))
                    return
                }
                print(
                    "cluster \(status.clusterID.isEmpty ? "(forming)" : status.clusterID)  layout version \(status.layoutVersion)  \(status.partitionCount) partitions × \(status.replicationFactor) replicas"
                )
                let header = [
                    "NODE", "STATE", "INCARNATION", "HTTP", "PEER", "ZONE", "CAPACITY", "REPLICAS",
                    "PRIMARIES",
                ]
                let rows = status.members.map { member in
                    [
                        member.nodeID.description, member.state, String(member.incarnation),
                        member.httpAddress,
                        member.peerAddress, member.zone,
                        String(member.capacity), String(member.replicas), String(member.primaries),
                    ]
                }
                printTable(header: header, rows: rows)
                if !status.counters.isEmpty {
                    print("")
                    print("this node:")
                    printTable(
                        header: ["COUNTER", "VALUE"],
                        rows: status.counters.sorted { $0.key < $1.key }.map { [$0.key, String($0.value)] })
                }
            }
        }
    }

    struct LayoutCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "layout", abstract: "Print each partition's replicas in preference order.")

        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await options.withService { service in
                let layout = try await service.clusterLayout()
                if options.json {
                    options.printJSON(WireLayout(layout))
                    return
                }
                print("layout version \(layout.version), \(layout.replicationFactor) replicas per partition")
                for (partition, replicas) in layout.partitions.enumerated() {
                    print("\(partition)\t" + replicas.map(\.description).joined(separator: " "))
                }
            }
        }
    }
}

/// Prints rows under a header, each column as wide as its widest cell.
func printTable(header: [String], rows: [[String]]) {
    var widths = header.map(\.count)
    for row in rows {
        for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
    }
    for row in [header] + rows {
        let cells = row.enumerated().map { index, cell in
            index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
        }
        print(cells.joined(separator: "  "))
    }
}
