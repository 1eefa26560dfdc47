//! What the front end asks of the owner of the folders (the daemon), and
//! the answers. The front end holds no folder state of its own: every read
//! and write is a [`Call`] on the owner's queue, answered on a oneshot.

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::braid::PutBody;

/// A file or directory of a shared folder.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// The folder's name.
    pub folder: String,
    /// The path inside it; `""` is the folder itself.
    pub path: String,
}

/// A request to the owner.
#[derive(Debug)]
pub enum Call {
    /// What `fsync status --json` prints.
    Status {
        /// The answer.
        reply: oneshot::Sender<serde_json::Value>,
    },
    /// A file or directory now, or a file at a version.
    Read {
        /// What.
        target: Target,
        /// At these versions (from `fsync log`, or a client's own); none:
        /// now.
        at: Option<Vec<String>>,
        /// When the current version is this one, answer
        /// [`Read::Unchanged`] (spares copying the content).
        known: Option<Vec<String>>,
        /// The answer.
        reply: oneshot::Sender<Result<Read, Refusal>>,
    },
    /// An edit, merged like a save.
    Write {
        /// Where.
        target: Target,
        /// What.
        write: Write,
        /// The answer, once the edit is durable.
        reply: oneshot::Sender<Result<Written, Refusal>>,
    },
    /// A file's history, as `fsync log --json` prints it.
    Log {
        /// Which file.
        target: Target,
        /// The answer.
        reply: oneshot::Sender<Result<serde_json::Value, Refusal>>,
    },
    /// `fsync restore PATH --at VERSION`.
    Restore {
        /// What.
        target: Target,
        /// A version from the log.
        version: String,
        /// What was restored, in words.
        reply: oneshot::Sender<Result<String, Refusal>>,
    },
}

/// A read's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// The version is the one the caller knows.
    Unchanged,
    /// A text file.
    Text {
        /// Its version.
        version: Vec<String>,
        /// Its content.
        text: String,
    },
    /// A binary file.
    Binary {
        /// Its version.
        version: Vec<String>,
        /// Its content.
        bytes: Vec<u8>,
    },
    /// A symlink.
    Link {
        /// Its version.
        version: Vec<String>,
        /// Where it points.
        target: String,
    },
    /// A directory (or the folder itself).
    Dir {
        /// Its version (empty for the folder itself).
        version: Vec<String>,
        /// What it holds, by name.
        entries: Vec<DirEntry>,
    },
}

impl Read {
    /// The version read (empty when unchanged).
    pub fn version(&self) -> &[String] {
        match self {
            Read::Unchanged => &[],
            Read::Text { version, .. }
            | Read::Binary { version, .. }
            | Read::Link { version, .. }
            | Read::Dir { version, .. } => version,
        }
    }
}

/// One name in a directory listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DirEntry {
    /// The name.
    pub name: String,
    /// `file`, `directory` or `symlink`.
    pub kind: String,
    /// Bytes of a file.
    pub size: Option<u64>,
    /// Text or binary, for a file.
    pub text: Option<bool>,
    /// The executable bit.
    pub exec: bool,
    /// Its version.
    pub version: Vec<String>,
}

/// An edit to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// The version the client names this edit (`PEER-N`, as braid-text's
    /// clients number their edits), if it names one.
    pub version: Option<String>,
    /// The versions it was made on; none: the current one.
    pub parents: Option<Vec<String>>,
    /// The patches or the whole content.
    pub body: PutBody,
}

/// A write's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The file's version now.
    pub version: Vec<String>,
    /// The version the edit made (the one it was made on, when it changed
    /// nothing): the client's state is the file at this version.
    pub made: Vec<String>,
}

/// Why a call was refused; each is one HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No such folder or path (404).
    #[error("{0}")]
    NotFound(String),
    /// Versions this node does not have (yet) (309).
    #[error("unknown versions: {0:?}")]
    UnknownVersions(Vec<String>),
    /// The request does not fit what is there: patches to a binary file,
    /// a write to a directory (409).
    #[error("{0}")]
    Conflict(String),
    /// Not to be written here: an ignored path (403).
    #[error("{0}")]
    Forbidden(String),
    /// Malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// Over a documented limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// Not now: the folder is stopped, the store fails (503).
    #[error("{0}")]
    Unavailable(String),
}

/// The owner's queue, with one method per call.
#[derive(Clone, Debug)]
pub struct Owner(pub mpsc::Sender<Call>);

/// The owner stopped (the daemon is shutting down).
pub(crate) fn gone() -> Refusal {
    Refusal::Unavailable("the daemon is stopping".into())
}

impl Owner {
    async fn ask<T>(&self, call: impl FnOnce(oneshot::Sender<T>) -> Call) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.0.send(call(tx)).await.ok()?;
        rx.await.ok()
    }

    /// [`Call::Status`].
    pub async fn status(&self) -> Option<serde_json::Value> {
        self.ask(|reply| Call::Status { reply }).await
    }

    /// [`Call::Read`].
    pub async fn read(&self, target: &Target, at: Option<Vec<String>>, known: Option<Vec<String>>) -> Result<Read, Refusal> {
        self.ask(|reply| Call::Read { target: target.clone(), at, known, reply }).await.unwrap_or_else(|| Err(gone()))
    }

    /// [`Call::Write`].
    pub async fn write(&self, target: &Target, write: Write) -> Result<Written, Refusal> {
        self.ask(|reply| Call::Write { target: target.clone(), write, reply }).await.unwrap_or_else(|| Err(gone()))
    }

    /// [`Call::Log`].
    pub async fn log(&self, target: &Target) -> Result<serde_json::Value, Refusal> {
        self.ask(|reply| Call::Log { target: target.clone(), reply }).await.unwrap_or_else(|| Err(gone()))
    }

    /// [`Call::Restore`].
    pub async fn restore(&self, target: &Target, version: String) -> Result<String, Refusal> {
        self.ask(|reply| Call::Restore { target: target.clone(), version, reply }).await.unwrap_or_else(|| Err(gone()))
    }
}
