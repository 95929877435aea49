import KVCore
import Testing

@testable import KVCluster

/// How progress records are batched, event in, step out, written from the rules in
/// ``ProgressRecords``'s documentation.
@Suite("Progress records")
struct ProgressRecordsTests {
    static func record(_ partition: UInt32, version: UInt64 = 2) -> LayoutPartition {
        LayoutPartition(PartitionID(rawValue: partition), layoutVersion: version)
    }

    @Test("a lone record is written at once; those made meanwhile go together after the cool-down")
    func batches() {
        var records = ProgressRecords(coolDownMilliseconds: 100)
        #expect(records.add(Self.record(1)) == .write([Self.record(1)]))
        #expect(records.writing == [Self.record(1)])
        // Made while the first is written, or during the cool-down: they wait, once each.
        #expect(records.add(Self.record(2)) == .none)
        #expect(records.add(Self.record(1)) == .none)
        #expect(records.written(timerID: 7) == .startTimer(id: 7, afterMilliseconds: 100))
        #expect(records.writing.isEmpty)
        #expect(records.add(Self.record(3, version: 3)) == .none)
        #expect(records.add(Self.record(2)) == .none)
        #expect(records.contains(Self.record(2)) && !records.contains(Self.record(4)))
        // Another timer is not the cool-down.
        #expect(records.timerFired(id: 8) == .none)
        #expect(records.timerFired(id: 7) == .write([Self.record(2), Self.record(3, version: 3)]))
        #expect(records.written(timerID: 9) == .startTimer(id: 9, afterMilliseconds: 100))
        // A cool-down with nothing waiting ends, and the next record goes at once.
        #expect(records.timerFired(id: 9) == .none)
        #expect(records.add(Self.record(5)) == .write([Self.record(5)]))
    }

    @Test("a written report without a batch in flight, and a late cool-down timer, do nothing")
    func strayReports() {
        var records = ProgressRecords(coolDownMilliseconds: 50)
        #expect(records.written(timerID: 1) == .none)
        #expect(records.timerFired(id: 1) == .none)
        #expect(records.add(Self.record(1)) == .write([Self.record(1)]))
        #expect(records.timerFired(id: 1) == .none)
    }

    @Test("over any sequence of events, every record made is written exactly once, after the one in flight")
    func everyRecordOnce() {
        for seed in UInt64(1)...300 {
            var random = SeededRandom(seed: seed)
            var records = ProgressRecords(coolDownMilliseconds: 10)
            var made: Set<LayoutPartition> = []
            var written: [LayoutPartition] = []
            var timer: UInt64?
            var nextTimer: UInt64 = 1
            var inFlight = false
            func apply(_ step: ProgressRecords.Step) {
                switch step {
                case .none: break
                case .write(let batch):
                    #expect(!inFlight, "seed \(seed): two batches in flight")
                    inFlight = true
                    written += batch
                case .startTimer(let id, _): timer = id
                }
            }
            for _ in 0..<200 {
                switch random.next() % 3 {
                case 0:
                    let record = Self.record(UInt32(random.next() % 64))
                    if !made.contains(record) || !written.contains(record) {
                        made.insert(record)
                        apply(records.add(record))
                    }
                case 1 where inFlight:
                    inFlight = false
                    apply(records.written(timerID: nextTimer))
                    nextTimer += 1
                case 2:
                    if let id = timer {
                        timer = nil
                        apply(records.timerFired(id: id))
                    }
                default: break
                }
            }
            // Drain: finish what is in flight and let every cool-down end.
            for _ in 0..<4 {
                if inFlight {
                    inFlight = false
                    apply(records.written(timerID: nextTimer))
                    nextTimer += 1
                }
                if let id = timer {
                    timer = nil
                    apply(records.timerFired(id: id))
                }
            }
            #expect(Set(written) == made, "seed \(seed)")
            #expect(written.count == Set(written).count, "seed \(seed): a record written twice")
        }
    }
}
