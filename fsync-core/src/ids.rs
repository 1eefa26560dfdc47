//! Identifiers shared by every part of the model.

use std::fmt;

/// A local version: the index of one unit operation in one replica's log of
/// one document. Local versions differ between replicas; [`EventId`]s do not.
pub type Lv = usize;

/// Who made a change. A device uses one agent id per store so that its
/// sequence numbers never repeat; ties between concurrent changes are broken
/// by comparing agent ids, so the ordering must be the same everywhere.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct AgentId(pub [u8; 16]);

impl AgentId {
    /// An agent id from a small number, for tests and trace replay. The bytes
    /// are big-endian so that numeric order is byte order.
    pub fn from_index(i: u64) -> Self {
        let mut b = [0u8; 16];
        b[8..].copy_from_slice(&i.to_be_bytes());
        AgentId(b)
    }

    /// The first bytes as hex, for logs.
    pub fn short(&self) -> String {
        self.0[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "A:{}", all.trim_start_matches('0'))
    }
}

/// A change's identity everywhere: the agent that made it and that agent's
/// sequence number for it. Sequence numbers of one agent are dense and start
/// at 0, so a version vector summarises what a replica has.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct EventId {
    /// The author.
    pub agent: AgentId,
    /// The author's counter.
    pub seq: u64,
}
