//! Turns changes on disk into fsync-core edits and writes merged state back.
//!
//! Not built yet (issue 4): scan (walkdir) plus notify events, editor save
//! patterns, and safe write-back that never clobbers a local edit.
