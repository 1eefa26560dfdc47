//! The `fsync` binary: config, daemon, control socket, commands.
//!
//! Not built yet (issue 6); the binary target lands with the daemon.
