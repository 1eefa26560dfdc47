//! The binary itself: help, version, usage errors. (Having an integration
//! test here also makes `cargo test` build `fsync` before any test runs, so
//! the end-to-end tests in `tests/` find it.)

use std::process::Command;

fn fsync(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fsync")).args(args).output().expect("fsync runs")
}

#[test]
fn help_version_and_usage_errors() {
    let v = fsync(&["--version"]);
    assert!(v.status.success());
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("fsync "));
    let h = fsync(&["--help"]);
    let help = String::from_utf8_lossy(&h.stdout);
    for cmd in ["init", "id", "folder", "peer", "--home"] {
        assert!(help.contains(cmd), "help lacks {cmd}: {help}");
    }
    let bad = fsync(&["frobnicate"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("frobnicate"));
}
