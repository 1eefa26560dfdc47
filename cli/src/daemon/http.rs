//! The daemon's side of the HTTP front end: it answers the front end's
//! calls on its own loop, like control requests, so a folder has one owner
//! whether a change comes from the disk, a peer, the mount or HTTP.

use anyhow::Result;
use fsync_http::{Call, Read, Refusal, Target, Write, Written};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::{now_ms, Daemon, HttpAt};
use crate::control::Request;
use crate::web::{self, Scope};

/// Calls waiting for the loop.
const QUEUE: usize = 64;

/// Binds the front end's address; connections wait in the listener's
/// backlog until [`start`].
pub(super) async fn bind(at: HttpAt) -> Result<TcpListener> {
    let listener = fsync_http::bind(at.addr, at.search).await?;
    let addr = listener.local_addr()?;
    if at.search && addr != at.addr {
        tracing::info!(wanted = %at.addr, "the default HTTP port is taken: serving on {addr} instead");
    }
    Ok(listener)
}

/// Starts the front end on `listener`; returns its address and the queue
/// of its calls.
pub(super) fn start(d: &Daemon, listener: TcpListener) -> Result<(std::net::SocketAddr, mpsc::Receiver<Call>)> {
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(QUEUE);
    fsync_http::start(listener, d.home.http_token()?, tx, d.generation.subscribe());
    tracing::info!(http = %addr, "serving HTTP (`fsync open` prints the page's address)");
    Ok((addr, rx))
}

impl Daemon {
    /// Answers one call of the front end.
    pub(super) fn http(&mut self, call: Call) {
        match call {
            Call::Status { reply } => {
                let v = serde_json::from_str(&self.status(true)).unwrap_or(serde_json::Value::Null);
                let _ = reply.send(v);
            }
            Call::Read { target, at, known, reply } => {
                let _ = reply.send(self.http_read(&target, at.as_deref(), known.as_deref()));
            }
            Call::Write { target, write, reply } => {
                let _ = reply.send(self.http_write(&target, write));
            }
            Call::Log { target, reply } => {
                let request = Request::Log { folder: target.folder, path: target.path, json: true };
                let r = self
                    .control(&request)
                    .map_err(|e| Refusal::NotFound(format!("{e:#}")))
                    .and_then(|b| serde_json::from_slice(&b).map_err(|e| Refusal::Unavailable(e.to_string())));
                let _ = reply.send(r);
            }
            Call::Restore { target, version, reply } => {
                let r = self
                    .restore(&target.folder, &target.path, Some(&version), None)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .map_err(|e| Refusal::BadRequest(format!("{e:#}")));
                let _ = reply.send(r);
            }
        }
    }

    fn http_read(&mut self, target: &Target, at: Option<&[String]>, known: Option<&[String]>) -> Result<Read, Refusal> {
        let scope = Scope { node: self.agent, folder: &target.folder };
        self.read(&target.folder, |s| web::read(&scope, &mut s.folder, &s.chunks, &target.path, at, known))
            .unwrap_or_else(|| Err(no_folder(&target.folder)))
    }

    /// An edit, answered once it is saved: peers get it, and the
    /// write-back puts it on disk, as for any change.
    fn http_write(&mut self, target: &Target, write: Write) -> Result<Written, Refusal> {
        let i = self.locals.iter().position(|l| l.name == target.folder).ok_or_else(|| no_folder(&target.folder))?;
        if let Some(why) = &self.locals[i].stopped {
            return Err(Refusal::Unavailable(format!("folder {} is stopped: {why}", target.folder)));
        }
        let ignore = watcher::ignore::Ignore::load(&self.locals[i].root);
        let ignored = |p: &str| ignore.ignored(p, false);
        let scope = Scope { node: self.agent, folder: &target.folder };
        let now = now_ms();
        let written = self
            .edit(&target.folder, |s| web::write(&scope, &mut s.folder, &mut s.chunks, &target.path, write, &ignored, now))
            .unwrap_or_else(|| Err(no_folder(&target.folder)))?;
        self.persist(i);
        if let Some(e) = &self.store_error {
            return Err(Refusal::Unavailable(format!(
                "taken in, but not saved yet ({e}); it is saved once the store works again"
            )));
        }
        Ok(written)
    }
}

fn no_folder(name: &str) -> Refusal {
    Refusal::NotFound(format!("no folder named {name:?}"))
}
