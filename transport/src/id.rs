//! Device identities: a key pair, a self-signed certificate, and the device
//! ID derived from the public key.
//!
//! A device ID is the BLAKE3 hash of the certificate's SubjectPublicKeyInfo,
//! written in base32 as four groups of 13 characters, each followed by a
//! Luhn (mod 32) check character, so a mistyped ID is caught. The TLS
//! handshake proves possession of the matching private key, so a peer cannot
//! claim another's ID.

// Parses what peers, users and the disk send: no slicing or indexing that
// can panic on it.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::fmt;
use std::str::FromStr;

use rustls::pki_types::CertificateDer;

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const GROUP: usize = 13;

/// A device's identity as peers see it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub [u8; 32]);

/// Why a device ID or identity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Wrong length or characters.
    #[error("not a device ID: expected 4 groups of 14 characters A-Z and 2-7, like {example}")]
    Malformed {
        /// A well-formed example.
        example: &'static str,
    },
    /// A check character does not match: a typo.
    #[error("device ID has a typo in group {0} (check character mismatch)")]
    Check(usize),
    /// The certificate could not be parsed.
    #[error("invalid certificate: {0}")]
    Certificate(String),
    /// Key or certificate generation failed.
    #[error("cannot create identity: {0}")]
    Generate(String),
}

const EXAMPLE: &str = "AAAAAAAAAAAAAA-AAAAAAAAAAAAAA-AAAAAAAAAAAAAA-AAAAAAAAAAAAAA";

fn luhn32(chars: &[u8]) -> u8 {
    // Luhn mod N over base32 digits, as Syncthing does.
    let mut factor = 1;
    let mut sum = 0;
    for &c in chars {
        let code = ALPHABET.iter().position(|&a| a == c).unwrap_or(0);
        let mut addend = factor * code;
        factor = if factor == 2 { 1 } else { 2 };
        addend = addend / 32 + addend % 32;
        sum += addend;
    }
    let check = (32 - sum % 32) % 32;
    ALPHABET.get(check).copied().unwrap_or(b'A')
}

fn base32(bytes: &[u8]) -> Vec<u8> {
    data_encoding::BASE32_NOPAD.encode(bytes).into_bytes()
}

impl DeviceId {
    /// The ID of the device holding `cert`'s key.
    pub fn from_cert(cert: &CertificateDer<'_>) -> Result<DeviceId, IdError> {
        let parsed = webpki::EndEntityCert::try_from(cert).map_err(|e| IdError::Certificate(format!("{e:?}")))?;
        let spki = parsed.subject_public_key_info();
        Ok(DeviceId(*blake3::hash(spki.as_ref()).as_bytes()))
    }

    /// The first characters, for logs.
    pub fn short(&self) -> String {
        self.to_string().chars().take(7).collect()
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b32 = base32(&self.0); // 52 characters
        let groups: Vec<String> = b32
            .chunks(GROUP)
            .map(|g| {
                let mut s = String::from_utf8_lossy(g).into_owned();
                s.push(luhn32(g) as char);
                s
            })
            .collect();
        f.write_str(&groups.join("-"))
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.short())
    }
}

impl FromStr for DeviceId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<DeviceId, IdError> {
        let clean: Vec<u8> = s.bytes().filter(|b| !matches!(b, b'-' | b' ')).map(|b| b.to_ascii_uppercase()).collect();
        if clean.len() != 4 * (GROUP + 1) || !clean.iter().all(|c| ALPHABET.contains(c)) {
            return Err(IdError::Malformed { example: EXAMPLE });
        }
        let mut data = Vec::with_capacity(52);
        for (i, g) in clean.chunks(GROUP + 1).enumerate() {
            let (body, check) = g.split_at(GROUP.min(g.len()));
            if check.first() != Some(&luhn32(body)) {
                return Err(IdError::Check(i + 1));
            }
            data.extend_from_slice(body);
        }
        // 52 base32 characters carry 260 bits: 32 bytes and 4 zero bits.
        let out: [u8; 32] = data_encoding::BASE32_NOPAD
            .decode(&data)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(IdError::Malformed { example: EXAMPLE })?;
        Ok(DeviceId(out))
    }
}

/// A device's key pair and self-signed certificate.
#[derive(Clone)]
pub struct Identity {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
    id: DeviceId,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.id)
    }
}

impl Identity {
    /// A new Ed25519 key and certificate.
    pub fn generate() -> Result<Identity, IdError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| IdError::Generate(e.to_string()))?;
        let params = rcgen::CertificateParams::new(vec!["fsync".to_owned()]).map_err(|e| IdError::Generate(e.to_string()))?;
        let cert = params.self_signed(&key).map_err(|e| IdError::Generate(e.to_string()))?;
        Identity::from_der(cert.der().to_vec(), key.serialize_der())
    }

    /// An identity from its stored certificate and PKCS#8 key.
    pub fn from_der(cert: Vec<u8>, key: Vec<u8>) -> Result<Identity, IdError> {
        let cert = CertificateDer::from(cert);
        let id = DeviceId::from_cert(&cert)?;
        Ok(Identity { cert, key, id })
    }

    /// The device ID.
    pub fn device_id(&self) -> DeviceId {
        self.id
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        self.cert.as_ref()
    }

    /// The private key, PKCS#8 DER. Keep it secret.
    pub fn key_der(&self) -> &[u8] {
        &self.key
    }

    pub(crate) fn cert(&self) -> CertificateDer<'static> {
        self.cert.clone()
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::string_slice)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_catch_typos() {
        let id = Identity::generate().expect("identity").device_id();
        let s = id.to_string();
        assert_eq!(s.len(), 59);
        assert_eq!(s.parse::<DeviceId>(), Ok(id));
        assert_eq!(s.to_lowercase().replace('-', " ").parse::<DeviceId>(), Ok(id));
        // One wrong character in each group is caught.
        for g in 0..4 {
            let mut b = s.clone().into_bytes();
            let i = g * 15 + 3;
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            assert!(String::from_utf8(b).expect("ascii").parse::<DeviceId>().is_err(), "typo in group {g} missed");
        }
        assert!("hello".parse::<DeviceId>().is_err());
    }

    #[test]
    fn the_id_follows_the_key() {
        let a = Identity::generate().expect("identity");
        let again = Identity::from_der(a.cert_der().to_vec(), a.key_der().to_vec()).expect("reload");
        assert_eq!(a.device_id(), again.device_id());
        assert_ne!(a.device_id(), Identity::generate().expect("identity").device_id());
    }
}
