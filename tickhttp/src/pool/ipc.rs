//! Control messages between the master and a worker, and their byte format.
//!
//! Each message is one `SOCK_SEQPACKET` datagram, so the kernel keeps the boundaries and a
//! passed descriptor always travels with the message that describes it. The format is a
//! tag byte followed by little-endian fixed-width fields; it never crosses a machine or a
//! version boundary (both ends are the same binary), so it needs no versioning.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest encoded message, for receive buffers.
pub(crate) const MAX_MESSAGE: usize = 64;

/// From the master to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ToWorker {
    /// A client connection; its socket is attached to the message.
    Conn {
        /// The client's address, as the master saw it at accept.
        peer: SocketAddr,
        /// When the master accepted it.
        accepted_at: SystemTime,
    },
}

/// From a worker to the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ToMaster {
    /// The worker has built its server and is about to run the application.
    Ready {
        /// The worker's pid (the master knows it from fork; this checks the channel).
        pid: u32,
    },
    /// The periodic report, which also proves the worker's loop is turning. (Live load goes
    /// through the shared [`LoadBoard`](super::sys::LoadBoard) instead: no message per
    /// connection.)
    Stats {
        /// Connections open in the worker now.
        open: u32,
        /// Connections received from the master so far.
        received: u64,
        /// Requests the worker has received since it started.
        requests: u64,
    },
    /// The worker began a graceful shutdown (a signal, or its master is gone): send it no
    /// more connections.
    Stopping,
}

const TAG_CONN: u8 = 1;
const TAG_READY: u8 = 2;
const TAG_STATS: u8 = 4;
const TAG_STOPPING: u8 = 5;

/// Why a message could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

struct Writer<'a> {
    buf: &'a mut [u8; MAX_MESSAGE],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }
    fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.put(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        if self.buf.len() < N {
            return Err(Malformed);
        }
        let (head, rest) = self.buf.split_at(N);
        self.buf = rest;
        head.try_into().map_err(|_| Malformed)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn end(&self) -> Result<(), Malformed> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Malformed)
        }
    }
}

impl ToWorker {
    /// Encodes into `buf`; returns the length.
    pub(crate) fn encode(&self, buf: &mut [u8; MAX_MESSAGE]) -> usize {
        let mut w = Writer { buf, len: 0 };
        match self {
            ToWorker::Conn { peer, accepted_at } => {
                w.u8(TAG_CONN);
                match peer {
                    SocketAddr::V4(a) => {
                        w.u8(4);
                        w.put(&a.ip().octets());
                        w.u16(a.port());
                    }
                    SocketAddr::V6(a) => {
                        w.u8(6);
                        w.put(&a.ip().octets());
                        w.u16(a.port());
                        w.u32(a.flowinfo());
                        w.u32(a.scope_id());
                    }
                }
                let since = accepted_at
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO);
                w.u64(since.as_secs());
                w.u32(since.subsec_nanos());
            }
        }
        w.len
    }

    /// Decodes one message.
    pub(crate) fn decode(bytes: &[u8]) -> Result<ToWorker, Malformed> {
        let mut r = Reader { buf: bytes };
        let msg = match r.u8()? {
            TAG_CONN => {
                let peer = match r.u8()? {
                    4 => {
                        let ip = Ipv4Addr::from(r.take::<4>()?);
                        SocketAddr::new(IpAddr::V4(ip), r.u16()?)
                    }
                    6 => {
                        let ip = Ipv6Addr::from(r.take::<16>()?);
                        let port = r.u16()?;
                        let flow = r.u32()?;
                        let scope = r.u32()?;
                        SocketAddr::V6(SocketAddrV6::new(ip, port, flow, scope))
                    }
                    _ => return Err(Malformed),
                };
                let secs = r.u64()?;
                let nanos = r.u32()?;
                if nanos >= 1_000_000_000 {
                    return Err(Malformed);
                }
                let accepted_at = UNIX_EPOCH
                    .checked_add(Duration::new(secs, nanos))
                    .ok_or(Malformed)?;
                ToWorker::Conn { peer, accepted_at }
            }
            _ => return Err(Malformed),
        };
        r.end()?;
        Ok(msg)
    }
}

impl ToMaster {
    /// Encodes into `buf`; returns the length.
    pub(crate) fn encode(&self, buf: &mut [u8; MAX_MESSAGE]) -> usize {
        let mut w = Writer { buf, len: 0 };
        match *self {
            ToMaster::Ready { pid } => {
                w.u8(TAG_READY);
                w.u32(pid);
            }
            ToMaster::Stats {
                open,
                received,
                requests,
            } => {
                w.u8(TAG_STATS);
                w.u32(open);
                w.u64(received);
                w.u64(requests);
            }
            ToMaster::Stopping => w.u8(TAG_STOPPING),
        }
        w.len
    }

    /// Decodes one message.
    pub(crate) fn decode(bytes: &[u8]) -> Result<ToMaster, Malformed> {
        let mut r = Reader { buf: bytes };
        let msg = match r.u8()? {
            TAG_READY => ToMaster::Ready { pid: r.u32()? },
            TAG_STATS => ToMaster::Stats {
                open: r.u32()?,
                received: r.u64()?,
                requests: r.u64()?,
            },
            TAG_STOPPING => ToMaster::Stopping,
            _ => return Err(Malformed),
        };
        r.end()?;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_worker(msg: ToWorker) {
        let mut buf = [0u8; MAX_MESSAGE];
        let len = msg.encode(&mut buf);
        assert_eq!(ToWorker::decode(&buf[..len]), Ok(msg.clone()));
        for cut in 0..len {
            assert_eq!(
                ToWorker::decode(&buf[..cut]),
                Err(Malformed),
                "cut at {cut}"
            );
        }
    }

    fn roundtrip_master(msg: ToMaster) {
        let mut buf = [0u8; MAX_MESSAGE];
        let len = msg.encode(&mut buf);
        assert_eq!(ToMaster::decode(&buf[..len]), Ok(msg));
        for cut in 0..len {
            assert_eq!(
                ToMaster::decode(&buf[..cut]),
                Err(Malformed),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn connection_metadata_survives_the_trip() {
        let at = UNIX_EPOCH + Duration::new(1_790_000_000, 123_456_789);
        roundtrip_worker(ToWorker::Conn {
            peer: "203.0.113.7:54321".parse().unwrap(),
            accepted_at: at,
        });
        roundtrip_worker(ToWorker::Conn {
            peer: SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 443, 7, 3)),
            accepted_at: at,
        });
    }

    #[test]
    fn worker_reports_survive_the_trip() {
        roundtrip_master(ToMaster::Ready { pid: 4242 });
        roundtrip_master(ToMaster::Stats {
            open: 0,
            received: 5,
            requests: 99,
        });
        roundtrip_master(ToMaster::Stopping);
    }

    #[test]
    fn garbage_is_rejected() {
        assert_eq!(ToMaster::decode(&[]), Err(Malformed));
        assert_eq!(ToMaster::decode(&[99]), Err(Malformed));
        assert_eq!(ToMaster::decode(&[TAG_STOPPING, 0]), Err(Malformed));
        assert_eq!(ToWorker::decode(&[TAG_CONN, 5]), Err(Malformed));
    }

    #[test]
    fn longest_message_fits() {
        let mut buf = [0u8; MAX_MESSAGE];
        let len = ToWorker::Conn {
            peer: "[::1]:1".parse().unwrap(),
            accepted_at: SystemTime::now(),
        }
        .encode(&mut buf);
        assert!(len <= MAX_MESSAGE);
    }
}
