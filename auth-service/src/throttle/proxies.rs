//! Who the client is, for throttling: the TCP peer, or behind our own proxies the address
//! they forwarded; and the key an address is throttled under.

use std::net::{IpAddr, SocketAddr};

use tonic::metadata::MetadataMap;

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
pub(super) fn address_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => u128::from(v6) & !u128::from(u64::MAX),
        },
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
