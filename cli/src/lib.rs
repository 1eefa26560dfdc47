//! The `fsync` binary's library side: the node's durable store now; config,
//! daemon, control socket and commands follow (issue 6).

pub mod store;
