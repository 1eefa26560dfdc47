//! TLS 1.3 with mutual authentication by pinned device IDs.
//!
//! There is no certificate authority: each side presents its self-signed
//! certificate, the verifier derives the device ID from the certificate's
//! public key and accepts it only if that device is trusted, and the
//! handshake signature is checked against the same key. An unknown device is
//! refused during the handshake and logged with its ID, so the user can add
//! it.
//!
//! Invitations are the one exception: while an invitation is open, an
//! unknown device gets through the handshake *provisionally*, and must then
//! prove the invitation's secret in its hello (see [`join_proof`]) or be
//! dropped before it learns anything.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::id::{DeviceId, Identity};

/// The protocol name negotiated in the handshake; a future `fsync/2` can be
/// offered beside it.
pub const ALPN: &[u8] = b"fsync/1";

/// Which devices are trusted, and for which folders; open invitations, and
/// the secrets this node proves to inviters. Shared and changeable while the
/// node runs.
#[derive(Default)]
pub struct Trust {
    peers: RwLock<HashMap<DeviceId, HashSet<String>>>,
    invites: Mutex<Vec<Invite>>,
    /// Secrets from tickets we joined with, by inviter.
    join_secrets: RwLock<HashMap<DeviceId, [u8; SECRET_LEN]>>,
    on_join: Mutex<Option<JoinHook>>,
}

type JoinHook = Box<dyn Fn(&Joined) + Send + Sync>;

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust").field("peers", &self.peers).finish_non_exhaustive()
    }
}

/// Length of an invitation secret (128 bits).
pub const SECRET_LEN: usize = 16;

/// An open invitation: whoever proves `secret` before `expires` becomes
/// trusted for `folder`, once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    /// The folder offered.
    pub folder: String,
    /// The secret in the ticket.
    pub secret: [u8; SECRET_LEN],
    /// Unix time (seconds) after which it is void.
    pub expires: u64,
}

/// A device that redeemed an invitation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    /// The new peer.
    pub device: DeviceId,
    /// The folder it is now trusted for.
    pub folder: String,
    /// The secret it proved (identifies the invitation).
    pub secret: [u8; SECRET_LEN],
    /// The address it connected from (its listening address, since a
    /// node dials from the socket it listens on).
    pub addr: std::net::SocketAddr,
}

/// What a joiner sends to prove an invitation's secret: a keyed hash bound
/// to both devices, so the proof is useless to anyone who sees it.
pub fn join_proof(secret: &[u8; SECRET_LEN], joiner: DeviceId, inviter: DeviceId) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..SECRET_LEN].copy_from_slice(secret);
    let mut h = blake3::Hasher::new_keyed(&key);
    h.update(b"fsync join v1");
    h.update(&joiner.0);
    h.update(&inviter.0);
    *h.finalize().as_bytes()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Trust {
    /// Opens an invitation.
    pub fn invite(&self, invite: Invite) {
        if let Ok(mut v) = self.invites.lock() {
            v.push(invite);
        }
    }

    /// True while some invitation is open (unknown devices then get
    /// through the handshake provisionally).
    pub fn has_open_invites(&self) -> bool {
        let now = unix_now();
        self.invites.lock().map(|v| v.iter().any(|i| i.expires > now)).unwrap_or(false)
    }

    /// How many invitations are open.
    pub fn open_invites(&self) -> usize {
        let now = unix_now();
        self.invites.lock().map(|v| v.iter().filter(|i| i.expires > now).count()).unwrap_or(0)
    }

    /// Redeems the invitation `proof` answers, for `joiner`: trusts it for
    /// the folder, closes the invitation and tells the join hook. `None`
    /// when no open invitation matches.
    pub fn redeem(&self, joiner: DeviceId, me: DeviceId, proof: &[u8; 32], addr: std::net::SocketAddr) -> Option<String> {
        let now = unix_now();
        let invite = {
            let mut v = self.invites.lock().ok()?;
            v.retain(|i| i.expires > now);
            // Compare every candidate fully: no early exit on a match.
            let pos = v.iter().position(|i| constant_eq(&join_proof(&i.secret, joiner, me), proof))?;
            v.remove(pos)
        };
        self.allow(joiner, &invite.folder);
        let joined = Joined { device: joiner, folder: invite.folder.clone(), secret: invite.secret, addr };
        if let Ok(hook) = self.on_join.lock() {
            if let Some(h) = hook.as_ref() {
                h(&joined);
            }
        }
        Some(invite.folder)
    }

    /// Called after every redeemed invitation (the daemon saves the new
    /// peer in its config).
    pub fn on_join(&self, hook: impl Fn(&Joined) + Send + Sync + 'static) {
        if let Ok(mut h) = self.on_join.lock() {
            *h = Some(Box::new(hook));
        }
    }

    /// Remembers the secret of a ticket from `inviter`, proved on every
    /// connection to it until it is no longer needed.
    pub fn set_join_secret(&self, inviter: DeviceId, secret: [u8; SECRET_LEN]) {
        if let Ok(mut m) = self.join_secrets.write() {
            m.insert(inviter, secret);
        }
    }

    /// The proof to send to `inviter`, if we hold a ticket from it.
    pub fn proof_for(&self, inviter: DeviceId, me: DeviceId) -> Option<[u8; 32]> {
        let m = self.join_secrets.read().ok()?;
        m.get(&inviter).map(|s| join_proof(s, me, inviter))
    }

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

fn constant_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[derive(Debug)]
struct Pinned {
    trust: Arc<Trust>,
    provider: Arc<CryptoProvider>,
    /// Server side: let unknown clients in provisionally while an
    /// invitation is open (they must prove it in their hello).
    invitations: bool,
}

impl Pinned {
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let id = DeviceId::from_cert(cert).map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if self.trust.is_trusted(&id) {
            Ok(())
        } else if self.invitations && self.trust.has_open_invites() {
            tracing::debug!(device = %id, "unknown device let in provisionally: an invitation is open");
            Ok(())
        } else {
            tracing::warn!(device = %id, "refused a connection from an unknown device; trust it with `fsync peer add {id}`");
            Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
        }
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity).map(|_| ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
    let verifier = Arc::new(Pinned { trust, provider: p.clone(), invitations: true });
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
    let verifier = Arc::new(Pinned { trust, provider: p.clone(), invitations: false });
    let mut c = rustls::ClientConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![id.cert()], key(id))?;
    c.alpn_protocols = vec![ALPN.to_vec()];
    Ok(c)
}
