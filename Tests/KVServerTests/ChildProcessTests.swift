import Glibc
import KVTestSupport
import Testing

/// The test harness's own child processes: what they inherit decides whether closing a
/// connection in a parallel test really ends it.
@Suite("Child processes")
struct ChildProcessTests {
    @Test("a child inherits no descriptor but its standard streams")
    func nothingInherited() throws {
        // A socket opened without close-on-exec, as SwiftNIO opens every one of its own.
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(descriptor > 2)
        defer { close(descriptor) }
        // `[` is the shell's own builtin, so /proc/self is the child itself.
        let child = try ChildProcess(
            executable: "/bin/sh",
            arguments: [
                "-c", "if [ -e /proc/self/fd/\(descriptor) ]; then echo inherited; else echo closed; fi",
            ])
        let output = String(decoding: child.finishReading(), as: UTF8.self)
        #expect(child.wait().exitedNormally)
        #expect(output == "closed\n")
    }
}
