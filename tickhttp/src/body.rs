//! Request and response bodies.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::task::Notify;

/// The body of a request: in memory, or spooled to a temp file when larger than
/// [`ServerConfig::body_spool_threshold`](crate::ServerConfig::body_spool_threshold).
///
/// A spooled file is deleted when the body is dropped, unless [`RequestBody::persist`] keeps it.
#[derive(Debug, Default)]
pub enum RequestBody {
    /// No body.
    #[default]
    Empty,
    /// The whole body in memory.
    Bytes(Bytes),
    /// The body in a temp file.
    File {
        /// The temp file, removed on drop.
        file: tempfile::NamedTempFile,
        /// Its length in bytes.
        len: u64,
    },
}

impl RequestBody {
    /// Body length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            RequestBody::Empty => 0,
            RequestBody::Bytes(b) => b.len() as u64,
            RequestBody::File { len, .. } => *len,
        }
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, when the body is in memory (`None` for a spooled body).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            RequestBody::Empty => Some(&[]),
            RequestBody::Bytes(b) => Some(b),
            RequestBody::File { .. } => None,
        }
    }

    /// Reads the whole body into memory (from the temp file if spooled).
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        match self {
            RequestBody::Empty => Ok(Vec::new()),
            RequestBody::Bytes(b) => Ok(b.to_vec()),
            RequestBody::File { file, len } => {
                let mut f = file.reopen()?;
                let mut out = Vec::with_capacity(usize::try_from(*len).unwrap_or(0));
                f.read_to_end(&mut out)?;
                Ok(out)
            }
        }
    }

    /// A reader over the body from its start.
    pub fn reader(&self) -> io::Result<Box<dyn Read + Send + '_>> {
        match self {
            RequestBody::Empty => Ok(Box::new(io::empty())),
            RequestBody::Bytes(b) => Ok(Box::new(&b[..])),
            RequestBody::File { file, .. } => {
                let mut f = file.reopen()?;
                f.seek(SeekFrom::Start(0))?;
                Ok(Box::new(f))
            }
        }
    }

    /// The temp file's path, when the body is spooled.
    pub fn path(&self) -> Option<&Path> {
        match self {
            RequestBody::File { file, .. } => Some(file.path()),
            _ => None,
        }
    }

    /// Writes the body to `path` (moving the temp file when possible) and keeps it.
    pub fn persist(self, path: impl AsRef<Path>) -> io::Result<()> {
        match self {
            RequestBody::File { file, .. } => match file.persist(path.as_ref()) {
                Ok(_) => Ok(()),
                Err(e) => {
                    // Another filesystem: copy instead of rename.
                    let mut src = e.file.reopen()?;
                    let mut dst = File::create(path)?;
                    io::copy(&mut src, &mut dst).map(|_| ())
                }
            },
            other => std::fs::write(path, other.as_bytes().unwrap_or(&[])),
        }
    }
}

/// The body of a response.
///
/// ```
/// use tickhttp::Body;
/// let a = Body::from("Hello, World!");
/// let b = Body::from(vec![1u8, 2, 3]);
/// assert_eq!(a.len(), Some(13));
/// assert_eq!(b.len(), Some(3));
/// let (tx, stream) = Body::channel();
/// assert_eq!(stream.len(), None); // sent chunked
/// drop(tx);
/// ```
#[derive(Default)]
pub enum Body {
    /// No body (`Content-Length: 0`, or nothing at all for 204/304).
    #[default]
    Empty,
    /// Bytes in memory.
    Bytes(Bytes),
    /// A region of a file, sent with `sendfile(2)` on plain TCP.
    File {
        /// The open file.
        file: File,
        /// First byte to send.
        offset: u64,
        /// Bytes to send.
        len: u64,
    },
    /// A stream fed by a [`BodySender`], possibly over many ticks; sent chunked.
    Stream(BodyStream),
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Empty => f.write_str("Body::Empty"),
            Body::Bytes(b) => write!(f, "Body::Bytes({} bytes)", b.len()),
            Body::File { offset, len, .. } => write!(f, "Body::File({offset}+{len})"),
            Body::Stream(_) => f.write_str("Body::Stream"),
        }
    }
}

impl Body {
    /// A streaming body and the sender that feeds it.
    pub fn channel() -> (BodySender, Body) {
        let shared = Arc::new(StreamShared {
            state: Mutex::new(StreamState::default()),
        });
        (
            BodySender {
                shared: Arc::clone(&shared),
            },
            Body::Stream(BodyStream { shared }),
        )
    }

    /// A whole file, sent with `sendfile(2)`.
    pub fn file(file: File) -> io::Result<Body> {
        let len = file.metadata()?.len();
        Ok(Body::File {
            file,
            offset: 0,
            len,
        })
    }

    /// The length, when known in advance (`None` for streams).
    pub fn len(&self) -> Option<u64> {
        match self {
            Body::Empty => Some(0),
            Body::Bytes(b) => Some(b.len() as u64),
            Body::File { len, .. } => Some(*len),
            Body::Stream(_) => None,
        }
    }

    /// Whether the body is known to be empty.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Body::Bytes(Bytes::from_static(s.as_bytes()))
    }
}
impl From<&'static [u8]> for Body {
    fn from(s: &'static [u8]) -> Self {
        Body::Bytes(Bytes::from_static(s))
    }
}
impl From<String> for Body {
    fn from(s: String) -> Self {
        Body::Bytes(Bytes::from(s))
    }
}
impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body::Bytes(Bytes::from(v))
    }
}
impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::Bytes(b)
    }
}
impl From<()> for Body {
    fn from(_: ()) -> Self {
        Body::Empty
    }
}

#[derive(Default)]
pub(crate) struct StreamState {
    pub(crate) chunks: VecDeque<Bytes>,
    pub(crate) buffered: usize,
    pub(crate) finished: bool,
    pub(crate) aborted: bool,
    /// Set by the server once the stream is on the wire: who to tell about new chunks.
    pub(crate) notify: Option<Notify>,
    /// The connection is gone; sends fail.
    pub(crate) closed: bool,
}

pub(crate) struct StreamShared {
    pub(crate) state: Mutex<StreamState>,
}

impl StreamShared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The receiving half of a streaming body, held by the server.
pub struct BodyStream {
    pub(crate) shared: Arc<StreamShared>,
}

/// Feeds a streaming response body. It can be moved to a background task or another thread.
///
/// Dropping the last sender ends the body normally; [`BodySender::abort`] ends it with an
/// error (the connection is closed without the final chunk, so the client sees a truncation).
pub struct BodySender {
    shared: Arc<StreamShared>,
}

/// The connection behind a streaming body has closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client connection of this stream has closed")]
pub struct StreamClosed;

impl BodySender {
    /// Queues a chunk. Fails once the client has gone, so producers can stop.
    pub fn send(&self, data: impl Into<Bytes>) -> Result<(), StreamClosed> {
        let data = data.into();
        let notify = {
            let mut st = self.shared.lock();
            if st.closed || st.finished || st.aborted {
                return Err(StreamClosed);
            }
            if data.is_empty() {
                return Ok(());
            }
            st.buffered += data.len();
            st.chunks.push_back(data);
            st.notify.clone()
        };
        if let Some(n) = notify {
            n.notify();
        }
        Ok(())
    }

    /// Bytes queued and not yet written to the socket; a producer can pause above a mark.
    pub fn buffered(&self) -> usize {
        self.shared.lock().buffered
    }

    /// Whether the client connection has closed.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Ends the body normally (same as dropping the sender).
    pub fn finish(self) {}

    /// Ends the body abnormally: the connection is closed without the last chunk.
    pub fn abort(self) {
        self.shared.lock().aborted = true;
        self.wake();
    }

    fn wake(&self) {
        let notify = self.shared.lock().notify.clone();
        if let Some(n) = notify {
            n.notify();
        }
    }
}

impl Drop for BodySender {
    fn drop(&mut self) {
        let notify = {
            let mut st = self.shared.lock();
            if !st.aborted {
                st.finished = true;
            }
            st.notify.clone()
        };
        if let Some(n) = notify {
            n.notify();
        }
    }
}
