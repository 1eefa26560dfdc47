//! Length-prefixed frames on a QUIC stream: a 4-byte big-endian length, then
//! the payload. Frames over [`MAX_FRAME`] are refused before any allocation.

// Parses what peers, users and the disk send: no slicing or indexing that
// can panic on it.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

/// Largest frame accepted (the largest core message is a 256 KiB chunk or a
/// batch of changes; text files over the text size limit are binary).
pub const MAX_FRAME: usize = 16 << 20;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer announced a frame over the limit.
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The stream failed.
    #[error("stream: {0}")]
    Stream(String),
}

/// Writes one frame.
pub async fn write_frame(s: &mut quinn::SendStream, payload: &[u8]) -> Result<(), FrameError> {
    if payload.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(payload.len()));
    }
    s.write_all(&(payload.len() as u32).to_be_bytes()).await.map_err(|e| FrameError::Stream(e.to_string()))?;
    s.write_all(payload).await.map_err(|e| FrameError::Stream(e.to_string()))
}

/// Largest frame on a chunk stream: one chunk (at most 256 KiB) and its
/// name, with room to spare.
pub const MAX_CHUNK_FRAME: usize = 1 << 20;

/// Reads one frame; `None` when the peer finished the stream cleanly.
pub async fn read_frame(s: &mut quinn::RecvStream) -> Result<Option<Vec<u8>>, FrameError> {
    read_frame_at_most(s, MAX_FRAME).await
}

/// [`read_frame`], refusing frames over `max` bytes (at most [`MAX_FRAME`]).
pub async fn read_frame_at_most(s: &mut quinn::RecvStream, max: usize) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(FrameError::Stream(e.to_string())),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > max.min(MAX_FRAME) {
        return Err(FrameError::TooLarge(n));
    }
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).await.map_err(|e| FrameError::Stream(e.to_string()))?;
    Ok(Some(buf))
}
