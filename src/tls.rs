//! One TLS crypto provider for the process: ring, which kube and fledge's HTTP clients already use. The
//! OCI client is built without a provider of its own and takes this one.

/// Installs ring as rustls' process-wide provider; later calls (and a provider already set) are no-ops.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
