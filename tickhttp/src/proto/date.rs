//! The `Date` header value, formatted once per second instead of once per response.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// When, by the monotonic clock, the wall-clock second after the rendered one begins.
    next_second: Option<Instant>,
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
            next_second: None,
        };
        cache.refresh();
        cache
    }

    /// Re-renders the value if the wall-clock second has changed. Called once per loop pass.
    pub fn refresh(&mut self) {
        self.refresh_from(SystemTime::now());
    }

    fn refresh_from(&mut self, now: SystemTime) {
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

    /// [`refresh`](DateCache::refresh) for a loop that already read the monotonic clock
    /// (`now`): the wall clock is read only once the next second is due, instead of on every
    /// pass. A wall-clock step is picked up at the next second boundary.
    pub fn refresh_at(&mut self, now: Instant) {
        if self.next_second.is_some_and(|next| now < next) {
            return;
        }
        let wall = SystemTime::now();
        self.refresh_from(wall);
        let into_second = wall
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let left = Duration::from_nanos(u64::from(1_000_000_000 - into_second.min(999_999_999)));
        self.next_second = Some(now + left);
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

    #[test]
    fn refresh_at_rereads_the_wall_clock_once_the_second_is_over() {
        let start = Instant::now();
        let mut d = DateCache::default();
        d.refresh_at(start);
        let next = d.next_second.unwrap();
        assert!(next > start && next <= start + Duration::from_secs(1));
        // Within the second: the wall clock is not read.
        d.second = 0;
        d.refresh_at(next - Duration::from_nanos(1));
        assert_eq!(d.second, 0);
        // At the boundary it is.
        d.refresh_at(next);
        assert_ne!(d.second, 0);
        assert!(d.next_second.unwrap() > next);
    }
}
