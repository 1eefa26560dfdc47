//! Benchmarks of fsync-core against other text CRDTs on the real traces of
//! `traces/`, in the same process run so ratios hold on a noisy
//! machine: `cargo bench -p fsync-bench`.
//!
//! The baselines live here, outside the workspace's default members, so
//! that `cargo test` never builds them.

#![allow(missing_docs)]

#[path = "../../fsync-core/examples/support/trace.rs"]
pub mod trace;

pub mod baselines;
