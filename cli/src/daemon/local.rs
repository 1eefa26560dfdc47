//! What the daemon keeps of each folder beside the model: its problems for
//! `fsync status`, and the deletions the guard holds.

// The loop's state and imports are this module's too.
use super::*;

impl Local {
    /// Keeps `unreadable` as the scan of `scope` found it.
    pub(super) fn note_unreadable(&mut self, scope: Option<&[String]>, found: &[(String, String)]) {
        let before = self.unreadable.clone();
        match scope {
            None => self.unreadable.clear(),
            Some(sc) => self.unreadable.retain(|p, _| !sc.iter().any(|s| fsync_core::folder::within(p, s))),
        }
        self.unreadable.extend(found.iter().cloned());
        for (p, why) in &self.unreadable {
            if before.contains_key(p) {
                continue;
            }
            if why.starts_with(watcher::scan::NOT_SYNCED) {
                tracing::warn!(folder = %self.name, path = %p, "{p}: {why}");
            } else {
                tracing::warn!(folder = %self.name, path = %p, "cannot read {p} ({why}); left as it is, not synced and not deleted, until it can be read");
            }
        }
        for p in before.keys().filter(|p| !self.unreadable.contains_key(*p)) {
            tracing::info!(folder = %self.name, path = %p, "{p} can be read again");
        }
    }

    /// Keeps `held_here` as the scan of `scope` found it (`gone`: what it
    /// deleted or found moved, no longer held).
    pub(super) fn note_held_here(&mut self, scope: Option<&[String]>, found: &[String], gone: &[String]) {
        let before = self.held_here.len();
        match scope {
            None => self.held_here.clear(),
            Some(sc) => self.held_here.retain(|p| !sc.iter().any(|s| fsync_core::folder::within(p, s))),
        }
        self.held_here.extend(found.iter().cloned());
        for p in gone {
            self.held_here.remove(p);
        }
        self.log_hold(before, self.held_here.len(), self.held_here.first(), "found gone here");
    }

    /// Keeps `held_from_peers` as a write-back left it: `still` tells
    /// whether a path is still deleted in the folder (a peer may have put
    /// it back meanwhile).
    pub(super) fn note_held_from_peers(&mut self, found: &[String], removed: &[String], still: impl Fn(&str) -> bool) {
        let before = self.held_from_peers.len();
        self.held_from_peers.extend(found.iter().cloned());
        for p in removed {
            self.held_from_peers.remove(p);
        }
        self.held_from_peers.retain(|p| still(p));
        self.log_hold(before, self.held_from_peers.len(), self.held_from_peers.first(), "deleted by a peer");
    }

    /// A hold is logged once, when it begins (a `rm -r` is found in several
    /// scans, each holding more); `fsync status` has the count as it grows.
    fn log_hold(&self, before: usize, now: usize, first: Option<&String>, what: &str) {
        if before == 0 && now > 0 {
            tracing::warn!(folder = %self.name, held = now, first = ?first, "{}", self.held_message(now, what));
        } else if now > before {
            tracing::debug!(folder = %self.name, held = now, "{}", self.held_message(now, what));
        }
    }

    pub(super) fn held_message(&self, n: usize, what: &str) -> String {
        format!(
            "holding the deletion of {n} path(s) {what}: too many of the folder's files at once \
             (the mass-deletion guard); `fsync resume {name}` lets them through, `fsync restore` puts them back",
            name = self.name
        )
    }

    /// What keeps the folder and the disk apart, for `fsync status`.
    pub(super) fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self.stopped.iter().map(|e| format!("stopped: {e}")).collect();
        for (set, what) in [(&self.held_here, "found gone here"), (&self.held_from_peers, "deleted by a peer")] {
            if !set.is_empty() {
                let first: Vec<&str> = set.iter().take(3).map(String::as_str).collect();
                out.push(format!("held: {} (for example {})", self.held_message(set.len(), what), first.join(", ")));
            }
        }
        out.extend(self.write_error.iter().map(|e| format!("not writing: {e}")));
        out.extend(self.unreadable.iter().map(|(p, why)| {
            if why.starts_with(watcher::scan::NOT_SYNCED) {
                format!("{p}: {why}")
            } else {
                format!("cannot read {p}: {why}")
            }
        }));
        out
    }
}
