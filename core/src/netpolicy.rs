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
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if is_never_allowed(ip) {
            return Err(format!(
                "{ip} is a link-local, metadata, multicast or unspecified address, which targets may not use"
            ));
        }
        if !self.allow_private && is_private(ip) {
            return Err(format!(
                "{ip} is a loopback or private address, and this server does not allow private endpoints"
            ));
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
            (true, Some(reason)) => Err(format!("{host} resolves to {reason}")),
            _ => Ok(allowed),
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

fn is_never_allowed(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                // Alibaba Cloud's metadata service.
                || v4 == Ipv4Addr::new(100, 100, 100, 200)
        }
        IpAddr::V6(v6) => {
            v6.is_unicast_link_local()
                || v6.is_unspecified()
                || v6.is_multicast()
                // AWS's IPv6 metadata service.
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
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
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local(),
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
            "::ffff:10.0.0.1",
        ] {
            assert!(closed.check(ip(private)).is_err(), "{private}");
        }
        for public in ["8.8.8.8", "2606:4700::1111", "100.128.0.1"] {
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
