//! End-to-end tests that drive the real `fsync` binary (in `tests/`).
//!
//! The helpers live in `tests/util.rs`; each test reads as a scenario.
