//! Throttling of password attempts (Login and SignUp) per client address and per email.
//!
//! Each limiter is a GCRA (`todo_shared::rate_limit`): a key may spend a burst of `count`
//! attempts, then one every `period / count`, checked and counted under one lock, so a
//! hundred parallel guesses at one email cannot all pass before the first is counted. An
//! attempt is counted before the password is checked; a successful login forgives the
//! email's count.
//!
//! The key is the normalised email whether or not an account has it, so an unknown email is
//! throttled exactly like a known one. Keys are kept as 64-bit keyed hashes in a fixed number
//! of slots: memory stays bounded however many distinct emails and addresses arrive.

use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use todo_shared::metrics::{Counter, Family, Metrics};
use tonic::metadata::MetadataMap;

pub use todo_shared::rate_limit::{Limiter, Rate};

/// Which hops' `x-forwarded-for` entries to believe: the addresses of our own proxies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// A comma-separated list of addresses or CIDR ranges, e.g. `10.0.0.0/8, 192.168.1.7`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || format!("{entry:?} is not an IP address or CIDR range such as 10.0.0.0/8");
            let (addr, bits) = match entry.split_once('/') {
                Some((addr, bits)) => (addr, Some(bits)),
                None => (entry, None),
            };
            let addr: IpAddr = addr.parse().map_err(|_| bad())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(bits) => bits.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(bad)?,
            };
            ranges.push((addr, bits));
        }
        Ok(Self(ranges))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|&(net, bits)| in_range(ip, net, bits))
    }

    /// The client's address: the TCP peer, unless the peer is one of our proxies, in which case
    /// the right-most `x-forwarded-for` entry that is not one of our proxies (entries further
    /// left were written by the client and prove nothing).
    pub fn client_address(&self, peer: Option<SocketAddr>, metadata: &MetadataMap) -> Option<IpAddr> {
        let peer = peer.map(|p| p.ip())?;
        if !self.trusts(peer) {
            return Some(peer);
        }
        let forwarded = metadata.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>();
        for hop in forwarded.iter().rev().flat_map(|header| header.rsplit(',')) {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if self.trusts(ip) => continue,
                Ok(ip) => return Some(ip),
                // A hop we cannot read: stop believing the chain there.
                Err(_) => break,
            }
        }
        Some(peer)
    }
}

fn in_range(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// The key an address is throttled under: IPv6 clients usually hold a whole /64, so that is
/// one key; IPv4-mapped addresses count as the IPv4 address.
fn address_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => u128::from(v6) & !u128::from(u64::MAX),
        },
    }
}

/// The limits of auth-service's password endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// `AUTH_THROTTLE_PER_ADDRESS`: attempts per client address (Login and SignUp together).
    pub per_address: Option<Rate>,
    /// `AUTH_THROTTLE_PER_EMAIL`: attempts per normalised email (Login and SignUp together).
    pub per_email: Option<Rate>,
    /// `AUTH_TRUSTED_PROXIES`: proxies whose `x-forwarded-for` is believed.
    pub trusted_proxies: TrustedProxies,
}

impl ThrottleConfig {
    pub const DEFAULT_PER_ADDRESS: Rate = Rate::per_minute(120);
    pub const DEFAULT_PER_EMAIL: Rate = Rate::per_minute(10);

    /// No throttling at all: for load tests of the hashing path.
    pub fn off() -> Self {
        Self { per_address: None, per_email: None, trusted_proxies: TrustedProxies::default() }
    }
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            per_address: Some(Self::DEFAULT_PER_ADDRESS),
            per_email: Some(Self::DEFAULT_PER_EMAIL),
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// Which limit refused an attempt, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    Address(Duration),
    Email(Duration),
}

pub struct Throttle {
    per_address: Option<Limiter>,
    /// Refresh calls per address: the same rate as password attempts, counted apart so a
    /// browser's refreshes never spend its user's login attempts.
    refresh_per_address: Option<Limiter>,
    per_email: Option<Limiter>,
    trusted_proxies: TrustedProxies,
    refusals: Family<RefusalKind, Counter>,
}

/// Which limit refused: `password_per_address`, `password_per_email`, `refresh_per_address`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalKind {
    kind: &'static str,
}

impl Throttle {
    pub fn new(config: &ThrottleConfig) -> Self {
        Self {
            per_address: config.per_address.map(Limiter::new),
            refresh_per_address: config.per_address.map(Limiter::new),
            per_email: config.per_email.map(Limiter::new),
            trusted_proxies: config.trusted_proxies.clone(),
            refusals: Family::default(),
        }
    }

    /// Registers `todo_throttle_refusals_total{kind}`.
    pub fn register_metrics(&self, metrics: &Metrics) {
        for kind in ["password_per_address", "password_per_email", "refresh_per_address"] {
            // Every kind present from the start, at 0, so a rate() over it is defined.
            let _ = self.refusals.get_or_create(&RefusalKind { kind });
        }
        metrics.register(
            "todo_throttle_refusals",
            "Attempts refused with RESOURCE_EXHAUSTED by a throttle, by which limit refused them.",
            self.refusals.clone(),
        );
    }

    fn refused(&self, kind: &'static str) {
        self.refusals.get_or_create(&RefusalKind { kind }).inc();
    }

    pub fn client_address(&self, peer: Option<SocketAddr>, metadata: &MetadataMap) -> Option<IpAddr> {
        self.trusted_proxies.client_address(peer, metadata)
    }

    /// Counts one password attempt by `address` on `email` (normalised), or refuses it. The
    /// address is checked first, so a refused address spends none of the email's attempts.
    pub fn attempt(&self, address: Option<IpAddr>, email: &str) -> Result<(), Throttled> {
        let now = Instant::now();
        if let (Some(limiter), Some(ip)) = (&self.per_address, address) {
            limiter.check(address_key(ip), now).map_err(|wait| {
                self.refused("password_per_address");
                Throttled::Address(wait)
            })?;
        }
        if let Some(limiter) = &self.per_email {
            limiter.check(email, now).map_err(|wait| {
                self.refused("password_per_email");
                Throttled::Email(wait)
            })?;
        }
        Ok(())
    }

    /// Counts one Refresh from `address`, or refuses it.
    pub fn refresh_attempt(&self, address: Option<IpAddr>) -> Result<(), Throttled> {
        if let (Some(limiter), Some(ip)) = (&self.refresh_per_address, address) {
            limiter.check(address_key(ip), Instant::now()).map_err(|wait| {
                self.refused("refresh_per_address");
                Throttled::Address(wait)
            })?;
        }
        Ok(())
    }

    /// The right password: the email's failed attempts no longer count against it.
    pub fn succeeded(&self, email: &str) {
        if let Some(limiter) = &self.per_email {
            limiter.forgive(email);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7").unwrap();
        let mut metadata = MetadataMap::new();
        metadata.insert("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.2.3".parse().unwrap());
        let proxy: SocketAddr = "10.9.9.9:4000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.4:4000".parse().unwrap();
        // Behind our proxy: the right-most address that is not ours (6.6.6.6 was written by the client).
        assert_eq!(proxies.client_address(Some(proxy), &metadata), Some("203.0.113.9".parse().unwrap()));
        // Anyone else's header is ignored.
        assert_eq!(proxies.client_address(Some(stranger), &metadata), Some(stranger.ip()));
        assert_eq!(TrustedProxies::default().client_address(Some(proxy), &metadata), Some(proxy.ip()));
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.internal").is_err());
    }

    #[test]
    fn an_ipv6_slash_64_is_one_client() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        assert_eq!(address_key("::ffff:192.0.2.1".parse().unwrap()), address_key("192.0.2.1".parse().unwrap()));
    }
}
