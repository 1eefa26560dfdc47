//! Benchmarks of fsync-core against diamond-types and yrs on real traces.
