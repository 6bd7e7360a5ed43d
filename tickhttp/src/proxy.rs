//! PROXY protocol v1 (text) and v2 (binary), as sent by HAProxy, nginx (`proxy_protocol on`),
//! AWS NLB and others, parsed with the `ppp` crate.
//!
//! Only connections from the configured trusted addresses must start with a header; the
//! client address it carries replaces the connection's peer address, so it reaches
//! [`Request::peer_addr`](crate::Request::peer_addr), the access log and the rate limiter.
//! Anyone else is plain HTTP: a PROXY line from an untrusted peer is a bad request (400).
//! A trusted peer that sends no valid header is disconnected.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ppp::v2;
use ppp::{HeaderResult, PartialResult};

use crate::error::Error;

/// A network of trusted proxies: an address with a prefix length (`10.0.0.0/8`,
/// `192.0.2.7`, `2001:db8::/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedNet {
    addr: IpAddr,
    prefix: u8,
}

impl TrustedNet {
    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for TrustedNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network (a.b.c.d[/n])"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0 to {max}")),
            },
        };
        Ok(TrustedNet { addr, prefix })
    }
}

impl fmt::Display for TrustedNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl From<IpAddr> for TrustedNet {
    fn from(addr: IpAddr) -> Self {
        let addr = addr.to_canonical();
        TrustedNet {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }
    }
}

/// PROXY protocol settings.
///
/// ```
/// use tickhttp::proxy::ProxyProtocolConfig;
/// let proxy = ProxyProtocolConfig::new(vec!["10.0.0.0/8".parse().unwrap()]);
/// let config = tickhttp::ServerConfig::default().proxy_protocol(Some(proxy));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProxyProtocolConfig {
    /// Peers whose connections must start with a PROXY header.
    pub trusted: Vec<TrustedNet>,
}

impl ProxyProtocolConfig {
    /// Headers required from (and believed only from) these networks.
    pub fn new(trusted: Vec<TrustedNet>) -> Self {
        ProxyProtocolConfig { trusted }
    }

    /// Whether a connection from `ip` must start with a PROXY header.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(ip))
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.trusted.is_empty() {
            return Err(Error::config(
                "proxy_protocol.trusted",
                "name at least one trusted proxy address",
            ));
        }
        Ok(())
    }
}

/// What the start of a trusted connection's input holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// A header of `len` bytes; `source` is the client (`None`: LOCAL or UNKNOWN, keep the
    /// connection's own address).
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// Not a PROXY header.
    Invalid,
}

/// Longest v1 header (107 bytes by the specification); v2 headers carry their length.
const V1_MAX: usize = 107;

/// Parses a PROXY v1 or v2 header at the start of `data`.
pub(crate) fn parse(data: &[u8]) -> Parsed {
    match HeaderResult::parse(data) {
        HeaderResult::V1(Ok(h)) => {
            let source = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => Some((a.source_address, a.source_port).into()),
                ppp::v1::Addresses::Tcp6(a) => Some((a.source_address, a.source_port).into()),
                ppp::v1::Addresses::Unknown => None,
            };
            Parsed::Header {
                len: h.header.len(),
                source,
            }
        }
        HeaderResult::V2(Ok(h)) => {
            let source = match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (_, v2::Addresses::IPv4(a)) => Some((a.source_address, a.source_port).into()),
                (_, v2::Addresses::IPv6(a)) => Some((a.source_address, a.source_port).into()),
                _ => None,
            };
            Parsed::Header {
                len: h.len(),
                source,
            }
        }
        r if r.is_incomplete() => {
            // A v1 line never exceeds 107 bytes; v2 announces its length up front.
            if !data.starts_with(b"\r\n\r\n\0\r\nQUIT\n") && data.len() > V1_MAX {
                Parsed::Invalid
            } else {
                Parsed::Incomplete
            }
        }
        _ => Parsed::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let net: TrustedNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        let one: TrustedNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: TrustedNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let v6: TrustedNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<TrustedNet>().is_err());
        assert!("nope".parse::<TrustedNet>().is_err());
    }

    #[test]
    fn v1_headers() {
        let h = b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 80\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(h),
            Parsed::Header {
                len: 40,
                source: Some("192.0.2.1:5000".parse().unwrap())
            }
        );
        assert_eq!(parse(b"PROXY TCP4 192.0"), Parsed::Incomplete);
        assert_eq!(parse(b"PRO"), Parsed::Incomplete);
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                len: 15,
                source: None
            }
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Parsed::Invalid);
        assert_eq!(parse(&[b'P'; 200]), Parsed::Invalid);
    }
}
