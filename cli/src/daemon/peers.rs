//! The folders' sessions with peers: the loop owns them beside the
//! folders, takes what the node brings, and hands the node what to send.

// The loop's state and imports are this module's too.
use super::*;

impl Daemon {
    /// Takes a message the node brought for folder `i`.
    pub(super) fn take_from_peer(&mut self, i: usize, msg: FolderMsg) {
        let Some(l) = self.locals.get_mut(i) else { return };
        let (state, links) = (&l.state, &mut l.links);
        let changed = with_state(state, |s| links.handle(msg, now_ms(), &mut s.folder, &mut s.chunks)).unwrap_or(false);
        if changed {
            self.touched();
        }
    }

    /// Hands the node what folder `i`'s sessions have to send, as far as
    /// the connections have room: after any change, and when they say they
    /// have room again.
    pub(super) fn pump(&mut self, i: usize) {
        let Some(l) = self.locals.get_mut(i) else { return };
        if l.links.is_empty() {
            return;
        }
        let (state, links) = (&l.state, &mut l.links);
        with_state(state, |s| links.pump(&s.folder, &s.chunks));
    }

    /// A folder changed (from a peer, the mount or HTTP): the write-back
    /// and the HTTP subscriptions look at it.
    pub(super) fn touched(&mut self) {
        self.wake_writes = true;
        self.generation.send_modify(|g| *g += 1);
    }

    /// Folder `i` took in a change from its disk (saved): peers hear of it
    /// at once, and the HTTP subscriptions look at it.
    pub(super) fn changed_here(&mut self, i: usize) {
        self.generation.send_modify(|g| *g += 1);
        self.pump(i);
    }

    /// Runs `f` on the folder named `name`.
    pub(super) fn read<R>(&self, name: &str, f: impl FnOnce(&mut FolderState) -> R) -> Option<R> {
        let l = self.locals.iter().find(|l| l.name == name)?;
        with_state(&l.state, f)
    }

    /// Changes the folder named `name` (an edit through HTTP, a restore):
    /// peers, the write-back and the HTTP subscriptions hear of it.
    pub(super) fn edit<R>(&mut self, name: &str, f: impl FnOnce(&mut FolderState) -> R) -> Option<R> {
        let r = self.read(name, f)?;
        self.touched();
        Some(r)
    }
}
