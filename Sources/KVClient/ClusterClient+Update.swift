import KVCore

/// What an update function decides for one row.
public enum RowUpdate: Hashable, Sendable {
    /// Write this value.
    case write(RowValue)
    /// Delete the row.
    case delete
    /// Leave the row as it is.
    case keep
}

/// What ``ClusterClient/update(_:keys:attempts:_:)`` did to one row.
public enum RowUpdateOutcome: Hashable, Sendable {
    /// The new value was written; its context and tag.
    case written(WriteResult)
    /// The row was deleted.
    case deleted(WriteResult)
    /// The function kept the row as it was.
    case kept
}

extension ClusterClient {
    /// Read-modify-write of each row of `keys`, without losing a concurrent update.
    ///
    /// For each key it reads the row with its context and tag, calls `transform` with the
    /// key and the row's live values (empty when absent; several when concurrent writes
    /// left siblings, which the function should merge), and writes the answer back with
    /// the context, on the condition that the row is still the version it read
    /// (`If-Match`, or `If-None-Match: *` for an absent row). When another writer got in
    /// between (`412`), it reads again and calls `transform` again, at most `attempts`
    /// times, with growing, jittered pauses; after that the key fails with
    /// `request.precondition_failed`. Rows are updated side by side; the answer is in
    /// the order of `keys`. Mykeyv's `update` ran the function with no such protection,
    /// so two concurrent updates could silently undo one another.
    ///
    /// `transform` may run more than once for a key, so it must not have other effects.
    public func update(
        _ table: TableName, keys: [[KeyPart]], attempts: Int = 32,
        _ transform: @escaping @Sendable (_ key: [KeyPart], _ values: [RowValue]) throws -> RowUpdate
    ) async throws(KVError) -> [RowUpdateOutcome] {
        typealias Answer = (Int, Result<RowUpdateOutcome, KVError>)
        let answered: [Answer] = await withTaskGroup(of: Answer.self) { group in
            var running = 0
            var all: [Answer] = []
            for (index, key) in keys.enumerated() {
                // At most 16 rows at once: a long key list must not open a connection each.
                if running == 16, let answer = await group.next() {
                    all.append(answer)
                    running -= 1
                }
                group.addTask {
                    do throws(KVError) {
                        let outcome = try await self.updateRow(
                            RowKey(table: table, parts: key), attempts: max(1, attempts), transform)
                        return (index, Result.success(outcome))
                    } catch {
                        return (index, Result.failure(error))
                    }
                }
                running += 1
            }
            for await answer in group { all.append(answer) }
            return all
        }
        var outcomes = [RowUpdateOutcome](repeating: .kept, count: keys.count)
        for (index, outcome) in answered.sorted(by: { $0.0 < $1.0 }) { outcomes[index] = try outcome.get() }
        return outcomes
    }

    private func updateRow(
        _ key: RowKey, attempts: Int,
        _ transform: @Sendable (_ key: [KeyPart], _ values: [RowValue]) throws -> RowUpdate
    ) async throws(KVError) -> RowUpdateOutcome {
        var lastConflict: KVError?
        for attempt in 0..<attempts {
            if attempt > 0 {
                // Growing pauses with jitter, so contending updaters stop colliding.
                let ceiling = min(5 << min(attempt, 7), 500)
                try? await Task.sleep(for: .milliseconds(Int.random(in: ceiling / 2...ceiling)))
            }
            let read = try await get(key, options: ReadOptions())
            let decision: RowUpdate
            do {
                decision = try transform(key.parts, read.siblings.compactMap(\.value))
            } catch let error as KVError {
                throw error
            } catch {
                throw KVError(.invalidRequest, "the update function failed for \(key.parts): \(error)")
            }
            var options = WriteOptions()
            options.context = read.context.isEmpty ? nil : read.context
            options.condition = read.isAbsent ? .ifAbsent : .ifMatch(read.etag)
            do {
                switch decision {
                case .keep: return .kept
                case .write(let value): return .written(try await put(key, value: value, options: options))
                case .delete:
                    if read.isAbsent { return .kept }
                    return .deleted(try await delete(key, options: options))
                }
            } catch  where error.code == .preconditionFailed {
                lastConflict = error
            }
        }
        throw KVError(
            .preconditionFailed,
            "the row changed under each of \(attempts) attempts to update it; last: \(lastConflict?.message ?? "")"
        )
    }
}
