//! The `Date` header value, formatted once per second instead of once per response.

use std::time::{SystemTime, UNIX_EPOCH};

/// A cached IMF-fixdate rendering of the current second.
#[derive(Debug)]
pub struct DateCache {
    second: u64,
    value: [u8; 29],
}

impl Default for DateCache {
    fn default() -> Self {
        let mut cache = DateCache {
            second: u64::MAX,
            value: [b' '; 29],
        };
        cache.refresh();
        cache
    }
}

impl DateCache {
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
            }
        }
    }

    /// The current `Date` value, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
    pub fn value(&self) -> &[u8] {
        &self.value
    }
}
