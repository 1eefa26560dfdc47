//! End-to-end tests that drive the real `fsync` binary with several peers.
//!
//! Not built yet: they arrive with the binary (issue 6).
