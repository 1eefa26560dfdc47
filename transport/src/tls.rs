//! TLS 1.3 with mutual authentication by pinned device IDs.
//!
//! There is no certificate authority: each side presents its self-signed
//! certificate, the verifier derives the device ID from the certificate's
//! public key and accepts it only if that device is trusted, and the
//! handshake signature is checked against the same key. An unknown device is
//! refused during the handshake and logged with its ID, so the user can add
//! it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::id::{DeviceId, Identity};

/// The protocol name negotiated in the handshake; a future `fsync/2` can be
/// offered beside it.
pub const ALPN: &[u8] = b"fsync/1";

/// Which devices are trusted, and for which folders. Shared and changeable
/// while the node runs.
#[derive(Debug, Default)]
pub struct Trust {
    peers: RwLock<HashMap<DeviceId, HashSet<String>>>,
}

impl Trust {
    /// Trusts `device` for `folder` (adds to what it had).
    pub fn allow(&self, device: DeviceId, folder: &str) {
        if let Ok(mut p) = self.peers.write() {
            p.entry(device).or_default().insert(folder.to_owned());
        }
    }

    /// True when the device is trusted for anything.
    pub fn is_trusted(&self, device: &DeviceId) -> bool {
        self.peers.read().map(|p| p.contains_key(device)).unwrap_or(false)
    }

    /// The folders a device is trusted for.
    pub fn folders_of(&self, device: &DeviceId) -> HashSet<String> {
        self.peers.read().ok().and_then(|p| p.get(device).cloned()).unwrap_or_default()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[derive(Debug)]
struct Pinned {
    trust: Arc<Trust>,
    provider: Arc<CryptoProvider>,
}

impl Pinned {
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let id = DeviceId::from_cert(cert).map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if self.trust.is_trusted(&id) {
            Ok(())
        } else {
            tracing::warn!(device = %id, "refused a connection from an unknown device; trust it with `fsync peer add {id}`");
            Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
        }
    }

    fn tls13(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity).map(|_| ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for Pinned {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(&self, end_entity: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: UnixTime) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity).map(|_| ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

fn key(id: &Identity) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der().to_vec()))
}

/// The server side: requires a trusted client certificate.
pub(crate) fn server_config(id: &Identity, trust: Arc<Trust>) -> Result<rustls::ServerConfig, rustls::Error> {
    let p = provider();
    let verifier = Arc::new(Pinned { trust, provider: p.clone() });
    let mut c = rustls::ServerConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![id.cert()], key(id))?;
    c.alpn_protocols = vec![ALPN.to_vec()];
    Ok(c)
}

/// The client side: presents our certificate, requires a trusted server.
pub(crate) fn client_config(id: &Identity, trust: Arc<Trust>) -> Result<rustls::ClientConfig, rustls::Error> {
    let p = provider();
    let verifier = Arc::new(Pinned { trust, provider: p.clone() });
    let mut c = rustls::ClientConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![id.cert()], key(id))?;
    c.alpn_protocols = vec![ALPN.to_vec()];
    Ok(c)
}
