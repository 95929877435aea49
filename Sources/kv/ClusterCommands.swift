import ArgumentParser
import Foundation
import KVClient
import KVCore

/// `kv cluster …`: what a node knows about its cluster.
struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster", abstract: "Inspect the cluster and change its layout.",
        discussion: """
            Layout changes are staged (join, leave, replace, set-capacity, set-zone), shown \
            (plan) and applied together (commit). Data then moves in the background: \
            transfers shows it, and pauses, resumes or throttles it.
            """,
        subcommands: [
            Status.self, LayoutCommand.self, Join.self, Leave.self, Replace.self, SetCapacity.self,
            SetZone.self,
            Plan.self, Clear.self, Commit.self, Transfers.self,
        ])

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

/// Stages one change and prints the plan of everything staged.
private func stage(_ change: LayoutChangeRequest, _ options: ClientOptions) async throws {
    try await options.withService { service in
        printPlan(try await service.stageLayoutChange(change), options)
    }
}

/// Prints a plan: the changes, the partitions that move, and how much data travels.
func printPlan(
    _ plan: LayoutPlanReport, _ options: ClientOptions, verbose: Bool = false, showCommit: Bool = true
) {
    if options.json {
        options.printJSON(plan)
        return
    }
    guard let id = plan.id else {
        print("nothing is staged (layout version \(plan.currentVersion))")
        return
    }
    print("staged changes:")
    for change in plan.changes { print("  \(change)") }
    print(
        "plan \(id): layout version \(plan.currentVersion) → \(plan.proposedVersion), \(plan.moves.count) partitions change, \(plan.movedReplicas) partition copies travel (about \(formatBytes(plan.estimatedBytes)))"
    )
    if plan.transitionInProgress {
        print("a layout change is still moving data; committing redirects it")
    }
    print("replicas per node after the commit:")
    printTable(
        header: ["NODE", "REPLICAS"],
        rows: plan.replicasPerNode.sorted { $0.key < $1.key }.map { [$0.key, String($0.value)] })
    if verbose {
        print("moves:")
        for move in plan.moves {
            print(
                "  \(move.partition)\t\(move.from.joined(separator: " ")) → \(move.to.joined(separator: " "))"
            )
        }
    }
    if showCommit { print("commit it with: kv cluster commit --plan \(id)") }
}

/// Bytes for people: B, KiB, MiB, GiB.
func formatBytes(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024, unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
}

extension ClusterCommand {
    struct Join: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "join",
            abstract: "Stage placing a member the layout does not place yet (started with --join).")

        @Argument(help: "The node: its id, --node-name or HTTP address.") var node: String
        @OptionGroup var options: ClientOptions

        func run() async throws { try await stage(LayoutChangeRequest(change: "join", node: node), options) }
    }

    struct Leave: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "leave",
            abstract: "Stage taking a node out of the layout once it handed off its partitions.")

        @Argument(help: "The node: its id, --node-name or HTTP address.") var node: String
        @Flag(help: "Do not wait for the node's copies: it is gone for good.") var force = false
        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await stage(LayoutChangeRequest(change: "leave", node: node, force: force), options)
        }
    }

    struct Replace: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "replace", abstract: "Stage giving every partition of one node to a new member.")

        @Argument(help: "The node that goes.") var node: String
        @Argument(help: "The member that takes its place (started with --join).") var replacement: String
        @Flag(help: "Do not wait for the old node's copies: it is gone for good.") var force = false
        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await stage(
                LayoutChangeRequest(change: "replace", node: node, replacement: replacement, force: force),
                options)
        }
    }

    struct SetCapacity: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-capacity", abstract: "Stage changing a node's weight in the layout.")

        @Argument(help: "The node.") var node: String
        @Argument(help: "Its new capacity (1 to 1048576).") var capacity: Int
        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await stage(
                LayoutChangeRequest(change: "set-capacity", node: node, capacity: capacity), options)
        }
    }

    struct SetZone: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-zone", abstract: "Stage moving a node to another zone.")

        @Argument(help: "The node.") var node: String
        @Argument(help: "Its new zone.") var zone: String
        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await stage(LayoutChangeRequest(change: "set-zone", node: node, zone: zone), options)
        }
    }

    struct Plan: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "plan", abstract: "Show what committing the staged changes would do.")

        @Flag(help: "List every partition that moves.") var verbose = false
        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await options.withService { service in
                printPlan(try await service.layoutPlan(), options, verbose: verbose)
            }
        }
    }

    struct Clear: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "clear", abstract: "Drop every staged change.")

        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await options.withService { service in
                printPlan(try await service.clearLayoutChanges(), options)
            }
        }
    }

    struct Commit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "commit",
            abstract: "Apply the staged changes as the next layout version.",
            discussion: """
                With --plan, the commit is refused (layout.stale_plan) when the layout or the \
                staged changes changed since that plan was shown. Without it, the current plan \
                is shown and committed.
                """)

        @Option(help: "The plan id that kv cluster plan printed.") var plan: String?
        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await options.withService { service in
                var id = plan
                if id == nil {
                    let current = try await service.layoutPlan()
                    guard let currentID = current.id else {
                        throw KVError(.invalidRequest, "no layout change is staged")
                    }
                    if !options.json { printPlan(current, options, showCommit: false) }
                    id = currentID
                }
                let committed = try await service.commitLayoutPlan(id!)
                if options.json {
                    options.printJSON(committed)
                    return
                }
                print(
                    "committed plan \(committed.id ?? id!): layout version \(committed.proposedVersion); \(committed.movedReplicas) partition copies move in the background (kv cluster transfers --watch)"
                )
            }
        }
    }

    struct Transfers: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "transfers",
            abstract: "Show the partition transfers of a layout change; pause, resume or throttle them.")

        @Argument(help: "show (default), pause or resume.") var action = "show"
        @Flag(help: "Redraw a progress bar until the transfers are done.") var watch = false
        @Option(help: "The most bytes per second one node receives (0: no limit).") var rate: Int?
        @Option(help: "The most transfers running in the cluster at once.") var clusterConcurrency: Int?
        @Option(help: "The most transfers one node receives and serves at once.") var nodeConcurrency: Int?
        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await options.withService { service in
                var report: TransfersReport
                let control = TransferControlRequest(
                    paused: action == "pause" ? true : (action == "resume" ? false : nil),
                    clusterConcurrency: clusterConcurrency, nodeConcurrency: nodeConcurrency,
                    bytesPerSecond: rate)
                switch action {
                case "show" where control == TransferControlRequest(): report = try await service.transfers()
                case "show", "pause", "resume": report = try await service.controlTransfers(control)
                default: throw ValidationError("the action is show, pause or resume, not '\(action)'")
                }
                if options.json {
                    options.printJSON(report)
                    return
                }
                guard watch else {
                    printTransfers(report)
                    return
                }
                while true {
                    FileHandle.standardOutput.write(Data(("\u{1B}[2K\r" + progressLine(report)).utf8))
                    // Paused, nothing moves: the bar stops with the transfers.
                    if !report.inProgress || report.paused { break }
                    try await Task.sleep(for: .seconds(1))
                    report = try await service.transfers()
                }
                print("")
            }
        }
    }
}

/// One line: a bar over the received transfers, the bytes moved and the rate.
func progressLine(_ report: TransfersReport) -> String {
    guard report.inProgress else { return "layout version \(report.layoutVersion): no data is moving" }
    let width = 30
    let fraction = report.total > 0 ? Double(report.received) / Double(report.total) : 1
    let filled = Int(fraction * Double(width))
    let bytes = report.transfers.reduce(UInt64(0)) { $0 + $1.bytes }
    let rate = report.transfers.filter { $0.state == "running" }.reduce(UInt64(0)) { $0 + $1.bytesPerSecond }
    let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
    let releasing = report.received == report.total ? ", \(report.unreleased) partitions releasing" : ""
    return
        "[\(bar)] \(report.received)/\(report.total) received, \(formatBytes(bytes)) at \(formatBytes(rate))/s\(report.paused ? " (paused)" : "")\(releasing)"
}

/// The transfers as a table.
func printTransfers(_ report: TransfersReport) {
    print(
        "layout version \(report.layoutVersion): \(report.inProgress ? "\(report.received) of \(report.total) transfers received, \(report.unreleased) partitions wait for a release" : "no data is moving")\(report.paused ? " (paused)" : "")"
    )
    print(
        "limits: \(report.clusterConcurrency) transfers in the cluster, \(report.nodeConcurrency) per node, \(report.bytesPerSecond == 0 ? "no rate limit" : "\(formatBytes(UInt64(report.bytesPerSecond)))/s per node")"
    )
    let rows = report.transfers.map { transfer in
        let progress =
            transfer.estimatedRows > 0
            ? String(format: "%.0f%%", min(100, Double(transfer.rows) * 100 / Double(transfer.estimatedRows)))
            : (transfer.state == "received" ? "100%" : "-")
        return [
            String(transfer.partition), transfer.destination, transfer.source ?? "-", transfer.state,
            progress,
            String(transfer.rows), formatBytes(transfer.bytes), "\(formatBytes(transfer.bytesPerSecond))/s",
            transfer.etaSeconds.map { String(format: "%.0fs", $0) } ?? "-", String(transfer.resentBatches),
        ]
    }
    printTable(
        header: ["PARTITION", "TO", "FROM", "STATE", "DONE", "ROWS", "BYTES", "RATE", "ETA", "RESENT"],
        rows: rows)
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
