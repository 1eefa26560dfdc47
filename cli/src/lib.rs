//! The `fsync` binary's library side: the node's home, config, durable
//! store and the daemon. The control socket and the remaining commands
//! follow (issue 6).

pub mod config;
pub mod daemon;
pub mod home;
pub mod store;
