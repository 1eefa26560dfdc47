//! fsync's model of a shared folder, with no I/O of its own.
//!
//! Everything here is a deterministic function of its inputs: bytes and time
//! come in as arguments and messages come out, like `quinn-proto`. The daemon
//! wraps it with disk, network and clock; tests drive it directly, many
//! replicas in one process, with seeded randomness.
//!
//! - [`graph`]: the causal graph of one document in local versions.
//! - [`text`]: text files that merge character by character (Eg-walker).
//! - [`diff`]: from two versions of a text to the edits between them.
//! - [`encoding`]: the byte format of wire and disk; safe on untrusted input.
//! - [`folder`]: a shared folder: entries, registers, the resolved tree.
//! - [`ingest`]: new content from a writer (disk, mount, HTTP) taken in.
//! - [`chunks`]: content-defined chunks of binary files.
//! - [`session`]: the sync state machine for one peer and one folder;
//!   [`wire`] its messages.
//! - [`store`]: persistence behind a narrow trait, and an in-memory store.

pub mod chunks;
pub mod diff;
pub mod encoding;
pub mod folder;
pub mod graph;
pub mod ids;
pub mod ingest;
pub mod session;
pub mod store;
pub mod text;
pub mod wire;

pub use ids::{AgentId, EventId, Lv};
