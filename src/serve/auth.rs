//! Who may read the dashboard: anyone on this machine when it listens on a loopback address
//! without a token; otherwise only requests that carry the token (query `token=`, header
//! `Authorization: Bearer`, or the cookie the page sets), checked on every request.
use std::net::SocketAddr;

use rand::RngCore;

/// The cookie a page load with `?token=` sets, so that the page's own requests carry it.
pub const COOKIE: &str = "shallow_token";

/// The token a server bound to `bind` requires: the one given, else a new one when the address
/// is reachable from other machines, else none.
pub fn token_for(bind: SocketAddr, given: Option<String>) -> Option<String> {
    given.or_else(|| (!bind.ip().is_loopback()).then(new_token))
}

/// 128 random bits from the operating system, as hex.
fn new_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Whether a request may be answered: its query token, bearer header or cookie equals `token`.
pub fn allowed(token: Option<&str>, query: Option<&str>, headers: &[(String, String)]) -> bool {
    let Some(token) = token else {
        return true;
    };
    let header = |name: &'static str| {
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let bearer = header("authorization").filter_map(|v| v.strip_prefix("Bearer "));
    let cookies = header("cookie").flat_map(|v| v.split(';')).filter_map(|c| {
        c.trim()
            .strip_prefix(COOKIE)
            .and_then(|rest| rest.strip_prefix('='))
    });
    query
        .into_iter()
        .chain(bearer)
        .chain(cookies)
        .any(|given| same(given.as_bytes(), token.as_bytes()))
}

/// Equality in time that does not depend on where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_needs_no_token_unless_given_and_any_other_address_does() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(token_for(local, None), None);
        assert_eq!(token_for(local, Some("t".into())).as_deref(), Some("t"));
        let generated = token_for(any, None).unwrap();
        assert_eq!(generated.len(), 32);
        assert_ne!(token_for(any, None).unwrap(), generated);
    }

    #[test]
    fn the_token_is_taken_from_query_header_or_cookie() {
        let h = |n: &str, v: &str| vec![(n.to_owned(), v.to_owned())];
        assert!(allowed(None, None, &[]));
        assert!(!allowed(Some("abc"), None, &[]));
        assert!(!allowed(Some("abc"), Some("abd"), &[]));
        assert!(!allowed(Some("abc"), Some("ab"), &[]));
        assert!(allowed(Some("abc"), Some("abc"), &[]));
        assert!(allowed(
            Some("abc"),
            None,
            &h("Authorization", "Bearer abc")
        ));
        assert!(!allowed(
            Some("abc"),
            None,
            &h("Authorization", "Basic abc")
        ));
        assert!(allowed(
            Some("abc"),
            None,
            &h("Cookie", "a=1; shallow_token=abc")
        ));
        assert!(!allowed(
            Some("abc"),
            None,
            &h("Cookie", "shallow_token_x=abc")
        ));
    }
}
