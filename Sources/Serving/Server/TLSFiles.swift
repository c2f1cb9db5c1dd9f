public import NIOSSL

/// TLS from PEM files: a server's certificate and key (`tls_cert`, `tls_key`), and the
/// certificate authorities a cluster's clients trust (`--tls-ca`). Errors name the file and say
/// what is wrong with it.
public enum TLSFiles {
    /// The server side: `certificate` (a PEM chain, leaf first) and its PEM private key.
    public static func server(certificate: String, key: String) throws(ServingError) -> TLSConfiguration {
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(certificate) } catch {
            throw ServingError(.invalidRequest, "tls_cert \(certificate) is not a readable PEM certificate: \(error)")
        }
        guard !chain.isEmpty else {
            throw ServingError(.invalidRequest, "tls_cert \(certificate) holds no certificate")
        }
        let privateKey: NIOSSLPrivateKey
        do { privateKey = try NIOSSLPrivateKey(file: key, format: .pem) } catch {
            throw ServingError(.invalidRequest, "tls_key \(key) is not a readable PEM private key: \(error)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(privateKey))
        configuration.minimumTLSVersion = .tlsv12
        return configuration
    }

    /// The client side: the system's roots, plus the PEM certificates in `authorities` when given.
    public static func client(authorities: String?) throws(ServingError) -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        if let authorities {
            let roots: [NIOSSLCertificate]
            do { roots = try NIOSSLCertificate.fromPEMFile(authorities) } catch {
                throw ServingError(
                    .invalidRequest, "--tls-ca \(authorities) is not a readable PEM certificate: \(error)")
            }
            guard !roots.isEmpty else {
                throw ServingError(.invalidRequest, "--tls-ca \(authorities) holds no certificate")
            }
            configuration.additionalTrustRoots = [.certificates(roots)]
        }
        return configuration
    }

    /// The server's TLS settings from its configuration: nil without `tls_cert` and `tls_key`.
    public static func server(_ configuration: ServeConfiguration) throws(ServingError) -> TLSConfiguration? {
        switch (configuration.tlsCertificate, configuration.tlsKey) {
        case (nil, nil): return nil
        case (let certificate?, let key?): return try server(certificate: certificate, key: key)
        default: throw ServingError(.invalidRequest, "tls_cert and tls_key go together: give both, or neither")
        }
    }
}
