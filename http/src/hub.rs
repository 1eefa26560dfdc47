//! Subscriptions, with the `simpleton` merge type: a client keeps no
//! history, only the text at the version it names, and applies an update
//! only when its `Parents` are that version. So the hub remembers, per
//! subscriber, the version and text the client holds, and sends each
//! exactly the patches from there to the merged text. A client's own PUT
//! moves its record to the version it named; nothing is echoed to it.
//!
//! One task owns every subscription and asks the owner for content only
//! for files that have subscribers, when a change was announced: its work
//! is per subscribed file and change, not per folder.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::braid::{encode_update, Patch, PutBody, Update};
use crate::owner::{Owner, Read, Refusal, Target, Write, Written};
use crate::patch;

/// Most subscriptions at once, over all files, unless
/// `FSYNC_HTTP_SUBSCRIBERS` says otherwise.
pub const MAX_SUBSCRIBERS: usize = 4096;
/// Updates queued for one subscriber; a client that falls this far behind
/// is cut off (it reconnects from its version and catches up).
pub const QUEUE: usize = 64;

/// A subscription's stream, as the server gets it.
pub(crate) struct Subscribed {
    /// The file's version now (the `Current-Version` header).
    pub current: Vec<String>,
    /// The updates, the first already queued.
    pub updates: mpsc::Receiver<Bytes>,
}

pub(crate) enum Msg {
    Subscribe {
        target: Target,
        peer: Option<String>,
        parents: Option<Vec<String>>,
        reply: oneshot::Sender<Result<Subscribed, Refusal>>,
    },
    Put {
        target: Target,
        peer: Option<String>,
        write: Write,
        reply: oneshot::Sender<Result<Written, Refusal>>,
    },
}

/// What one client holds.
struct Sub {
    peer: Option<String>,
    /// The version it is at (sorted), as it names it.
    version: Vec<String>,
    /// Its text (none for a binary file or link: those go whole); shared
    /// by the subscribers at one version.
    text: Option<Arc<str>>,
    tx: mpsc::Sender<Bytes>,
}

struct Watched {
    /// The version last sent out.
    version: Vec<String>,
    subs: Vec<Sub>,
}

struct Hub {
    owner: Owner,
    files: HashMap<Target, Watched>,
}

/// Starts the hub; it ends when `msgs` closes.
pub(crate) fn start(owner: Owner, changes: watch::Receiver<u64>) -> mpsc::Sender<Msg> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(run(Hub { owner, files: HashMap::new() }, rx, changes));
    tx
}

async fn run(mut hub: Hub, mut msgs: mpsc::Receiver<Msg>, mut changes: watch::Receiver<u64>) {
    let mut sweep = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            msg = msgs.recv() => match msg {
                Some(Msg::Subscribe { target, peer, parents, reply }) => {
                    let r = hub.subscribe(target, peer, parents).await;
                    let _ = reply.send(r);
                }
                Some(Msg::Put { target, peer, write, reply }) => {
                    let r = hub.put(&target, peer, write).await;
                    let _ = reply.send(r);
                }
                None => return,
            },
            r = changes.changed() => {
                if r.is_err() {
                    return;
                }
                let targets: Vec<Target> = hub.files.keys().cloned().collect();
                for t in targets {
                    hub.refresh(&t).await;
                }
            }
            _ = sweep.tick() => hub.files.retain(|_, w| {
                w.subs.retain(|s| !s.tx.is_closed());
                !w.subs.is_empty()
            }),
        }
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The update taking a client from `from` (its version and text) to `to`.
fn update_between(from: &Sub, to_version: &[String], to: &Read) -> Option<Bytes> {
    match (to, &from.text) {
        (Read::Text { text, .. }, Some(old)) => {
            let patches: Vec<Patch> = patch::between(old, text);
            if patches.is_empty() {
                return None;
            }
            Some(Bytes::from(encode_update(&Update {
                version: to_version,
                parents: &from.version,
                patches: &patches,
                ..Default::default()
            })))
        }
        _ => whole(to, to_version, &from.version),
    }
}

/// `read` as one whole-body update.
fn whole(read: &Read, version: &[String], parents: &[String]) -> Option<Bytes> {
    let (body, content_type): (&[u8], &str) = match read {
        Read::Text { text, .. } => (text.as_bytes(), "text/plain; charset=utf-8"),
        Read::Binary { bytes, .. } => (bytes, "application/octet-stream"),
        Read::Link { target, .. } => (target.as_bytes(), "text/plain; charset=utf-8"),
        Read::Dir { .. } | Read::Unchanged => return None,
    };
    Some(Bytes::from(encode_update(&Update {
        version,
        parents,
        body: Some(body),
        content_type: Some(content_type),
        ..Default::default()
    })))
}

impl Hub {
    fn count(&self) -> usize {
        self.files.values().map(|w| w.subs.len()).sum()
    }

    /// [`MAX_SUBSCRIBERS`], or what the environment sets.
    fn most() -> usize {
        std::env::var("FSYNC_HTTP_SUBSCRIBERS").ok().and_then(|v| v.parse().ok()).unwrap_or(MAX_SUBSCRIBERS)
    }

    async fn subscribe(
        &mut self,
        target: Target,
        peer: Option<String>,
        parents: Option<Vec<String>>,
    ) -> Result<Subscribed, Refusal> {
        let most = Hub::most();
        if self.count() >= most {
            return Err(Refusal::Unavailable(format!("too many subscriptions (at most {most})")));
        }
        let now = self.owner.read(&target, None, None).await?;
        let current = sorted(now.version().to_vec());
        let (tx, rx) = mpsc::channel(QUEUE);
        let is_text = matches!(now, Read::Text { .. });
        let sub = match parents.filter(|p| !p.is_empty()).map(sorted) {
            // A new client: the whole text, on no parents.
            None => {
                let first =
                    whole(&now, &current, &[]).ok_or_else(|| Refusal::Conflict("a directory: subscribe to a file".into()))?;
                let _ = tx.try_send(first);
                Sub { peer, version: current.clone(), text: text_of(now), tx }
            }
            // A client coming back: from the version it holds.
            Some(p) if p == current => Sub { peer, version: p, text: text_of(now), tx },
            Some(p) => {
                let then = self.owner.read(&target, Some(p.clone()), None).await?;
                let from = Sub { peer, version: p, text: if is_text { text_of(then) } else { None }, tx };
                match update_between(&from, &current, &now) {
                    Some(u) => {
                        let _ = from.tx.try_send(u);
                        Sub { version: current.clone(), text: text_of(now), ..from }
                    }
                    // Nothing it would see changed: it stays at the
                    // version it named, which later updates name as their
                    // parents (as in `refresh`).
                    None => from,
                }
            }
        };
        let w = self.files.entry(target).or_insert_with(|| Watched { version: current.clone(), subs: Vec::new() });
        w.subs.push(sub);
        Ok(Subscribed { current, updates: rx })
    }

    /// A PUT through the hub, so the writer's record moves to what it
    /// holds before the next update is worked out.
    async fn put(&mut self, target: &Target, peer: Option<String>, write: Write) -> Result<Written, Refusal> {
        let parents = write.parents.clone().map(sorted);
        let named = write.version.clone();
        let patches = match &write.body {
            PutBody::Patches(p) => Some(p.clone()),
            PutBody::Whole(_) => None,
        };
        let written = self.owner.write(target, write).await?;
        let mine: Vec<usize> = match (&peer, self.files.get(target)) {
            (Some(p), Some(w)) => {
                (0..w.subs.len()).filter(|&i| w.subs.get(i).is_some_and(|s| s.peer.as_ref() == Some(p))).collect()
            }
            _ => Vec::new(),
        };
        for i in mine {
            // The client's text is its parents' text with its patches.
            let known = self.files.get(target).and_then(|w| w.subs.get(i)).and_then(|s| {
                let from_parents = parents.as_ref().is_none_or(|p| *p == s.version);
                match (&s.text, &patches) {
                    (Some(t), Some(ps)) if from_parents => patch::apply(t, ps).ok().map(Arc::from),
                    _ => None,
                }
            });
            let text = match known {
                Some(t) => Some(t),
                None => text_of(self.owner.read(target, Some(written.made.clone()), None).await.unwrap_or(Read::Unchanged)),
            };
            if let Some(s) = self.files.get_mut(target).and_then(|w| w.subs.get_mut(i)) {
                s.version = sorted(named.clone().map_or_else(|| written.made.clone(), |v| vec![v]));
                s.text = text;
            }
        }
        // Whatever merged with it goes out now, to everyone.
        if let Some(w) = self.files.get_mut(target) {
            w.version.clear();
        }
        self.refresh(target).await;
        Ok(written)
    }

    /// Sends every subscriber of `target` what changed since its version.
    async fn refresh(&mut self, target: &Target) {
        let Some(known) = self.files.get(target).map(|w| w.version.clone()) else { return };
        let now = match self.owner.read(target, None, Some(known)).await {
            Ok(Read::Unchanged) => return,
            Ok(r) => r,
            // Gone, or no longer a file: the streams end; clients that
            // reconnect are told why.
            Err(_) => {
                self.files.remove(target);
                return;
            }
        };
        let Some(w) = self.files.get_mut(target) else { return };
        let version = sorted(now.version().to_vec());
        w.version = version.clone();
        let text: Option<Arc<str>> = if let Read::Text { text, .. } = &now { Some(Arc::from(text.as_str())) } else { None };
        // Subscribers at one version get one update, worked out once.
        let mut made: HashMap<Vec<String>, Option<Bytes>> = HashMap::new();
        w.subs.retain_mut(|s| {
            // A text file that became binary (or the reverse): the client
            // cannot follow with patches.
            if s.text.is_some() != text.is_some() {
                return false;
            }
            if s.version == version {
                return true;
            }
            let u = made.entry(s.version.clone()).or_insert_with(|| update_between(s, &version, &now)).clone();
            // Nothing the client would see (an exec bit, say): it stays
            // at its version, which later updates name as their parents.
            let Some(u) = u else { return true };
            s.version = version.clone();
            s.text = text.clone();
            s.tx.try_send(u).is_ok()
        });
        if w.subs.is_empty() {
            self.files.remove(target);
        }
    }
}

fn text_of(r: Read) -> Option<Arc<str>> {
    match r {
        Read::Text { text, .. } => Some(Arc::from(text)),
        _ => None,
    }
}
