//! Server-side request forgery guard: deliveries never reach internal addresses unless allowed.
//!
//! Addresses are classified after resolution, inside the connector's resolver, so a public-looking
//! name that resolves to `127.0.0.1` (or re-resolves to it later: DNS rebinding) is refused at the
//! moment of connecting. Literal IP targets skip resolution, so they are checked by the attempt
//! itself, and at create/update time so that an obviously internal URL is refused up front.
//! IPv4-mapped, IPv4-compatible, NAT64 and 6to4 IPv6 forms are judged by the IPv4 address they embed.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use ipnet::IpNet;

/// Which internal addresses deliveries may reach.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    /// Every address is allowed (local development).
    pub allow_all: bool,
    /// Ranges allowed even though they are internal.
    pub allowed: Vec<IpNet>,
}

/// A refused address, with why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refused to connect to {address}: {range} address (blocked to prevent request forgery; see --allow-target-cidr)"
)]
pub struct BlockedAddress {
    /// The address.
    pub address: IpAddr,
    /// The kind of range it is in, e.g. `loopback`.
    pub range: &'static str,
}

impl TargetPolicy {
    /// Checks one address.
    pub fn check(&self, address: IpAddr) -> Result<(), BlockedAddress> {
        if self.allow_all {
            return Ok(());
        }
        let Some(range) = internal_range(address) else {
            return Ok(());
        };
        // An allowed range may be given in either family; compare the canonical form too.
        let canonical = canonical(address);
        if self
            .allowed
            .iter()
            .any(|net| net.contains(&address) || net.contains(&canonical))
        {
            return Ok(());
        }
        Err(BlockedAddress { address, range })
    }
}

/// The kind of non-public range an address is in, or `None` for a public address.
pub fn internal_range(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => internal_v4(v4),
            None => internal_v6(v6),
        },
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let range = match (a, b, c) {
        (0, _, _) => "unspecified (0.0.0.0/8)",
        (10, _, _) => "private (10.0.0.0/8)",
        (100, 64..=127, _) => "carrier-grade NAT (100.64.0.0/10)",
        (127, _, _) => "loopback",
        (169, 254, _) => "link-local (169.254.0.0/16, cloud metadata)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 0, 0) => "IETF protocol assignment (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 168, _) => "private (192.168.0.0/16)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved or broadcast",
        _ => return None,
    };
    Some(range)
}

fn internal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified (::)");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    let range = match segments[0] {
        0xfc00..=0xfdff => "unique local (fc00::/7)",
        0xfe80..=0xfebf => "link-local (fe80::/10)",
        0xfec0..=0xfeff => "site-local (fec0::/10)",
        0xff00..=0xffff => "multicast",
        0x0100 if segments[1..4] == [0, 0, 0] => "discard (100::/64)",
        0x2001 if segments[1] == 0x0db8 => "documentation",
        _ => return None,
    };
    Some(range)
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:aabb:ccdd::`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        [0, 0, 0, 0, 0, 0, _, _] if !ip.is_loopback() && !ip.is_unspecified() => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(address, IpAddr::V4),
        IpAddr::V4(_) => address,
    }
}

/// Whether an error (or any of its causes) is a refusal by the guard. Such failures are final: the
/// same address would be refused on every retry.
pub fn is_blocked(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<BlockedAddress>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// The connector's resolver: the system resolver, then the policy on every address it returns.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<TargetPolicy>,
}

impl GuardedResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: Arc<TargetPolicy>) -> Self {
        GuardedResolver { policy }
    }
}

type ResolveFuture = Pin<
    Box<
        dyn Future<
                Output = Result<
                    std::vec::IntoIter<SocketAddr>,
                    Box<dyn std::error::Error + Send + Sync>,
                >,
            > + Send,
    >,
>;

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = ResolveFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let mut allowed = Vec::with_capacity(resolved.len());
            let mut first_refusal = None;
            for address in resolved {
                match policy.check(address.ip()) {
                    Ok(()) => allowed.push(address),
                    Err(refusal) => first_refusal = first_refusal.or(Some(refusal)),
                }
            }
            // Connect only to permitted addresses; refuse when none is.
            match (allowed.is_empty(), first_refusal) {
                (true, Some(refusal)) => Err(refusal.into()),
                _ => Ok(allowed.into_iter()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(address: &str) -> bool {
        TargetPolicy::default()
            .check(address.parse().unwrap())
            .is_err()
    }

    #[test]
    fn internal_ranges_are_blocked_by_default() {
        for address in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
        ] {
            assert!(blocked(address), "{address} should be blocked");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for address in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!blocked(address), "{address} should pass");
        }
    }

    #[test]
    fn the_allow_list_opens_ranges_in_either_family() {
        let policy = TargetPolicy {
            allow_all: false,
            allowed: vec!["127.0.0.0/8".parse().unwrap()],
        };
        assert!(policy.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(policy.check("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(policy.check("10.0.0.1".parse().unwrap()).is_err());
        assert!(
            TargetPolicy {
                allow_all: true,
                allowed: vec![]
            }
            .check("10.0.0.1".parse().unwrap())
            .is_ok()
        );
    }

    #[test]
    fn a_refusal_names_the_address_and_its_range() {
        let error = TargetPolicy::default()
            .check("169.254.169.254".parse().unwrap())
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("refused to connect to 169.254.169.254: link-local"),
            "{error}"
        );
        assert!(is_blocked(&error));
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_at_resolution() {
        use tower::Service;
        let mut resolver = GuardedResolver::new(Arc::new(TargetPolicy::default()));
        let name: Name = "localhost".parse().unwrap();
        let error = resolver.call(name).await.unwrap_err();
        assert!(is_blocked(&*error), "{error}");
    }
}
