//! Which push endpoints herald will contact (docs/protocol.md#web-push). A subscription names
//! a URL that herald then fetches from inside the network it runs in, so that URL is a way to
//! reach internal hosts unless it is held to rules: `https`, a host on the allow-list (the
//! browsers' push services by default), and an address that is public. The address rule is
//! applied to what the name resolves to at the moment of each connection (see
//! [`PublicOnly`]), so a name that resolves differently later still cannot reach inside.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// The hosts of the push services browsers use: Chrome and Edge (FCM), Firefox, Safari, and
/// Windows.
pub const DEFAULT_ALLOW: &[&str] = &[
    "*.googleapis.com",
    "*.push.services.mozilla.com",
    "*.push.apple.com",
    "*.notify.windows.com",
];

/// One `--push-endpoint-allow` entry: an exact host, or `*.` and a suffix (which matches hosts
/// under it, not the suffix itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    Under(String),
}

impl HostPattern {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        let (under, host) = match raw.strip_prefix("*.") {
            Some(suffix) => (true, suffix.to_owned()),
            None => (false, raw.clone()),
        };
        let valid = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(format!(
                "{raw:?}: expected a host like push.example.com or *.example.com"
            ));
        }
        Ok(if under {
            Self::Under(host)
        } else {
            Self::Exact(host)
        })
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(exact) => host == exact,
            Self::Under(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

/// The rules an endpoint must pass before herald stores or contacts it.
#[derive(Debug, Clone)]
pub struct EndpointPolicy {
    allow: Vec<HostPattern>,
    /// For tests and local development: any scheme of http(s), any host, any address.
    insecure: bool,
}

impl EndpointPolicy {
    pub fn new(allow: Vec<HostPattern>, insecure: bool) -> Self {
        Self { allow, insecure }
    }

    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// Whether herald may contact `endpoint`, judged by its URL alone; the address it resolves
    /// to is judged when connecting ([`PublicOnly`]).
    pub fn check(&self, endpoint: &url::Url) -> Result<(), String> {
        if self.insecure {
            return Ok(());
        }
        if endpoint.scheme() != "https" {
            return Err("endpoint must be https".into());
        }
        let host = match endpoint.host() {
            Some(url::Host::Domain(host)) => host.trim_end_matches('.').to_ascii_lowercase(),
            Some(_) => return Err("endpoint must name its push service, not an address".into()),
            None => return Err("endpoint has no host".into()),
        };
        if !self.allow.iter().any(|pattern| pattern.matches(&host)) {
            return Err(format!(
                "endpoint host {host} is not an allowed push service (--push-endpoint-allow)"
            ));
        }
        Ok(())
    }
}

/// Whether herald must never connect to `ip` on a user's behalf: loopback, private,
/// link-local, shared, documentation, multicast and unspecified addresses, and IPv6 ones that
/// embed such an IPv4 address.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let segments = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00 // unique local
                || (segments[0] & 0xffc0) == 0xfe80 // link-local
                || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || segments[0] == 0x2001 && segments[1] == 0x0db8 // documentation
                || segments[0] == 0x0064 && segments[1] == 0xff9b // NAT64 of any IPv4
                || segments[0] == 0x2002 // 6to4 of any IPv4
                || segments[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible
        }
    }
}

fn is_internal_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
        || (a == 192 && b == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

/// A resolver for the push client that hands it only public addresses: a name that resolves to
/// nothing else is refused, so no endpoint reaches an internal host whatever its DNS says.
/// With `--push-insecure-endpoints` every address passes.
#[derive(Clone)]
pub struct PublicOnly {
    pub insecure: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let insecure = self.insecure;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found
                .into_iter()
                .filter(|address| insecure || !is_internal(address.ip()))
                .collect();
            if public.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} resolves to no public address").into();
                return Err(refused);
            }
            let addresses: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(addresses)
        })
    }
}

impl PublicOnly {
    pub fn shared(insecure: bool) -> Arc<Self> {
        Arc::new(Self { insecure })
    }
}

/// An address as a URL host, checked: for an endpoint given as an IP literal, which the
/// resolver never sees.
pub fn literal_is_internal(endpoint: &url::Url) -> bool {
    match endpoint.host() {
        Some(url::Host::Ipv4(v4)) => is_internal(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => is_internal(IpAddr::V6(v6)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> EndpointPolicy {
        EndpointPolicy::new(
            allow
                .iter()
                .map(|raw| HostPattern::parse(raw).unwrap())
                .collect(),
            false,
        )
    }

    fn url(raw: &str) -> url::Url {
        url::Url::parse(raw).unwrap()
    }

    #[test]
    fn the_default_allow_list_takes_the_browsers_push_services_and_nothing_else() {
        let rules = policy(DEFAULT_ALLOW);
        for ok in [
            "https://fcm.googleapis.com/fcm/send/abc",
            "https://updates.push.services.mozilla.com/wpush/v2/abc",
            "https://web.push.apple.com/abc",
            "https://wns2-par02p.notify.windows.com/w/?token=abc",
            "https://FCM.googleapis.com./x",
        ] {
            assert_eq!(rules.check(&url(ok)), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("http://fcm.googleapis.com/x", "https"),
            ("https://googleapis.com/x", "not an allowed"),
            ("https://evilgoogleapis.com/x", "not an allowed"),
            (
                "https://fcm.googleapis.com.evil.example/x",
                "not an allowed",
            ),
            ("https://127.0.0.1/x", "not an address"),
            ("https://[::1]/x", "not an address"),
            ("https://localhost/x", "not an allowed"),
        ] {
            let error = rules.check(&url(bad)).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn an_exact_host_matches_only_itself() {
        let rules = policy(&["push.example.com"]);
        assert_eq!(rules.check(&url("https://push.example.com/a")), Ok(()));
        assert!(rules.check(&url("https://a.push.example.com/a")).is_err());
        assert!(HostPattern::parse("*.").is_err());
        assert!(HostPattern::parse("exa mple.com").is_err());
        assert!(HostPattern::parse("*.*.example.com").is_err());
    }

    #[test]
    fn internal_addresses_are_refused_and_public_ones_pass() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in ["142.250.74.106", "2a00:1450:4001:80b::200a", "8.8.8.8"] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn insecure_endpoints_lift_every_rule() {
        let rules = EndpointPolicy::new(Vec::new(), true);
        assert_eq!(rules.check(&url("http://127.0.0.1:9/x")), Ok(()));
    }
}
