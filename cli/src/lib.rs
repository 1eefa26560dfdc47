//! The `fsync` binary's library side: the node's home, config and durable
//! store. The daemon, control socket and the remaining commands follow
//! (issue 6).

pub mod config;
pub mod home;
pub mod store;
