//! The control socket's requests: one JSON object a line (any path, tabs
//! and newlines included, travels as a JSON string), answered with `0` and
//! the body, or `1` and an error message.

// Parses what peers, users and the disk send: no slicing or indexing that
// can panic on it.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use serde::{Deserialize, Serialize};

/// The longest request line the daemon reads.
pub const MAX_REQUEST: u64 = 64 * 1024;

/// One request to the running daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// `fsync status`.
    Status {
        /// JSON rather than text.
        json: bool,
    },
    /// The config changed on disk: read it again.
    Reload,
    /// `fsync invite`.
    Invite {
        /// The folder to invite to.
        folder: String,
        /// Seconds the ticket stays valid.
        ttl: u64,
        /// Addresses to put in the ticket (none: the daemon's own).
        addrs: Vec<String>,
    },
    /// `fsync log`.
    Log {
        /// The folder.
        folder: String,
        /// The path inside it.
        path: String,
        /// JSON rather than text.
        json: bool,
    },
    /// `fsync cat`.
    Cat {
        /// The folder.
        folder: String,
        /// The path inside it.
        path: String,
        /// A version from `fsync log`, or the content now.
        at: Option<String>,
    },
    /// `fsync ls`.
    Ls {
        /// The folder.
        folder: String,
        /// The directory inside it (`""`: the whole folder).
        dir: String,
        /// Deleted files rather than what is there now.
        deleted: bool,
        /// JSON rather than text.
        json: bool,
    },
    /// `fsync restore`.
    Restore {
        /// The folder.
        folder: String,
        /// The path inside it (`""`: the whole folder).
        path: String,
        /// A version from `fsync log`.
        at: Option<String>,
        /// As it was before this time (ms since the epoch).
        before: Option<u64>,
    },
    /// `fsync mount FOLDER MOUNTPOINT --at TIME`: a read-only view of the
    /// past, mounted by the daemon.
    MountAt {
        /// The folder.
        folder: String,
        /// Where (an absolute path to an empty directory).
        mountpoint: String,
        /// As the events before this time left it (ms since the epoch).
        before: u64,
    },
    /// `fsync resume`: let the deletions the guard holds through.
    Resume {
        /// The folder.
        folder: String,
    },
}

impl Request {
    /// The request as one line (no newline inside: JSON escapes them).
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }

    /// Parses one line a client sent.
    pub fn parse(line: &str) -> Result<Request, serde_json::Error> {
        serde_json::from_str(line.trim_end_matches(['\n', '\r']))
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::string_slice)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A path with a tab in its name once got `bad request`: the socket
    /// spoke tab-separated text.
    #[test]
    fn a_path_with_a_tab_or_newline_round_trips() {
        let r = Request::Cat { folder: "docs".into(), path: "a\tb\nc\u{0}d".into(), at: None };
        let line = r.to_line();
        assert_eq!(line.matches('\n').count(), 1);
        assert_eq!(Request::parse(&line).ok(), Some(r));
    }

    proptest! {
        /// Any string is a path or a folder name that travels intact.
        #[test]
        fn any_strings_round_trip(folder in any::<String>(), path in any::<String>(), at in any::<Option<String>>()) {
            let r = Request::Cat { folder, path, at };
            prop_assert_eq!(Request::parse(&r.to_line()).ok(), Some(r));
        }

        /// Any line parses to a request or an error, never a panic.
        #[test]
        fn any_line_is_a_request_or_an_error(line in any::<String>()) {
            let _ = Request::parse(&line);
        }
    }
}
