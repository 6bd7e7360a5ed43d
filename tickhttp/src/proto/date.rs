//! The `Date` header value, formatted once per second instead of once per response.

use std::time::{SystemTime, UNIX_EPOCH};

/// `Date: ` plus an IMF-fixdate plus CRLF.
const DATE_LINE_LEN: usize = 6 + 29 + 2;

/// A cached IMF-fixdate rendering of the current second.
#[derive(Debug)]
pub struct DateCache {
    second: u64,
    value: [u8; 29],
    /// `Server: <name>\r\n` (when there is a name), then `Date: <value>\r\n`: the two lines the
    /// server adds to most response heads, ready to copy in one piece.
    lines: Vec<u8>,
    /// Where the `Date` line starts in `lines`.
    date_at: usize,
}

impl Default for DateCache {
    fn default() -> Self {
        DateCache::with_server(None)
    }
}

impl DateCache {
    /// A cache whose [`lines`](DateCache::lines) start with `Server: <server>` when given.
    pub fn with_server(server: Option<&[u8]>) -> Self {
        let mut lines = Vec::new();
        if let Some(name) = server {
            lines.extend_from_slice(b"Server: ");
            lines.extend_from_slice(name);
            lines.extend_from_slice(b"\r\n");
        }
        let date_at = lines.len();
        lines.extend_from_slice(b"Date: ");
        lines.extend_from_slice(&[b' '; 29]);
        lines.extend_from_slice(b"\r\n");
        let mut cache = DateCache {
            second: u64::MAX,
            value: [b' '; 29],
            lines,
            date_at,
        };
        cache.refresh();
        cache
    }

    /// Re-renders the value if the wall-clock second has changed. Called once per loop pass.
    pub fn refresh(&mut self) {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second {
            self.second = second;
            let text = httpdate::fmt_http_date(now);
            let bytes = text.as_bytes();
            if bytes.len() == 29 {
                self.value.copy_from_slice(bytes);
                let at = self.date_at + 6;
                self.lines[at..at + 29].copy_from_slice(bytes);
            }
        }
    }

    /// The current `Date` value, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// The `Server` line (if any) and the `Date` line, each ending in CRLF.
    pub fn lines(&self) -> &[u8] {
        &self.lines
    }

    /// The `Server` line alone (empty without a name).
    pub fn server_line(&self) -> &[u8] {
        &self.lines[..self.date_at]
    }

    /// The `Date` line alone.
    pub fn date_line(&self) -> &[u8] {
        &self.lines[self.date_at..self.date_at + DATE_LINE_LEN]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_the_value() {
        let d = DateCache::with_server(Some(b"tickhttp"));
        let date = std::str::from_utf8(d.value()).unwrap();
        assert_eq!(d.server_line(), b"Server: tickhttp\r\n");
        assert_eq!(d.date_line(), format!("Date: {date}\r\n").as_bytes());
        assert_eq!(
            d.lines(),
            format!("Server: tickhttp\r\nDate: {date}\r\n").as_bytes()
        );
        let d = DateCache::default();
        assert_eq!(d.server_line(), b"");
        assert_eq!(d.lines(), d.date_line());
    }
}
