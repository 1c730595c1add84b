//! Where the service's own outbound requests (webhook deliveries) may go. A tenant chooses the URL, so the
//! address is judged after DNS resolution, on every request, by the resolver the HTTP client connects with:
//! a name that resolves to a refused address (DNS rebinding included) is never connected to, and redirects
//! are not followed. Link-local addresses (cloud metadata services) are refused always; loopback and private
//! networks unless `webhooks.allow_private_addresses`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Why an address is refused, or `None` when requests may reach it.
pub(crate) fn refusal(ip: IpAddr, allow_private: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4, allow_private),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => refusal_v4(v4, allow_private),
            None => refusal_v6(v6, allow_private),
        },
    }
}

fn refusal_v4(ip: Ipv4Addr, allow_private: bool) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_link_local() || ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || a == 0 {
        return Some("a link-local, unspecified or multicast address");
    }
    // 100.100.100.200 is a cloud metadata service outside the link-local range.
    if ip == Ipv4Addr::new(100, 100, 100, 200) {
        return Some("a cloud metadata address");
    }
    let private = ip.is_loopback()
        || ip.is_private()
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier-grade NAT)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240; // reserved
    (private && !allow_private).then_some("a loopback or private address")
}

fn refusal_v6(ip: Ipv6Addr, allow_private: bool) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_unspecified() || ip.is_multicast() || (first & 0xffc0) == 0xfe80 {
        return Some("a link-local, unspecified or multicast address");
    }
    // fd00:ec2::254 is a cloud metadata service inside the unique-local range.
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some("a cloud metadata address");
    }
    let private = ip.is_loopback() || (first & 0xfe00) == 0xfc00;
    (private && !allow_private).then_some("a loopback or private address")
}

/// Resolves names for the outbound client and keeps only addresses it may reach.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                resolved.iter().copied().filter(|a| refusal(a.ip(), allow_private).is_none()).collect();
            if allowed.is_empty() {
                let why = resolved.first().and_then(|a| refusal(a.ip(), allow_private)).unwrap_or("no address");
                return Err(format!("{host} resolves to {why}, which webhooks may not reach").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// The HTTP client for outbound requests: guarded resolution, no redirects, bounded time.
pub(crate) fn client(allow_private: bool) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("Tenantry-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Why `url` may not be requested as written (an address literal or `localhost` that is refused); names are
/// judged again when each request resolves them.
pub(crate) fn refusal_of_url(url: &reqwest::Url, allow_private: bool) -> Option<String> {
    match url.host() {
        None => Some("the URL has no host".into()),
        Some(url::Host::Ipv4(ip)) => refusal(IpAddr::V4(ip), allow_private).map(|why| format!("{ip} is {why}")),
        Some(url::Host::Ipv6(ip)) => refusal(IpAddr::V6(ip), allow_private).map(|why| format!("{ip} is {why}")),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let loopback = name == "localhost" || name.ends_with(".localhost");
            (loopback && !allow_private).then(|| format!("{name} is a loopback address"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn metadata_and_link_local_are_refused_even_when_private_is_allowed() {
        for a in [
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "::",
            "100.100.100.200",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
        ] {
            assert!(refusal(ip(a), true).is_some(), "{a}");
        }
    }

    #[test]
    fn private_networks_are_refused_unless_allowed() {
        for a in
            ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "::1", "fd12::1", "::ffff:10.0.0.1"]
        {
            assert!(refusal(ip(a), false).is_some(), "{a}");
            assert!(refusal(ip(a), true).is_none(), "{a}");
        }
    }

    #[test]
    fn public_addresses_are_reachable() {
        for a in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert!(refusal(ip(a), false).is_none(), "{a}");
        }
    }

    #[test]
    fn urls_naming_loopback_are_refused_before_any_lookup() {
        let url = |s: &str| reqwest::Url::parse(s).expect("a url");
        assert!(refusal_of_url(&url("http://localhost:8080/hook"), false).is_some());
        assert!(refusal_of_url(&url("http://api.LOCALHOST./hook"), false).is_some());
        assert!(refusal_of_url(&url("http://[::1]/hook"), false).is_some());
        assert!(refusal_of_url(&url("http://169.254.169.254/latest"), true).is_some());
        assert!(refusal_of_url(&url("http://127.0.0.1:9/hook"), true).is_none());
        assert!(refusal_of_url(&url("https://hooks.example.com/x"), false).is_none());
    }

    #[tokio::test]
    async fn the_client_never_connects_to_a_name_that_resolves_to_a_refused_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        // `localhost` stands for any name whose DNS answer is loopback (a rebinding attack's second answer).
        let refused = client(false).expect("client").post(format!("http://localhost:{port}/hook")).send().await;
        let why = format!("{:?}", refused.expect_err("refused"));
        assert!(why.contains("may not reach"), "{why}");
        let accepted = tokio::spawn(async move { listener.accept().await.map(drop) });
        let allowed = client(true).expect("client").post(format!("http://localhost:{port}/hook")).send();
        let _ = tokio::time::timeout(Duration::from_millis(500), allowed).await;
        assert!(accepted.await.expect("joined").is_ok(), "with private addresses allowed it connects");
    }
}
