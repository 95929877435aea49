import ArgumentParser
import Crypto
import Foundation
import SwiftASN1
import X509

/// A throw-away certificate authority and node certificates for a local cluster: what
/// `kv dev --tls` and `kv tls dev-certs` write. Every certificate is for 127.0.0.1 and
/// localhost, valid for a year, with an ECDSA P-256 key; the CA's key is not kept, so
/// nothing more can be signed with it.
enum DevCertificates {
    /// The files of node `number` (1-based) under `directory`.
    static func files(directory: String, node number: Int) -> (certificate: String, key: String) {
        ("\(directory)/node\(number).pem", "\(directory)/node\(number)-key.pem")
    }

    /// The CA file under `directory`.
    static func authority(directory: String) -> String { "\(directory)/ca.pem" }

    /// Writes a CA and `nodes` node certificates to `directory`, unless its CA file is
    /// there already (then the files there are kept as they are).
    static func create(directory: String, nodes: Int) throws {
        let caPath = authority(directory: directory)
        if FileManager.default.fileExists(atPath: caPath) { return }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let now = Date()
        let caKey = P256.Signing.PrivateKey()
        let caName = try DistinguishedName {
            OrganizationName("kv")
            // A name of its own, so two such CAs in one trust store are told apart.
            CommonName("kv throw-away development CA \(String(UInt64.random(in: 0...UInt64.max), radix: 16))")
        }
        // Valid from an hour ago (clocks differ a little) for a year, signed by the CA.
        func signed(
            _ subject: DistinguishedName, _ key: P256.Signing.PublicKey, _ extensions: Certificate.Extensions
        )
            throws -> Certificate
        {
            try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key),
                notValidBefore: now.addingTimeInterval(-3600),
                notValidAfter: now.addingTimeInterval(365 * 86_400),
                issuer: caName, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: extensions,
                issuerPrivateKey: .init(caKey))
        }
        let ca = try signed(
            caName, caKey.publicKey,
            try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true))
            })
        for number in 1...nodes {
            let key = P256.Signing.PrivateKey()
            let name = try DistinguishedName {
                OrganizationName("kv")
                CommonName("kv node \(number)")
            }
            let certificate = try signed(
                name, key.publicKey,
                try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage([.serverAuth, .clientAuth])
                    SubjectAlternativeNames([
                        .dnsName("localhost"), .ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1])),
                    ])
                })
            let paths = files(directory: directory, node: number)
            try write(try certificate.serializeAsPEM().pemString + "\n", to: paths.certificate, mode: 0o644)
            try write(key.pemRepresentation + "\n", to: paths.key, mode: 0o600)
        }
        // The CA last: its presence marks a complete set.
        try write(try ca.serializeAsPEM().pemString + "\n", to: caPath, mode: 0o644)
    }

    private static func write(_ text: String, to path: String, mode: Int) throws {
        guard
            FileManager.default.createFile(
                atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: mode])
        else { throw ValidationError("cannot write \(path)") }
    }
}

/// `kv tls dev-certs`: the throw-away CA and node certificates `kv dev --tls` uses, for
/// trying TLS with nodes started by hand.
struct TLSCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tls",
        abstract: "TLS helpers.",
        subcommands: [DevCerts.self])

    struct DevCerts: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "dev-certs",
            abstract: "Write a throw-away CA and node certificates for 127.0.0.1 (not for production).",
            discussion: """
                Writes DIR/ca.pem and, per node, DIR/nodeN.pem and DIR/nodeN-key.pem, valid \
                for 127.0.0.1 and localhost for a year. The CA's key is not kept. Start node N \
                with --tls-cert-file DIR/nodeN.pem --tls-key-file DIR/nodeN-key.pem \
                --tls-ca-file DIR/ca.pem; clients trust DIR/ca.pem (curl --cacert, KV_CA_FILE).
                """)

        @Option(help: "Where to write the files.") var dir: String
        @Option(help: "How many node certificates (default 3).") var nodes = 3

        func run() throws {
            guard (1...64).contains(nodes) else { throw ValidationError("--nodes must be 1 to 64") }
            guard !FileManager.default.fileExists(atPath: DevCertificates.authority(directory: dir)) else {
                throw ValidationError("\(dir) holds a CA already")
            }
            try DevCertificates.create(directory: dir, nodes: nodes)
            print(
                "wrote \(DevCertificates.authority(directory: dir)) and \(nodes) node certificates to \(dir)")
        }
    }
}
