import ArgumentParser
import Foundation
import KVNode
import Logging
import NIOConcurrencyHelpers
import NIOSSL

/// A node's TLS certificate, key and CA, from PEM files, as contexts for its HTTP
/// listener and its peer connections; ``reload()`` reads the files again (on SIGHUP),
/// and every connection opened after it uses the new contexts.
///
/// The CA is the one that signed every member's certificate: peers present their
/// certificates to each other (mutual TLS) and accept only ones it signed. Clients of
/// the HTTP API are not asked for one; they present tokens.
final class TLSFiles: Sendable {
    struct Paths: Hashable {
        var certificate: String
        var key: String
        var authority: String
    }

    struct Contexts {
        var http: NIOSSLContext
        var peerServer: NIOSSLContext
        var peerClient: NIOSSLContext
    }

    let paths: Paths
    private let contexts: NIOLockedValueBox<Contexts>

    /// Loads the files; a missing or invalid one is a start-up error naming it.
    init(_ paths: Paths) throws {
        self.paths = paths
        contexts = NIOLockedValueBox(try Self.load(paths))
    }

    /// The files as given: all three or none.
    static func paths(certificate: String?, key: String?, authority: String?) throws -> Paths? {
        let given = [certificate, key, authority].compactMap { $0?.isEmpty == false ? $0 : nil }
        if given.isEmpty { return nil }
        guard let certificate, let key, let authority, given.count == 3 else {
            throw ValidationError(
                "TLS needs all of --tls-cert-file, --tls-key-file and --tls-ca-file (the CA that signed every member's certificate)"
            )
        }
        return Paths(certificate: certificate, key: key, authority: authority)
    }

    static func load(_ paths: Paths) throws -> Contexts {
        func read<Value>(_ what: String, _ path: String, _ body: () throws -> Value) throws -> Value {
            do {
                return try body()
            } catch {
                throw ValidationError("cannot load the TLS \(what) \(path): \(error)")
            }
        }
        let chain = try read("certificate", paths.certificate) {
            try NIOSSLCertificate.fromPEMFile(paths.certificate).map {
                NIOSSLCertificateSource.certificate($0)
            }
        }
        let key = try read("key", paths.key) { try NIOSSLPrivateKey(file: paths.key, format: .pem) }
        let authority = try read("CA", paths.authority) { try NIOSSLCertificate.fromPEMFile(paths.authority) }
        guard !chain.isEmpty, !authority.isEmpty else {
            throw ValidationError("the TLS certificate or CA file holds no certificate")
        }
        var http = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain, privateKey: .privateKey(key))
        http.minimumTLSVersion = .tlsv12
        var peerServer = http
        peerServer.trustRoots = .certificates(authority)
        peerServer.certificateVerification = .noHostnameVerification
        var peerClient = TLSConfiguration.makeClientConfiguration()
        peerClient.minimumTLSVersion = .tlsv12
        peerClient.certificateChain = chain
        peerClient.privateKey = .privateKey(key)
        peerClient.trustRoots = .certificates(authority)
        peerClient.certificateVerification = .noHostnameVerification
        return try read("settings", paths.certificate) {
            Contexts(
                http: try NIOSSLContext(configuration: http),
                peerServer: try NIOSSLContext(configuration: peerServer),
                peerClient: try NIOSSLContext(configuration: peerClient))
        }
    }

    /// Reads the files again; on failure the contexts in use stay and the error says why.
    func reload() throws {
        let fresh = try Self.load(paths)
        contexts.withLockedValue { $0 = fresh }
    }

    /// The HTTP listener's context of the moment.
    var http: @Sendable () -> NIOSSLContext { { [self] in contexts.withLockedValue { $0.http } } }

    /// The peer connections' contexts of the moment.
    var peers: PeerTLS {
        PeerTLS(
            server: { [self] in contexts.withLockedValue { $0.peerServer } },
            client: { [self] in contexts.withLockedValue { $0.peerClient } })
    }
}
