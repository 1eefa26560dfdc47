//! Invitations: `fsync invite FOLDER` prints a one-line ticket; `fsync join
//! TICKET PATH` on another machine trusts the inviter and proves the
//! ticket's secret on first contact, and the inviter trusts it back.
//!
//! A ticket carries the inviter's device ID (so the joiner pins it like any
//! peer), where to reach it, the folder, a 128-bit single-use secret and an
//! expiry, with a checksum that catches a damaged copy-paste:
//!
//! ```text
//! fsync1-<base32 of: device(32) folder(str) addrs(count, str...) secret(16) expires(varint) blake3[..4]>
//! ```
//!
//! The inviter keeps its open invitations in `HOME/invites.toml`
//! (owner-only), so they survive a restart and work whether the daemon
//! runs or not. A redeemed invitation is removed from it.

// Parses what peers, users and the disk send: no slicing or indexing that
// can panic on it.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use fsync_core::encoding::{Reader, Writer};
use serde::{Deserialize, Serialize};
use transport::tls::{Invite, SECRET_LEN};
use transport::DeviceId;

const PREFIX: &str = "fsync1-";
const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyz234567";

/// How long an invitation stays open unless told otherwise.
pub const DEFAULT_TTL_SECS: u64 = 24 * 3600;

/// Everything a joiner needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The inviter.
    pub device: DeviceId,
    /// The folder offered.
    pub folder: String,
    /// Where to reach the inviter (`HOST:PORT`).
    pub addrs: Vec<String>,
    /// The single-use secret.
    pub secret: [u8; SECRET_LEN],
    /// Unix time (seconds) when the invitation lapses.
    pub expires: u64,
}

fn checksum(b: &[u8]) -> [u8; 4] {
    let h = blake3::hash(b);
    let mut c = [0u8; 4];
    c.copy_from_slice(&h.as_bytes()[..4]);
    c
}

impl Ticket {
    /// The one-line form.
    pub fn encode(&self) -> String {
        let mut w = Writer::new();
        w.raw(&self.device.0);
        w.str(&self.folder);
        w.usize(self.addrs.len());
        for a in &self.addrs {
            w.str(a);
        }
        w.raw(&self.secret);
        w.varint(self.expires);
        let mut bytes = w.into_bytes();
        let c = checksum(&bytes);
        bytes.extend_from_slice(&c);
        format!("{PREFIX}{}", base32(&bytes))
    }

    /// Reads a ticket, saying what is wrong with a bad one.
    pub fn decode(s: &str) -> Result<Ticket> {
        let s = s.trim();
        let body = s
            .strip_prefix(PREFIX)
            .context("not an fsync ticket (it starts with \"fsync1-\"); copy the whole line `fsync invite` printed")?;
        let bytes = unbase32(body).context("the ticket has characters that do not belong in it; copy it again")?;
        if bytes.len() < 4 {
            bail!("the ticket is cut short; copy the whole line again");
        }
        let (data, c) = bytes.split_at(bytes.len() - 4);
        if checksum(data) != c {
            bail!("the ticket is damaged (a character is wrong or missing); copy the whole line again");
        }
        let bad = |e: fsync_core::encoding::DecodeError| anyhow::anyhow!("the ticket is malformed: {e}");
        let mut r = Reader::new(data);
        let mut device = [0u8; 32];
        device.copy_from_slice(r.raw(32).map_err(bad)?);
        let folder = r.str().map_err(bad)?.to_owned();
        let n = r.count(1).map_err(bad)?;
        let mut addrs = Vec::with_capacity(n);
        for _ in 0..n {
            addrs.push(r.str().map_err(bad)?.to_owned());
        }
        let mut secret = [0u8; SECRET_LEN];
        secret.copy_from_slice(r.raw(SECRET_LEN).map_err(bad)?);
        let expires = r.varint().map_err(bad)?;
        r.finish().map_err(bad)?;
        Ok(Ticket { device: DeviceId(device), folder, addrs, secret, expires })
    }
}

/// Tickets are lower-case base32 without padding; upper case is read too.
fn ticket_base32() -> Option<data_encoding::Encoding> {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str(ALPHABET);
    spec.translate.from.push_str(&ALPHABET.to_ascii_uppercase());
    spec.translate.to.push_str(ALPHABET);
    spec.check_trailing_bits = false;
    spec.encoding().ok()
}

fn base32(bytes: &[u8]) -> String {
    ticket_base32().map(|e| e.encode(bytes)).unwrap_or_default()
}

fn unbase32(s: &str) -> Option<Vec<u8>> {
    ticket_base32()?.decode(s.as_bytes()).ok()
}

/// One open invitation as saved in `invites.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    folder: String,
    /// Hex.
    secret: String,
    expires: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    #[serde(default, rename = "invite")]
    invites: Vec<Saved>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a secret written in hex (as in `invites.toml` and a joiner's
/// config).
pub fn parse_secret(s: &str) -> Option<[u8; SECRET_LEN]> {
    if s.len() != 2 * SECRET_LEN {
        return None;
    }
    let mut out = [0u8; SECRET_LEN];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Writes a secret in hex.
pub fn secret_hex(s: &[u8; SECRET_LEN]) -> String {
    hex(s)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The open (unexpired) invitations saved in `path`.
pub fn load(path: &Path) -> Result<Vec<Invite>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let file: File = toml::from_str(&text).with_context(|| format!("{} is damaged", path.display()))?;
    let now = now();
    Ok(file
        .invites
        .into_iter()
        .filter(|i| i.expires > now)
        .filter_map(|i| Some(Invite { secret: parse_secret(&i.secret)?, folder: i.folder, expires: i.expires }))
        .collect())
}

fn save(path: &Path, invites: &[Invite]) -> Result<()> {
    let file = File {
        invites: invites
            .iter()
            .map(|i| Saved { folder: i.folder.clone(), secret: hex(&i.secret), expires: i.expires })
            .collect(),
    };
    let text = toml::to_string_pretty(&file).context("cannot encode the invitations")?;
    let tmp = path.with_extension("toml.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

/// Opens a new invitation for `folder`, valid for `ttl_secs`, and saves it.
pub fn create(path: &Path, folder: &str, ttl_secs: u64) -> Result<Invite> {
    let mut secret = [0u8; SECRET_LEN];
    crate::home::random_bytes(&mut secret)?;
    let invite = Invite { folder: folder.to_owned(), secret, expires: now().saturating_add(ttl_secs) };
    let mut all = load(path)?;
    all.push(invite.clone());
    save(path, &all)?;
    Ok(invite)
}

/// Removes a redeemed invitation (and any expired ones).
pub fn remove(path: &Path, secret: &[u8; SECRET_LEN]) -> Result<()> {
    let mut all = load(path)?;
    all.retain(|i| &i.secret != secret);
    save(path, &all)
}

/// Addresses to put in a ticket for a node listening on `listen`: the
/// address itself when it names one; for a wildcard, this machine's
/// address on its default route (how another machine most likely reaches
/// it), else loopback.
pub fn reachable_addrs(listen: SocketAddr) -> Vec<String> {
    if !listen.ip().is_unspecified() {
        return vec![listen.to_string()];
    }
    // Connecting a UDP socket sends nothing; it only picks a route.
    let probe = UdpSocket::bind("0.0.0.0:0").and_then(|s| s.connect("192.0.2.1:9").map(|_| s)).and_then(|s| s.local_addr());
    let ip = match probe {
        Ok(a) if !a.ip().is_unspecified() => a.ip(),
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    vec![SocketAddr::new(ip, listen.port()).to_string()]
}

/// Opens an invitation for `folder` (which `config` must share), saved in
/// `path`, and returns it with its one-line ticket. The ticket lists
/// `addrs`, or by default where a node listening on `listen` is reachable.
pub fn issue(
    path: &Path,
    config: &crate::config::Config,
    device: DeviceId,
    folder: &str,
    ttl_secs: u64,
    addrs: Vec<String>,
    listen: SocketAddr,
) -> Result<(Invite, String)> {
    if !config.folders.iter().any(|f| f.name == folder) {
        bail!("no folder named {folder:?}: share one first with `fsync folder add {folder} PATH`");
    }
    let invite = create(path, folder, ttl_secs)?;
    let addrs = if addrs.is_empty() { reachable_addrs(listen) } else { addrs };
    let ticket = Ticket { device, folder: folder.to_owned(), addrs, secret: invite.secret, expires: invite.expires };
    Ok((invite, ticket.encode()))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::string_slice)]
mod tests {
    use super::*;

    fn sample() -> Ticket {
        Ticket {
            device: DeviceId([5; 32]),
            folder: "notes".into(),
            addrs: vec!["192.0.2.7:7420".into(), "[2001:db8::1]:7420".into()],
            secret: [9; SECRET_LEN],
            expires: 1_900_000_000,
        }
    }

    #[test]
    fn ticket_round_trips_and_is_one_plain_line() {
        let t = sample();
        let s = t.encode();
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "{s}");
        assert_eq!(Ticket::decode(&s).expect("decode"), t);
        assert_eq!(Ticket::decode(&format!("  {s}\n")).expect("whitespace"), t);
    }

    #[test]
    fn damaged_tickets_are_refused_with_a_reason() {
        let s = sample().encode();
        let mut bytes = s.clone().into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
        let e = Ticket::decode(&String::from_utf8(bytes).expect("utf8")).expect_err("one changed character");
        assert!(e.to_string().contains("damaged"), "{e}");
        let e = Ticket::decode(&s[..s.len() - 3]).expect_err("cut");
        assert!(e.to_string().contains("damaged") || e.to_string().contains("short"), "{e}");
        assert!(Ticket::decode("hello").is_err());
        assert!(Ticket::decode("fsync1-!!").is_err());
    }

    #[test]
    fn invitations_are_saved_owner_only_and_removed_once_used() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("fsync-invites-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("invites.toml");
        let a = create(&path, "notes", 60).expect("create");
        let b = create(&path, "notes", 60).expect("create");
        assert_ne!(a.secret, b.secret);
        assert_eq!(load(&path).expect("load"), vec![a.clone(), b.clone()]);
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        remove(&path, &a.secret).expect("remove");
        assert_eq!(load(&path).expect("load"), vec![b]);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
