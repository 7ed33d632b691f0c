//! Outbound address policy for user-supplied endpoints (S3 endpoints, SSH
//! hosts): the SSRF surface of a multi-tenant service.
//!
//! Link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10,
//! fd00:ec2::254, …) are always refused. Loopback and private ranges are
//! allowed only when `allow_private_endpoints` is on (the embedded default;
//! multi-tenant operators turn it off). Addresses are checked when a target
//! is saved and again, on the resolved address, every time Cairn connects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which destinations outbound connections may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressPolicy {
    pub allow_private: bool,
}

impl AddressPolicy {
    /// Refuses `ip` with the reason, or allows it.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        let ip = match ip {
            // An IPv4 address in IPv6 clothing is judged as IPv4.
            IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if is_never_allowed(ip) {
            // The address stays out of the reason: a tenant who sent a name
            // must not learn what it resolves to inside the network.
            return Err(
                "the address is a link-local, metadata, multicast or unspecified one, which targets may not use"
                    .into(),
            );
        }
        if !self.allow_private && is_private(ip) {
            return Err(
                "the address is a loopback or private one, which this server refuses (allow_private_endpoints: false, CAIRN_ALLOW_PRIVATE_ENDPOINTS)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Resolves `host:port` and returns the addresses the policy allows,
    /// or why none is.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect();
        if addresses.is_empty() {
            return Err(format!("{host} does not resolve to any address"));
        }
        let mut refusal = None;
        let allowed: Vec<SocketAddr> = addresses
            .into_iter()
            .filter(|address| match self.check(address.ip()) {
                Ok(()) => true,
                Err(reason) => {
                    refusal = Some(reason);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), refusal) {
            (true, Some(reason)) => {
                Err(format!("the host resolves to a refused address: {reason}"))
            }
            _ => Ok(allowed),
        }
    }

    /// Refuses a URL whose host is a literal address the policy refuses
    /// (names are checked by [`PolicyResolver`] when connecting).
    pub fn check_url(&self, url: &url::Url) -> Result<(), String> {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => Ok(()),
            None => Err("the URL has no host".into()),
        }
    }

    /// The check made when a target is saved: an IP literal must pass; a
    /// name must not resolve to a refused address (a name that does not
    /// resolve now is accepted: every connection checks again).
    pub async fn check_host_on_save(&self, host: &str) -> Result<(), String> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.check(ip);
        }
        match self.resolve(bare, 0).await {
            Err(reason) if reason.contains(" resolves to ") => Err(reason),
            _ => Ok(()),
        }
    }
}

/// A resolver for HTTP clients (S3 targets, webhooks, Slack) that drops
/// the addresses the policy refuses, at every connection (not only when
/// the endpoint was saved). Literal addresses never reach a resolver: check
/// them with [`AddressPolicy::check_url`].
#[derive(Debug, Clone, Copy)]
pub struct PolicyResolver(pub AddressPolicy);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses = policy.resolve(&host, 0).await?;
            let addresses: Box<dyn Iterator<Item = SocketAddr> + Send> =
                Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

/// The IPv4 address an IPv6 address carries: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4
/// (`2002::/16`). Such addresses reach the IPv4 host, so they are judged as
/// it.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = v6.segments();
    let octets = v6.octets();
    let tail = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    if let Some(mapped) = v6.to_ipv4_mapped() {
        return Some(mapped);
    }
    if segments[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_unspecified() && !v6.is_loopback() {
        return Some(tail);
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail);
    }
    if segments[0] == 0x2002 {
        return Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]));
    }
    None
}

fn is_never_allowed(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, ..] = v4.octets();
            v4.is_link_local()
                // "This network", 0.0.0.0/8.
                || a == 0
                || v4.is_multicast()
                || v4.is_broadcast()
                // Metadata services: Alibaba Cloud, Azure's wire server,
                // Oracle Cloud.
                || v4 == Ipv4Addr::new(100, 100, 100, 200)
                || v4 == Ipv4Addr::new(168, 63, 129, 16)
                || v4 == Ipv4Addr::new(192, 0, 0, 192)
        }
        IpAddr::V6(v6) => {
            let [first, second, ..] = v6.segments();
            v6.is_unicast_link_local()
                || v6.is_unspecified()
                || v6.is_multicast()
                // AWS's IPv6 metadata service.
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                // Local-use NAT64 (64:ff9b:1::/48) and Teredo (2001::/32)
                // hide the IPv4 host they reach.
                || (first == 0x64 && second == 0xff9b)
                || (first == 0x2001 && second == 0)
        }
    }
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                // Shared address space (carrier-grade NAT), 100.64.0.0/10.
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            // Deprecated site-local fec0::/10 is private too.
            v6.is_loopback() || v6.is_unique_local() || (v6.segments()[0] & 0xffc0) == 0xfec0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn metadata_and_link_local_are_always_refused() {
        let open = AddressPolicy {
            allow_private: true,
        };
        for refused in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "255.255.255.255",
            "100.100.100.200",
            "168.63.129.16",
            "0.1.2.3",
            "::169.254.169.254",
            "64:ff9b::169.254.169.254",
            "64:ff9b:1::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(open.check(ip(refused)).is_err(), "{refused}");
        }
        assert!(open.check(ip("127.0.0.1")).is_ok());
        assert!(open.check(ip("10.1.2.3")).is_ok());
        assert!(open.check(ip("8.8.8.8")).is_ok());
    }

    #[test]
    fn private_ranges_follow_the_setting() {
        let closed = AddressPolicy {
            allow_private: false,
        };
        for private in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fd12::1",
            "fec0::1",
            "::ffff:10.0.0.1",
            "64:ff9b::10.0.0.1",
            "2002:0a00:0001::1",
        ] {
            assert!(closed.check(ip(private)).is_err(), "{private}");
        }
        for public in [
            "8.8.8.8",
            "2606:4700::1111",
            "100.128.0.1",
            "64:ff9b::8.8.8.8",
        ] {
            assert!(closed.check(ip(public)).is_ok(), "{public}");
        }
    }

    #[tokio::test]
    async fn names_are_judged_by_what_they_resolve_to() {
        let closed = AddressPolicy {
            allow_private: false,
        };
        assert!(closed.check_host_on_save("localhost").await.is_err());
        assert!(closed.resolve("localhost", 22).await.is_err());
        let open = AddressPolicy {
            allow_private: true,
        };
        assert!(!open.resolve("localhost", 22).await.unwrap().is_empty());
        assert!(open.check_host_on_save("[::1]").await.is_ok());
        // A name that does not resolve now is checked again at connection.
        assert!(open
            .check_host_on_save("no-such-host.invalid")
            .await
            .is_ok());
    }
}
