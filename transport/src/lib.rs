//! QUIC between pinned peers, driving fsync-core's sync session.
//!
//! Not built yet (issue 5): identities, pinned mutual TLS, framing, dialling.
