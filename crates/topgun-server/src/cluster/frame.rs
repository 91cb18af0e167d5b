//! Frames between members (CLUSTER.md §13): `u32` big-endian length of what follows, one type
//! byte, the body. The length covers the type byte, so an empty body is length 1.
//!
//! Invariants:
//! * a reader never allocates more than [`FRAME_BYTES_MAX`] for one frame, whatever a peer
//!   claims: a larger length is an error before anything is read past the header;
//! * a frame is read whole or not at all (a peer closing mid-frame is an error, not a short
//!   frame).

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest frame a member sends or accepts (type byte and body): Raft snapshots of the
/// control state and forwarded batches stay far below it.
pub const FRAME_BYTES_MAX: usize = 32 * 1024 * 1024;

/// One frame: its type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub body: Bytes,
}

/// Why a frame could not be read or written.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("a frame of {0} bytes is over its bound")]
    TooLarge(usize),
    #[error("a frame without its type byte")]
    Empty,
    #[error("the connection closed")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Frame {
    pub fn new(kind: u8, body: impl Into<Bytes>) -> Self {
        Self {
            kind,
            body: body.into(),
        }
    }

    /// The frame as it goes on the wire.
    pub fn encode(&self) -> Result<Bytes, FrameError> {
        let len = self.body.len() + 1;
        if len > FRAME_BYTES_MAX {
            return Err(FrameError::TooLarge(len));
        }
        let mut out = BytesMut::with_capacity(4 + len);
        // Within u32: FRAME_BYTES_MAX is.
        out.put_u32(u32::try_from(len).map_err(|_| FrameError::TooLarge(len))?);
        out.put_u8(self.kind);
        out.put_slice(&self.body);
        Ok(out.freeze())
    }
}

/// Reads one frame; [`FrameError::Closed`] when the peer closed between frames.
pub async fn read_frame(reader: &mut (impl AsyncRead + Unpin)) -> Result<Frame, FrameError> {
    read_frame_within(reader, FRAME_BYTES_MAX).await
}

/// Reads one frame of at most `max` bytes (type byte and body).
pub async fn read_frame_within(
    reader: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> Result<Frame, FrameError> {
    let mut header = [0u8; 4];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge(len));
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let mut rest = vec![0u8; len];
    reader.read_exact(&mut rest).await?;
    let kind = rest[0];
    let body = Bytes::from(rest).slice(1..);
    Ok(Frame { kind, body })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_lengths_are_checked_before_reading() {
        let frames = [Frame::new(1, &b"hello"[..]), Frame::new(7, Bytes::new())];
        let mut wire = Vec::new();
        for frame in &frames {
            wire.extend_from_slice(&frame.encode().unwrap());
        }
        let mut reader = &wire[..];
        for frame in &frames {
            assert_eq!(&read_frame(&mut reader).await.unwrap(), frame);
        }
        assert!(matches!(
            read_frame(&mut reader).await,
            Err(FrameError::Closed)
        ));

        let claims_too_much = u32::try_from(FRAME_BYTES_MAX + 1).unwrap().to_be_bytes();
        let mut reader = &claims_too_much[..];
        assert!(matches!(
            read_frame(&mut reader).await,
            Err(FrameError::TooLarge(_))
        ));
        let mut reader = &[0u8, 0, 0, 0][..];
        assert!(matches!(
            read_frame(&mut reader).await,
            Err(FrameError::Empty)
        ));
        // Cut mid-frame: an error, not a short frame.
        let cut = &frames[0].encode().unwrap()[..6];
        let mut reader = cut;
        assert!(matches!(
            read_frame(&mut reader).await,
            Err(FrameError::Io(_))
        ));
    }
}
