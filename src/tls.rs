//! The process's one rustls crypto provider (ring: pure Rust and assembly, no C toolchain
//! beyond what `cc` needs, no cmake). Every TLS user in the binary goes through it.

/// Installs the provider; safe to call any number of times from any thread.
pub fn init() {
    // Err only means a provider is already installed, which is the state we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
