//! Which browser origins may call the services through gRPC-web, and the CORS layer that
//! enforces it.
//!
//! Tokens travel in the `authorization` header, never in cookies, so CORS here is not what
//! stops a forged request (a page cannot attach a token it does not have); it decides which
//! web apps may talk to the service at all and lets them read the gRPC status headers.

use std::fmt;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Headers a gRPC-web client sends. Anything else in a preflight is refused.
const ALLOWED_REQUEST_HEADERS: [&str; 9] = [
    "authorization",
    "x-request-id",
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "grpc-accept-encoding",
    "connect-protocol-version",
    "connect-timeout-ms",
];

/// Without these a browser script sees every failure as an opaque network error.
const EXPOSED_RESPONSE_HEADERS: [&str; 4] =
    ["grpc-status", "grpc-message", "grpc-status-details-bin", crate::request_id::HEADER];

/// Chromium caps preflight caching at two hours; asking for more changes nothing.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(2 * 60 * 60);

/// `CORS_ALLOWED_ORIGINS`: a comma-separated list of `scheme://host[:port]` origins, where the
/// port may be `*` (any port, for local development), or the single entry `*` for any origin.
/// Empty (the default) allows no cross-origin callers.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins {
    any: bool,
    patterns: Vec<OriginPattern>,
}

#[derive(Clone, PartialEq, Eq)]
struct OriginPattern {
    /// `scheme://host`, lower-cased.
    base: String,
    /// `None` for `:*`; `Some("")` for no port; otherwise the port digits.
    port: Option<String>,
}

impl AllowedOrigins {
    /// Nobody: the production default.
    pub fn none() -> Self {
        Self::default()
    }

    /// Any port on `localhost` and `127.0.0.1` over plain HTTP: the development default.
    pub fn local_development() -> Self {
        // Both entries are valid by construction.
        Self::parse("http://localhost:*,http://127.0.0.1:*").unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        !self.any && self.patterns.is_empty()
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut origins = Self::default();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                origins.any = true;
            } else {
                origins.patterns.push(OriginPattern::parse(entry)?);
            }
        }
        Ok(origins)
    }

    /// Whether a request's `Origin` header value is allowed.
    pub fn allows(&self, origin: &[u8]) -> bool {
        if self.any {
            return true;
        }
        let Ok(origin) = std::str::from_utf8(origin) else { return false };
        let origin = origin.to_ascii_lowercase();
        self.patterns.iter().any(|pattern| pattern.matches(&origin))
    }

    /// The CORS layer, outermost on the server so preflights are answered before anything
    /// else (no token, no readiness check) looks at them.
    pub fn layer(&self) -> CorsLayer {
        let origins = self.clone();
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| origins.allows(origin.as_bytes())))
            .allow_methods([Method::POST, Method::OPTIONS])
            .allow_headers(ALLOWED_REQUEST_HEADERS.map(HeaderName::from_static))
            .expose_headers(EXPOSED_RESPONSE_HEADERS.map(HeaderName::from_static))
            .max_age(PREFLIGHT_MAX_AGE)
    }
}

impl OriginPattern {
    fn parse(entry: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("{entry:?} is not an origin ({why}); expected e.g. https://app.example.com or http://localhost:*")
        };
        let lower = entry.to_ascii_lowercase();
        let (scheme, rest) = lower.split_once("://").ok_or_else(|| bad("no scheme"))?;
        if scheme != "http" && scheme != "https" {
            return Err(bad("the scheme must be http or https"));
        }
        if rest.contains('/') {
            return Err(bad("an origin has no path, not even a trailing slash"));
        }
        // An IPv6 host is bracketed, so the port is whatever follows the last `]:` or `:`.
        let host_end = rest.rfind(']').map_or(0, |i| i + 1);
        let (host, port) = match rest[host_end..].rfind(':') {
            Some(i) => (&rest[..host_end + i], Some(&rest[host_end + i + 1..])),
            None => (rest, None),
        };
        if host.is_empty() || host.contains('*') {
            return Err(bad("the host must be spelled out; only the port may be *"));
        }
        let port = match port {
            None => Some(String::new()),
            Some("*") => None,
            Some(digits) if digits.parse::<u16>().is_ok_and(|p| p > 0) => Some(digits.to_owned()),
            Some(_) => return Err(bad("the port must be a number from 1 to 65535 or *")),
        };
        Ok(Self { base: format!("{scheme}://{host}"), port })
    }

    fn matches(&self, origin: &str) -> bool {
        let Some(rest) = origin.strip_prefix(self.base.as_str()) else { return false };
        match (&self.port, rest) {
            (Some(port), "") => port.is_empty(),
            (Some(port), rest) => rest.strip_prefix(':') == Some(port.as_str()),
            (None, "") => true,
            (None, rest) => {
                rest.strip_prefix(':').is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            }
        }
    }
}

impl fmt::Debug for AllowedOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        if self.any {
            list.entry(&"*");
        }
        for pattern in &self.patterns {
            match &pattern.port {
                None => list.entry(&format_args!("{}:*", pattern.base)),
                Some(port) if port.is_empty() => list.entry(&pattern.base),
                Some(port) => list.entry(&format_args!("{}:{port}", pattern.base)),
            };
        }
        list.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_origins_match_scheme_host_and_port_exactly() {
        let origins = AllowedOrigins::parse("https://app.example.com, http://localhost:3000").unwrap();
        assert!(origins.allows(b"https://app.example.com"));
        assert!(origins.allows(b"HTTPS://APP.example.com"));
        assert!(origins.allows(b"http://localhost:3000"));
        assert!(!origins.allows(b"http://app.example.com"));
        assert!(!origins.allows(b"https://app.example.com:8443"));
        assert!(!origins.allows(b"https://app.example.com.evil.test"));
        assert!(!origins.allows(b"http://localhost:30001"));
        assert!(!origins.allows(b"null"));
    }

    #[test]
    fn a_port_wildcard_matches_any_port_and_nothing_else() {
        let origins = AllowedOrigins::local_development();
        assert!(origins.allows(b"http://localhost:5173"));
        assert!(origins.allows(b"http://127.0.0.1:8080"));
        assert!(origins.allows(b"http://localhost"));
        assert!(!origins.allows(b"http://localhost.evil.test"));
        assert!(!origins.allows(b"http://localhost:80.evil.test"));
        assert!(!origins.allows(b"https://localhost:5173"));
        assert!(!origins.allows(b"http://127.0.0.2:8080"));
    }

    #[test]
    fn none_allows_nothing_and_star_allows_everything() {
        assert!(AllowedOrigins::none().is_empty());
        assert!(!AllowedOrigins::none().allows(b"http://localhost:1"));
        assert!(AllowedOrigins::parse(" * ").unwrap().allows(b"https://anything.test"));
    }

    #[test]
    fn malformed_entries_are_rejected_with_the_entry_named() {
        for bad in
            ["localhost:3000", "ftp://x.test", "https://x.test/", "https://*.x.test", "http://x.test:0", "http://x:abc"]
        {
            let err = AllowedOrigins::parse(bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
        let v6 = AllowedOrigins::parse("http://[::1]:*").unwrap();
        assert!(v6.allows(b"http://[::1]:9000"));
    }
}
