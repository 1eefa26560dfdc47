//! The mass-deletion guard: a scan or write-back that would delete more
//! than a share of the folder's files at once holds those deletions until
//! the user lets them through. A script emptying the folder, a mistaken
//! `rm -rf`, or a peer doing either, is then one `fsync restore` or `fsync
//! resume` away, not a deletion on every node.

/// When deletions are held. [`Guard::default`] never holds: the policy is
/// the caller's (the daemon sets it from the folder's config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Guard {
    /// Hold when more than this share (percent) of the tracked files would
    /// go at once; 0 turns the guard off.
    pub percent: u8,
    /// ...and at least this many files: deleting 3 of 4 files is no mass
    /// deletion.
    pub min: usize,
    /// Let everything through (while the user resumes a held folder).
    pub open: bool,
}

impl Guard {
    /// The daemon's defaults: more than half of the files, and at least 10.
    pub const DEFAULT: Guard = Guard { percent: 50, min: 10, open: false };

    /// True when deleting `deleting` files may be held: the share is
    /// looked at only then (counting what is tracked costs a walk).
    pub fn weighs(&self, deleting: usize) -> bool {
        !self.open && self.percent > 0 && deleting >= self.min.max(1)
    }

    /// True when deleting `deleting` of `tracked` files at once is held.
    pub fn holds(&self, deleting: usize, tracked: usize) -> bool {
        self.weighs(deleting) && deleting.saturating_mul(100) > tracked.saturating_mul(usize::from(self.percent.min(100)))
    }
}

#[cfg(test)]
mod tests {
    use super::Guard;

    #[test]
    fn more_than_the_share_and_at_least_the_minimum_is_held() {
        let g = Guard::DEFAULT;
        assert!(g.holds(51, 100));
        assert!(!g.holds(50, 100), "exactly half is not more than half");
        assert!(!g.holds(9, 10), "below the minimum");
        assert!(g.holds(10, 10));
        assert!(g.holds(10, 0), "tracked miscounted low still holds");
    }

    #[test]
    fn off_open_or_default_never_holds() {
        assert!(!Guard::default().holds(1000, 1000));
        assert!(!Guard { percent: 0, ..Guard::DEFAULT }.holds(1000, 1000));
        assert!(!Guard { open: true, ..Guard::DEFAULT }.holds(1000, 1000));
        assert!(!Guard { percent: 100, ..Guard::DEFAULT }.holds(100, 100), "100: only more than every file");
    }
}
