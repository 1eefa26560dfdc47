//! Rename detection by similarity, as git does it: a text file gone from one
//! path and a new one elsewhere that shares most of its lines is the same
//! file, moved and edited.
//!
//! Why: an editor that saves through a temp file gives the file a new
//! inode; if it is then renamed before the next scan, neither the inode
//! nor the exact content links the two paths. Taken as a deletion plus a
//! new file, a peer's concurrent edit of the old file keeps it alive, and
//! the folder ends up with the file twice.

use std::collections::HashMap;

/// Share of distinct non-blank lines two texts must have in common (of the
/// larger one's) to count as one file: git's default rename threshold.
const THRESHOLD: f64 = 0.5;

/// Share of the old file's lines kept, and of the new file's lines that are
/// the old one's, for a file that grew to count as the same.
const GROWN_KEPT: f64 = 0.8;
const GROWN_SHARE: f64 = 0.25;

/// Bound on the pair counting work (postings visited) per call, so a huge
/// batch of deletions and creations stays linear.
const WORK_MAX: usize = 4_000_000;

fn line_hashes(text: &str) -> Vec<u64> {
    use std::hash::{Hash, Hasher};
    let mut v: Vec<u64> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            l.hash(&mut h);
            h.finish()
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Pairs each text of `gone` with at most one text of `fresh` (and the other
/// way round), best matches first; returns (gone index, fresh index).
/// Deterministic: ties go to the earlier indexes.
pub(crate) fn pair(gone: &[&str], fresh: &[&str]) -> Vec<(usize, usize)> {
    if gone.is_empty() || fresh.is_empty() {
        return Vec::new();
    }
    let fresh_lines: Vec<Vec<u64>> = fresh.iter().map(|t| line_hashes(t)).collect();
    let mut postings: HashMap<u64, Vec<usize>> = HashMap::new();
    for (j, lines) in fresh_lines.iter().enumerate() {
        for &h in lines {
            postings.entry(h).or_default().push(j);
        }
    }
    let mut work = 0usize;
    let mut candidates: Vec<(f64, usize, usize)> = Vec::new();
    for (i, text) in gone.iter().enumerate() {
        let lines = line_hashes(text);
        if lines.is_empty() {
            continue;
        }
        let mut shared: HashMap<usize, usize> = HashMap::new();
        for h in &lines {
            if let Some(js) = postings.get(h) {
                work += js.len();
                for &j in js {
                    *shared.entry(j).or_default() += 1;
                }
            }
        }
        for (j, n) in shared {
            let score = n as f64 / lines.len().max(fresh_lines[j].len()) as f64;
            // Or the old file grown: nearly all of it kept, and a fair part
            // of the new one (a file edited a lot while the daemon was
            // stopped, then renamed).
            let grown = n as f64 >= GROWN_KEPT * lines.len() as f64 && n as f64 >= GROWN_SHARE * fresh_lines[j].len() as f64;
            if score >= THRESHOLD || grown {
                candidates.push((score, i, j));
            }
        }
        if work > WORK_MAX {
            break;
        }
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let (mut used_gone, mut used_fresh) = (vec![false; gone.len()], vec![false; fresh.len()]);
    let mut out = Vec::new();
    for (_, i, j) in candidates {
        if !used_gone[i] && !used_fresh[j] {
            used_gone[i] = true;
            used_fresh[j] = true;
            out.push((i, j));
        }
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::pair;

    #[test]
    fn an_edited_file_pairs_with_its_old_self() {
        let old = "alpha\nbeta\ngamma\ndelta\n";
        let new = "alpha\nbeta\nNEW\ngamma\ndelta\n";
        assert_eq!(pair(&[old], &[new]), vec![(0, 0)]);
        // One line of one, with a line added: half shared, still the same.
        assert_eq!(pair(&["tok-1\n"], &["tok-1\ntok-2\n"]), vec![(0, 0)]);
    }

    #[test]
    fn a_file_that_grew_a_lot_pairs_with_its_old_self() {
        // Edited while the daemon was stopped (lines added), then renamed.
        let old = "tok-9\ntok-4\n";
        let new = "tok-9\ntok-4\ntok-18\ntok-21\ntok-34\ntok-41\n";
        assert_eq!(pair(&[old], &[new]), vec![(0, 0)]);
        // One common line in a long new file is no evidence.
        let long: String = (0..20).map(|i| format!("line {i}\n")).collect();
        assert!(pair(&["}\n"], &[&format!("{long}}}\n")]).is_empty());
        assert!(pair(&["}\nend\n"], &[&format!("{long}}}\n")]).is_empty());
    }

    #[test]
    fn unrelated_and_mostly_rewritten_texts_do_not_pair() {
        assert!(pair(&["alpha\nbeta\n"], &["gamma\ndelta\n"]).is_empty());
        assert!(pair(&["a\nb\nc\n"], &["a\nx\ny\nz\n"]).is_empty());
        // Blank lines are not evidence.
        assert!(pair(&["\n\n  \n"], &["\n\n  \n"]).is_empty());
        assert!(pair(&[], &["a\n"]).is_empty());
    }

    #[test]
    fn each_side_is_used_once_and_the_best_match_wins() {
        let a = "one\ntwo\nthree\nfour\n";
        let b = "five\nsix\nseven\neight\n";
        let a2 = "one\ntwo\nthree\nfour\nplus\n";
        let b2 = "five\nsix\nseven\n";
        // Fresh order reversed: pairs follow content, not position.
        assert_eq!(pair(&[a, b], &[b2, a2]), vec![(0, 1), (1, 0)]);
        // Two fresh copies of one gone file: only the closer one pairs.
        let near = "one\ntwo\nthree\nfour\n!\n";
        let far = "one\ntwo\nthree\nx\ny\n";
        assert_eq!(pair(&[a], &[far, near]), vec![(0, 1)]);
    }
}
