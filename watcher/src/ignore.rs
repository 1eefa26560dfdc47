//! Which paths are not synced: editor and system temp files by default,
//! fsync's own temp files and the folder marker always, plus `.fsyncignore` (gitignore syntax) at
//! the folder root.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// Prefix of the temp files fsync writes before renaming them into place.
pub const TEMP_PREFIX: &str = ".fsync-tmp-";

/// Ignored unless `.fsyncignore` re-includes them with `!`.
pub const DEFAULT_IGNORES: &[&str] = &[
    "*.swp",
    "*.swo",
    "*.swx",
    "*~",
    ".#*",
    "4913",
    ".DS_Store",
    "Thumbs.db",
    "*.part",
    "*.crdownload",
    "*.tmp",
    ".*.kate-swp",
    ".~lock.*#",
];

/// The ignore rules of one folder.
pub struct Ignore {
    rules: Arc<Gitignore>,
    /// Digest of `.fsyncignore` as loaded (none: no such file).
    digest: Option<[u8; 32]>,
}

/// Rules built, by folder root and digest: loading reads `.fsyncignore`
/// (small) on every scan and write-back, and builds the matcher again only
/// when its content changed (building it cost more than the rest of a
/// save's work in a large folder).
static BUILT: Mutex<Vec<Built>> = Mutex::new(Vec::new());

/// A folder's root, the digest of its `.fsyncignore`, and the rules.
type Built = (PathBuf, Option<[u8; 32]>, Arc<Gitignore>);

/// Folders whose rules are kept built, at most.
const BUILT_KEPT: usize = 64;

impl Ignore {
    /// Default rules plus the folder's `.fsyncignore`, if any. Bad lines in
    /// the file are skipped (and reported by the caller's status).
    pub fn load(root: &Path) -> Ignore {
        let file = root.join(".fsyncignore");
        let bytes = std::fs::read(&file).ok();
        let digest = bytes.as_ref().map(|b| *blake3::hash(b).as_bytes());
        let mut built = BUILT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, _, rules)) = built.iter().find(|(r, d, _)| r == root && *d == digest) {
            return Ignore { rules: rules.clone(), digest };
        }
        let mut b = GitignoreBuilder::new(root);
        for p in DEFAULT_IGNORES {
            let _ = b.add_line(None, p);
        }
        for line in bytes.as_deref().map(String::from_utf8_lossy).unwrap_or_default().lines() {
            let _ = b.add_line(Some(file.clone()), line);
        }
        let rules = Arc::new(b.build().unwrap_or_else(|_| Gitignore::empty()));
        built.retain(|(r, _, _)| r != root);
        if built.len() >= BUILT_KEPT {
            built.remove(0);
        }
        built.push((root.to_owned(), digest, rules.clone()));
        Ignore { rules, digest }
    }

    /// Tells rule sets apart: equal for the same `.fsyncignore` content.
    pub fn digest(&self) -> Option<[u8; 32]> {
        self.digest
    }

    /// True when `rel` (a path relative to the root) is not synced.
    pub fn ignored(&self, rel: &str, is_dir: bool) -> bool {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        if name.starts_with(TEMP_PREFIX) || rel == crate::root::MARKER {
            return true;
        }
        self.rules.matched_path_or_any_parents(rel, is_dir).is_ignore()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_fsyncignore() {
        let dir = std::env::temp_dir().join(format!("fsync-ignore-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(".fsyncignore"), "build/\n*.log\n!keep.log\n").expect("write");
        let ig = Ignore::load(&dir);
        for p in
            [".notes.txt.swp", "notes.txt~", ".#notes.txt", "4913", "build/out.o", "x.log", ".fsync-tmp-123", ".fsync-folder"]
        {
            assert!(ig.ignored(p, false), "{p} should be ignored");
        }
        for p in ["notes.txt", "keep.log", "src/build.rs"] {
            assert!(!ig.ignored(p, false), "{p} should be synced");
        }
        // A changed file is read again (the built rules are kept by
        // content, not by time).
        std::fs::write(dir.join(".fsyncignore"), "*.txt\n").expect("write");
        let ig = Ignore::load(&dir);
        assert!(ig.ignored("notes.txt", false) && !ig.ignored("x.log", false));
        std::fs::remove_file(dir.join(".fsyncignore")).expect("rm");
        let ig = Ignore::load(&dir);
        assert!(!ig.ignored("notes.txt", false) && ig.ignored("x.swp", false));
        assert_eq!(ig.digest(), None);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
