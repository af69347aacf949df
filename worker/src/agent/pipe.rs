//! The protocol between the agent and its child process, in one place: the [`Order`] bytes and
//! the framing of messages.
//!
//! A message goes as a protobuf varint of its length followed by its bytes (prost's
//! length-delimited form). A [`Reader`] takes frames and order bytes from one buffered stream
//! and a [`Writer`] puts them on one; each has an async face for the agent's side (tokio's
//! `AsyncRead`/`AsyncWrite`) and a blocking face for the child's (std's `Read`/`Write`), both
//! over the same framing code: [`frame_end`] finds a frame in the bytes read so far and
//! [`encode`] makes one. A length over [`MAX_FRAME`] is an error on both sides, so a corrupt
//! prefix cannot make the reader allocate without bound.

use std::io::{Read, Write};

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest message either side sends or accepts, bytes: gRPC's default message limit, which
/// the events meet again on their way to the coordinator.
pub(crate) const MAX_FRAME: usize = 4 << 20;

/// What the agent tells a run's child process, one byte each on the child's stdin after the
/// assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// Stop at once (cancelled, or its gang failed): no checkpoint.
    Stop,
    /// The agent is shutting down: stop at the next step boundary after a checkpoint.
    Preempt,
}

impl Order {
    /// Its byte on the child's stdin.
    pub(crate) fn byte(self) -> u8 {
        match self {
            Order::Stop => b's',
            Order::Preempt => b'p',
        }
    }

    /// The order a byte carries. Any byte but a preemption's stops the run: a child that cannot
    /// understand its agent must not go on training.
    pub(crate) fn from_byte(byte: u8) -> Order {
        if byte == Order::Preempt.byte() {
            Order::Preempt
        } else {
            Order::Stop
        }
    }
}

/// Why a pipe could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PipeError {
    /// A length prefix over the limit: the stream is corrupt (or the message absurd), and it is
    /// not read further.
    #[error("a frame of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The length announced (or of the message to send).
        size: u64,
        /// [`MAX_FRAME`].
        limit: usize,
    },
    /// Ten bytes that do not end a varint: the stream is corrupt.
    #[error("a frame's length prefix is not a varint")]
    BadLength,
    /// The stream ended inside a frame.
    #[error("the pipe ended inside a frame ({have} byte(s) of it read)")]
    Truncated {
        /// Bytes of the frame, its prefix included, that arrived.
        have: usize,
    },
    /// A whole frame whose bytes are not the expected message; the frames after it can still
    /// be read.
    #[error("a frame does not decode: {0}")]
    Malformed(#[source] prost::DecodeError),
    /// The pipe itself.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl PipeError {
    /// Whether the frames after this error can still be read (the stream is in step).
    pub(crate) fn recoverable(&self) -> bool {
        matches!(self, PipeError::Malformed(_))
    }
}

/// Where the first frame of `buffer` ends (its length prefix included); None while more bytes
/// are needed.
pub(crate) fn frame_end(buffer: &[u8]) -> Result<Option<usize>, PipeError> {
    let mut rest = buffer;
    let size = match prost::decode_length_delimiter(&mut rest) {
        Ok(size) => size,
        // Fewer than ten bytes: the prefix is not complete yet (prost's rule for delimiters).
        Err(_) if buffer.len() < 10 => return Ok(None),
        Err(_) => return Err(PipeError::BadLength),
    };
    if size > MAX_FRAME {
        return Err(PipeError::TooLarge {
            size: size as u64,
            limit: MAX_FRAME,
        });
    }
    let end = buffer.len() - rest.len() + size;
    Ok((buffer.len() >= end).then_some(end))
}

/// A message as one frame.
pub(crate) fn encode(message: &impl Message) -> Result<Vec<u8>, PipeError> {
    let size = message.encoded_len();
    if size > MAX_FRAME {
        return Err(PipeError::TooLarge {
            size: size as u64,
            limit: MAX_FRAME,
        });
    }
    Ok(message.encode_length_delimited_to_vec())
}

/// Bytes asked of the stream at a time.
const CHUNK: usize = 8 << 10;

/// Frames and order bytes from a stream, buffered.
#[derive(Debug)]
pub(crate) struct Reader<R> {
    inner: R,
    /// Bytes read and not yet taken.
    buffer: Vec<u8>,
    /// The stream has ended.
    ended: bool,
}

impl<R> Reader<R> {
    /// A reader of `inner`.
    pub(crate) fn new(inner: R) -> Reader<R> {
        Reader {
            inner,
            buffer: Vec::new(),
            ended: false,
        }
    }

    /// The next message if the buffer holds all of it. Ok(None): more bytes are needed, or the
    /// stream ended between frames.
    fn take_frame<M: Message + Default>(&mut self) -> Result<Option<M>, PipeError> {
        match frame_end(&self.buffer)? {
            Some(end) => {
                let message = M::decode_length_delimited(&self.buffer[..end]);
                self.buffer.drain(..end);
                message.map(Some).map_err(PipeError::Malformed)
            }
            None if self.ended && !self.buffer.is_empty() => Err(PipeError::Truncated {
                have: self.buffer.len(),
            }),
            None => Ok(None),
        }
    }

    /// The next byte if one is buffered.
    fn take_byte(&mut self) -> Option<u8> {
        (!self.buffer.is_empty()).then(|| self.buffer.remove(0))
    }

    fn append(&mut self, chunk: &[u8]) {
        self.ended |= chunk.is_empty();
        self.buffer.extend_from_slice(chunk);
    }
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// The next message; None when the stream ends between frames. Cancel-safe: the bytes of a
    /// frame read so far stay in the reader.
    pub(crate) async fn frame<M: Message + Default>(&mut self) -> Result<Option<M>, PipeError> {
        loop {
            if let Some(message) = self.take_frame()? {
                return Ok(Some(message));
            }
            if self.ended {
                return Ok(None);
            }
            self.fill().await?;
        }
    }

    /// The next order; None when the stream ends. (The child reads its orders blocking; the
    /// tests play it asynchronously.)
    #[cfg(test)]
    pub(crate) async fn order(&mut self) -> Result<Option<Order>, PipeError> {
        loop {
            if let Some(byte) = self.take_byte() {
                return Ok(Some(Order::from_byte(byte)));
            }
            if self.ended {
                return Ok(None);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; CHUNK];
        let read = self.inner.read(&mut chunk).await?;
        self.append(&chunk[..read]);
        Ok(())
    }
}

impl<R: Read> Reader<R> {
    /// The next message, blocking; None when the stream ends between frames.
    pub(crate) fn frame_blocking<M: Message + Default>(&mut self) -> Result<Option<M>, PipeError> {
        loop {
            if let Some(message) = self.take_frame()? {
                return Ok(Some(message));
            }
            if self.ended {
                return Ok(None);
            }
            self.fill_blocking()?;
        }
    }

    /// The next order, blocking; None when the stream ends.
    pub(crate) fn order_blocking(&mut self) -> Result<Option<Order>, PipeError> {
        loop {
            if let Some(byte) = self.take_byte() {
                return Ok(Some(Order::from_byte(byte)));
            }
            if self.ended {
                return Ok(None);
            }
            self.fill_blocking()?;
        }
    }

    fn fill_blocking(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; CHUNK];
        let read = loop {
            match self.inner.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                result => break result?,
            }
        };
        self.append(&chunk[..read]);
        Ok(())
    }
}

/// Frames and order bytes onto a stream, each flushed at once.
#[derive(Debug)]
pub(crate) struct Writer<W> {
    inner: W,
}

impl<W> Writer<W> {
    /// A writer onto `inner`.
    pub(crate) fn new(inner: W) -> Writer<W> {
        Writer { inner }
    }
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// Sends a message.
    pub(crate) async fn frame(&mut self, message: &impl Message) -> Result<(), PipeError> {
        let frame = encode(message)?;
        self.inner.write_all(&frame).await?;
        Ok(self.inner.flush().await?)
    }

    /// Sends an order.
    pub(crate) async fn order(&mut self, order: Order) -> Result<(), PipeError> {
        self.inner.write_all(&[order.byte()]).await?;
        Ok(self.inner.flush().await?)
    }
}

impl<W: Write> Writer<W> {
    /// Sends a message, blocking.
    pub(crate) fn frame_blocking(&mut self, message: &impl Message) -> Result<(), PipeError> {
        let frame = encode(message)?;
        self.inner.write_all(&frame)?;
        Ok(self.inner.flush()?)
    }

    /// Sends an order, blocking. (The agent sends its orders asynchronously; the tests write
    /// them into a buffer.)
    #[cfg(test)]
    pub(crate) fn order_blocking(&mut self, order: Order) -> Result<(), PipeError> {
        self.inner.write_all(&[order.byte()])?;
        Ok(self.inner.flush()?)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use gantry_proto::pb;

    use super::*;

    fn assignment() -> pb::Assignment {
        pb::Assignment {
            job_id: "job-000003".into(),
            attempt: 1,
            rank: 1,
            world_size: 2,
            peers: vec!["a:1".into(), "b:2".into()],
            secret: "secret".into(),
            spec: None,
        }
    }

    #[test]
    fn a_frame_then_orders_read_back_from_one_buffered_stream() {
        let mut writer = Writer::new(Vec::new());
        writer.frame_blocking(&assignment()).unwrap();
        writer.order_blocking(Order::Preempt).unwrap();
        writer.order_blocking(Order::Stop).unwrap();
        let bytes = writer.inner;
        // The frame is prost's length-delimited form, nothing more.
        assert_eq!(bytes[..bytes.len() - 2], assignment().encode_length_delimited_to_vec());

        let mut reader = Reader::new(Cursor::new(bytes));
        assert_eq!(reader.frame_blocking::<pb::Assignment>().unwrap(), Some(assignment()));
        assert_eq!(reader.order_blocking().unwrap(), Some(Order::Preempt));
        assert_eq!(reader.order_blocking().unwrap(), Some(Order::Stop));
        assert_eq!(reader.order_blocking().unwrap(), None);
        assert_eq!(reader.frame_blocking::<pb::Assignment>().unwrap(), None);
    }

    #[test]
    fn any_byte_but_a_preemption_s_is_a_stop_order() {
        for byte in 0..=u8::MAX {
            let expected = if byte == b'p' { Order::Preempt } else { Order::Stop };
            assert_eq!(Order::from_byte(byte), expected, "{byte}");
        }
        assert_eq!(Order::from_byte(Order::Stop.byte()), Order::Stop);
    }

    #[test]
    fn a_length_over_the_limit_is_refused_naming_the_size_and_the_limit_before_its_bytes_arrive() {
        let mut prefix = Vec::new();
        prost::encode_length_delimiter(MAX_FRAME + 1, &mut prefix).unwrap();
        let mut reader = Reader::new(Cursor::new(prefix));
        let err = reader.frame_blocking::<pb::Assignment>().unwrap_err();
        assert!(matches!(err, PipeError::TooLarge { .. }), "{err:?}");
        assert!(!err.recoverable());
        assert_eq!(
            err.to_string(),
            format!(
                "a frame of {} bytes is over the limit of {MAX_FRAME} bytes",
                MAX_FRAME + 1
            )
        );
        // A length of exactly the limit is waited for.
        let mut prefix = Vec::new();
        prost::encode_length_delimiter(MAX_FRAME, &mut prefix).unwrap();
        assert_eq!(frame_end(&prefix).unwrap(), None);
    }

    #[test]
    fn a_message_over_the_limit_is_not_sent() {
        let big = pb::Assignment {
            secret: "x".repeat(MAX_FRAME),
            ..assignment()
        };
        let mut writer = Writer::new(Vec::new());
        let err = writer.frame_blocking(&big).unwrap_err();
        assert!(
            matches!(err, PipeError::TooLarge { size, limit: MAX_FRAME } if size > MAX_FRAME as u64),
            "{err:?}"
        );
        assert!(writer.inner.is_empty());
    }

    #[test]
    fn ten_bytes_that_do_not_end_a_varint_are_a_corrupt_prefix_and_fewer_are_awaited() {
        for have in 0..10 {
            assert_eq!(frame_end(&[0x80; 10][..have]).unwrap(), None, "{have}");
        }
        let err = frame_end(&[0x80; 10]).unwrap_err();
        assert!(matches!(err, PipeError::BadLength), "{err:?}");
        assert_eq!(err.to_string(), "a frame's length prefix is not a varint");
    }

    #[test]
    fn a_malformed_frame_is_skipped_and_the_stream_stays_in_step() {
        let mut bytes = Vec::new();
        prost::encode_length_delimiter(2, &mut bytes).unwrap();
        bytes.extend_from_slice(&[0xff, 0xff]);
        bytes.extend(assignment().encode_length_delimited_to_vec());
        let mut reader = Reader::new(Cursor::new(bytes));
        let err = reader.frame_blocking::<pb::Assignment>().unwrap_err();
        assert!(err.recoverable(), "{err:?}");
        assert!(err.to_string().starts_with("a frame does not decode: "), "{err}");
        assert_eq!(reader.frame_blocking::<pb::Assignment>().unwrap(), Some(assignment()));
    }

    #[test]
    fn a_stream_that_ends_inside_a_frame_is_truncated() {
        let frame = encode(&assignment()).unwrap();
        let mut reader = Reader::new(Cursor::new(frame[..frame.len() - 3].to_vec()));
        let err = reader.frame_blocking::<pb::Assignment>().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("the pipe ended inside a frame ({} byte(s) of it read)", frame.len() - 3)
        );
    }

    #[tokio::test]
    async fn a_read_given_up_halfway_through_a_frame_loses_none_of_its_bytes() {
        let (mut agent_end, child_end) = tokio::io::duplex(1 << 10);
        let mut reader = Reader::new(child_end);
        let frame = encode(&assignment()).unwrap();
        let (first, rest) = frame.split_at(frame.len() / 2);
        agent_end.write_all(first).await.unwrap();
        // As in the supervisor's select: another branch wins while the frame is half read.
        tokio::select! {
            biased;
            read = reader.frame::<pb::Assignment>() => panic!("half a frame read as {read:?}"),
            () = std::future::ready(()) => {}
        }
        assert!(!reader.buffer.is_empty(), "the first half was read");
        let mut writer = Writer::new(agent_end);
        writer.inner.write_all(rest).await.unwrap();
        writer.order(Order::Stop).await.unwrap();
        drop(writer);
        assert_eq!(reader.frame::<pb::Assignment>().await.unwrap(), Some(assignment()));
        assert_eq!(reader.order().await.unwrap(), Some(Order::Stop));
        assert_eq!(reader.order().await.unwrap(), None);
    }
}
