//! The daemon's HTTP front end: every shared file as a Braid-HTTP resource
//! (read, subscribe to, edit), and a web page over them.
//!
//! - [`braid`]: the wire format (versions, ranges, patches, updates).
//! - [`patch`]: Braid patches and the folder's text edits.
//! - [`owner`]: what the front end asks of the folders' owner (the
//!   daemon), which holds every folder; the front end holds none.
//! - the server (access, routes, limits) and the subscriptions hub.
//!
//! Access needs the node's token (`Authorization: Bearer`, or the cookie
//! set by visiting `/?token=`). The server listens on loopback unless told
//! otherwise; see `docs/http.md`.

pub mod braid;
mod hub;
pub mod owner;
mod page;
pub mod patch;
mod server;

use std::net::SocketAddr;

pub use hub::{MAX_SUBSCRIBERS, QUEUE};
pub use owner::{Call, DirEntry, Owner, Read, Refusal, Target, Write, Written};
pub use server::{MAX_BODY, MAX_CONNECTIONS, MAX_HEAD, RESERVED};

/// Largest binary content a GET answers (it is read whole).
pub const MAX_READ: u64 = 256 << 20;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// The port tried first when the config names none.
pub const DEFAULT_PORT: u16 = 7421;
/// Ports after the default one tried before any free port is taken.
const SEARCH: u16 = 10;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The address could not be bound.
    #[error("cannot listen for HTTP on {addr}: {cause}")]
    Bind {
        /// Where.
        addr: SocketAddr,
        /// Why.
        cause: std::io::Error,
    },
}

/// Binds `addr`; with `search` (the default address, not one the user
/// chose), a taken port moves on to the next few and then to any free
/// one, so several nodes on one machine each get one.
pub async fn bind(addr: SocketAddr, search: bool) -> Result<TcpListener, HttpError> {
    let first = TcpListener::bind(addr).await;
    if !search {
        return first.map_err(|cause| HttpError::Bind { addr, cause });
    }
    if let Ok(l) = first {
        return Ok(l);
    }
    for port in addr.port().saturating_add(1)..=addr.port().saturating_add(SEARCH) {
        if let Ok(l) = TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            return Ok(l);
        }
    }
    let any = SocketAddr::new(addr.ip(), 0);
    TcpListener::bind(any).await.map_err(|cause| HttpError::Bind { addr: any, cause })
}

/// Serves Braid-HTTP and the page on `listener`, asking `owner` for
/// everything; `changes` ticks whenever any folder changed. Runs until the
/// owner's queue closes.
pub fn start(listener: TcpListener, token: String, owner: mpsc::Sender<Call>, changes: watch::Receiver<u64>) {
    tokio::spawn(server::serve(listener, token, Owner(owner), changes));
}
