//! A folder's merged live state as a FUSE filesystem.
//!
//! Not built yet (issue 7).
