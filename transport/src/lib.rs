//! QUIC between pinned peers, driving fsync-core's sync sessions.
//!
//! - [`id`]: device identities and IDs.
//! - [`tls`]: TLS 1.3 with mutual authentication by pinned device IDs.
//! - [`frame`]: length-prefixed frames with a size limit.
//! - [`node`]: a node that serves and dials peers and keeps folders in sync.
//! - [`link`]: between the node and each folder's owner.

pub mod frame;
pub mod id;
pub mod link;
pub mod node;
pub mod tls;

pub use id::{DeviceId, Identity};
pub use node::{Node, NodeError};
pub use tls::Trust;
