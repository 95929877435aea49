import Foundation
import KVSimulation

// Runs deterministic cluster simulations: one seed with a trace to replay a failure,
// or a sweep over many seeds.
//
//   Simulator --seed N [--trace] [OPTIONS]
//   Simulator --sweep COUNT [--first N] [OPTIONS]
//
// OPTIONS: --no-faults, --no-layout-changes, --last-writer-wins, --failing-writes,
// --keys N, --inject BUG (see `SimulationConfiguration`).
//
// `--inject` plants one of the defects the checkers exist for (see
// `SimulationConfiguration.InjectedBug`), to see which seeds catch it.

func usage(_ problem: String) -> Never {
    FileHandle.standardError.write(
        Data(
            """
            \(problem)
            usage: Simulator --seed N [--trace] [OPTIONS]
                   Simulator --sweep COUNT [--first N] [OPTIONS]
            options: --no-faults --no-layout-changes --last-writer-wins --failing-writes --keys N --inject BUG
            defects: \(SimulationConfiguration.InjectedBug.allCases.map { "\($0)" }.joined(separator: ", "))

            """.utf8))
    exit(problem == "help" ? 0 : 2)
}

var seed: UInt64?
var sweep: Int?
var first: UInt64 = 1
var tracing = false
var faults = true
var injectedBug: SimulationConfiguration.InjectedBug?
var keyCount = 3
var layoutChanges = true
var lastWriterWins = false
var failingWrites = false
var arguments = CommandLine.arguments.dropFirst()
while let flag = arguments.popFirst() {
    switch flag {
    case "--seed":
        guard let value = arguments.popFirst().flatMap({ UInt64($0) }) else { usage("--seed needs a number") }
        seed = value
    case "--sweep":
        guard let value = arguments.popFirst().flatMap({ Int($0) }), value > 0 else {
            usage("--sweep needs a positive count")
        }
        sweep = value
    case "--first":
        guard let value = arguments.popFirst().flatMap({ UInt64($0) }) else {
            usage("--first needs a number")
        }
        first = value
    case "--inject":
        guard let name = arguments.popFirst(),
            let bug = SimulationConfiguration.InjectedBug.allCases.first(where: { "\($0)" == name })
        else { usage("--inject needs one of the defects") }
        injectedBug = bug
    case "--keys":
        guard let value = arguments.popFirst().flatMap({ Int($0) }), (1...200).contains(value) else {
            usage("--keys needs a count from 1 to 200")
        }
        keyCount = value
    case "--trace": tracing = true
    case "--no-faults": faults = false
    case "--no-layout-changes": layoutChanges = false
    case "--last-writer-wins": lastWriterWins = true
    case "--failing-writes": failingWrites = true
    case "--help", "-h": usage("help")
    default: usage("unknown argument \(flag)")
    }
}

if let seed {
    let trace: ((String) -> Void)? = tracing ? { print($0) } : nil
    let report = Simulation(
        SimulationConfiguration(
            seed: seed, keyCount: keyCount, faults: faults, layoutChanges: layoutChanges,
            lastWriterWins: lastWriterWins, failingWrites: failingWrites, injectedBug: injectedBug),
        trace: trace
    ).run()
    print(report)
    exit(report.passed ? 0 : 1)
}
guard let sweep else { usage("give --seed or --sweep") }
var failures = 0
for seed in first..<(first + UInt64(sweep)) {
    let report = Simulation(
        SimulationConfiguration(
            seed: seed, keyCount: keyCount, faults: faults, layoutChanges: layoutChanges,
            lastWriterWins: lastWriterWins, failingWrites: failingWrites, injectedBug: injectedBug)
    ).run()
    if !report.passed {
        failures += 1
        print(report)
    }
}
print("\(sweep) seeds from \(first): \(failures) failed")
exit(failures == 0 ? 0 : 1)
