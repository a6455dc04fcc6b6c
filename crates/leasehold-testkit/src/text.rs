//! Small text helpers shared by the server and the proxy: Redis URLs with
//! percent-encoded credentials, and log tails for panic messages.
//!
//! Invariant: every URL built here points at `127.0.0.1`; credentials are
//! percent-encoded so any password round-trips through redis-rs's URL parser.

use std::fmt::Write as _;

/// How many trailing log lines panic messages include.
pub(crate) const LOG_TAIL_LINES: usize = 50;

/// `redis://[user][:password@]127.0.0.1:PORT/`.
pub(crate) fn redis_url(port: u16, user: Option<&str>, password: Option<&str>) -> String {
    let mut url = String::from("redis://");
    match (user, password) {
        (Some(user), Some(password)) => {
            let _ = write!(url, "{}:{}@", encode(user), encode(password));
        }
        (None, Some(password)) => {
            let _ = write!(url, ":{}@", encode(password));
        }
        (Some(user), None) => {
            let _ = write!(url, "{}@", encode(user));
        }
        (None, None) => {}
    }
    let _ = write!(url, "127.0.0.1:{port}/");
    url
}

/// Percent-encodes everything except RFC 3986 unreserved characters.
fn encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The last `lines` lines of `text` (at least one line).
pub(crate) fn tail(text: &str, lines: usize) -> &str {
    let body = text.trim_end_matches('\n');
    let start = body
        .rmatch_indices('\n')
        .nth(lines.saturating_sub(1))
        .map_or(0, |(index, _)| index + 1);
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encodes_credentials_that_would_break_the_url() {
        assert_eq!(
            redis_url(7000, Some("al ice"), Some("p@ss:w/rd")),
            "redis://al%20ice:p%40ss%3Aw%2Frd@127.0.0.1:7000/"
        );
        assert_eq!(
            redis_url(7000, None, Some("pw")),
            "redis://:pw@127.0.0.1:7000/"
        );
        assert_eq!(redis_url(7000, None, None), "redis://127.0.0.1:7000/");
    }

    #[test]
    fn tail_keeps_only_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("a\nb\nc", 5), "a\nb\nc");
        assert_eq!(tail("", 3), "");
        assert_eq!(tail("a\nb\nc", 1), "c");
    }

    #[test]
    fn encoded_password_round_trips_through_redis_rs() {
        let url = redis_url(7000, Some("u"), Some("p@ss w:rd/?#%"));
        let client = redis::Client::open(url.as_str()).unwrap();
        let info = client.get_connection_info().redis_settings();
        assert_eq!(info.password(), Some("p@ss w:rd/?#%"));
        assert_eq!(info.username(), Some("u"));
    }
}
