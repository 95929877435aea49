/// Checks `condition` every 100 ms until it holds or `seconds` have passed, and says
/// whether it held. A condition that throws has not held yet: it usually asks a node
/// over HTTP, and the node may still be starting or busy. Tests wait with this instead
/// of sleeping for a fixed time, which a slow machine or disk outlasts.
public func eventually(within seconds: Double = 30, _ condition: () throws -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while true {
        if (try? condition()) == true { return true }
        if ContinuousClock.now >= deadline { return false }
        // A cancelled test (its time limit passed) stops asking.
        do { try await Task.sleep(for: .milliseconds(100)) } catch { return false }
    }
}
