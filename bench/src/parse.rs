//! Flag values of `herald-bench`, checked once as clap reads them. Every target must be a
//! loopback address (127.0.0.0/8 or `localhost`): the bench generates load and must never point
//! it anywhere else.

use std::net::{Ipv4Addr, SocketAddrV4};

use url::Host;

use crate::conn::SseEndpoint;

/// The addresses of `--source-addrs` (a newtype: clap would read a bare `Vec` as many values).
#[derive(Debug, Clone)]
pub struct SourceAddrs(pub Vec<Ipv4Addr>);

/// `host[:port]` of a URL, refused unless it names a 127.0.0.0/8 address or `localhost`.
fn loopback_authority(authority: &str) -> Result<SocketAddrV4, String> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse()
                .map_err(|_| format!("bad port in {authority}"))?,
        ),
        None => (authority, 80),
    };
    let ip = if host.eq_ignore_ascii_case("localhost") {
        Ipv4Addr::LOCALHOST
    } else {
        host.parse::<Ipv4Addr>().map_err(|_| {
            format!("{host} is not an IPv4 address (the bench targets 127.0.0.0/8 only)")
        })?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "{ip} is not a loopback address (the bench targets 127.0.0.0/8 only)"
        ));
    }
    Ok(SocketAddrV4::new(ip, port))
}

pub fn parse_sub_url(raw: &str) -> Result<SseEndpoint, String> {
    let rest = raw.strip_prefix("http://").ok_or(
        "the stream URL must start with http:// (the bench's stream client is plain HTTP/1.1)",
    )?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    if path.contains(|c: char| c.is_ascii_whitespace() || c.is_ascii_control()) {
        return Err("the stream URL must not contain spaces or control characters".into());
    }
    Ok(SseEndpoint {
        addr: loopback_authority(authority)?,
        authority: authority.to_owned(),
        path_template: path.to_owned(),
    })
}

/// hold-tls's stream URL: an https:// loopback URL template that names `{user}`.
pub fn parse_tls_url(raw: &str) -> Result<String, String> {
    if !raw.starts_with("https://") {
        return Err("the TLS stream URL must start with https://".into());
    }
    if !raw.contains("{user}") {
        return Err("the TLS stream URL must name {user}".into());
    }
    parse_pub_url(raw)
}

pub fn parse_pub_url(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(&raw.replace("{user}", "u")).map_err(|error| error.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("expected an http:// or https:// URL".into());
    }
    let loopback = match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if !loopback {
        return Err("the bench targets loopback addresses only (127.0.0.0/8, localhost)".into());
    }
    Ok(raw.to_owned())
}

/// A loopback URL template that names `{user}`: each user's subscriptions are their own.
pub fn parse_push_subscription_url(raw: &str) -> Result<String, String> {
    if !raw.contains("{user}") {
        return Err("the subscription URL must contain {user}".into());
    }
    parse_pub_url(raw)
}

pub fn parse_body(raw: &str) -> Result<String, String> {
    if !raw.contains("{ts}") {
        return Err("the body must contain {ts}, where the send time goes".into());
    }
    Ok(raw.to_owned())
}

pub fn parse_batch_body(raw: &str) -> Result<String, String> {
    let body = parse_body(raw)?;
    if !body.contains("{users}") {
        return Err("the body must contain {users}, where the list of user ids goes".into());
    }
    Ok(body)
}

pub fn parse_header(raw: &str) -> Result<(String, String), String> {
    let (name, value) = raw.split_once(':').ok_or("expected NAME: VALUE")?;
    let (name, value) = (name.trim(), value.trim());
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("{name:?} is not a header name"));
    }
    if value.chars().any(|c| c.is_ascii_control()) {
        return Err("a header value must not contain control characters".into());
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// `A`, `A-B` (inclusive) or `A,B,...`, every address in 127.0.0.0/8.
pub fn parse_source_addrs(raw: &str) -> Result<SourceAddrs, String> {
    let parse = |text: &str| -> Result<Ipv4Addr, String> {
        let ip: Ipv4Addr = text
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IPv4 address"))?;
        if !ip.is_loopback() {
            return Err(format!("{ip} is not a loopback address"));
        }
        Ok(ip)
    };
    let addrs: Vec<Ipv4Addr> = match raw.split_once('-') {
        Some((first, last)) => {
            let (first, last) = (u32::from(parse(first)?), u32::from(parse(last)?));
            if last < first || last - first >= 65_536 {
                return Err(
                    "a range goes from low to high and spans at most 65,536 addresses".into(),
                );
            }
            (first..=last).map(Ipv4Addr::from).collect()
        }
        None => raw.split(',').map(parse).collect::<Result<_, _>>()?,
    };
    Ok(SourceAddrs(addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(parse_sub_url("http://127.0.0.1:3000/events/{user}").is_ok());
        assert!(parse_sub_url("http://localhost:3000/events/{user}").is_ok());
        assert!(parse_sub_url("http://10.0.0.1:3000/events/{user}").is_err());
        assert!(parse_sub_url("https://127.0.0.1/events").is_err());
        assert!(parse_pub_url("http://127.0.0.9:3000/api/notifications/{user}").is_ok());
        assert!(parse_pub_url("http://192.168.1.1/api/broadcast").is_err());
        assert!(parse_pub_url("http://example.com/api/broadcast").is_err());
        let subscriptions = "http://127.0.0.1:3000/api/push/{user}/subscriptions";
        assert!(parse_push_subscription_url(subscriptions).is_ok());
        assert!(parse_push_subscription_url("http://127.0.0.1:3000/api/push/a/s").is_err());
        assert!(parse_push_subscription_url("http://10.0.0.1/api/push/{user}/s").is_err());
    }

    #[test]
    fn source_ranges_are_inclusive_and_loopback_only() {
        let SourceAddrs(addrs) = parse_source_addrs("127.0.0.2-127.0.1.1").unwrap();
        assert_eq!(addrs.len(), 256);
        assert_eq!(addrs[255], Ipv4Addr::new(127, 0, 1, 1));
        assert_eq!(parse_source_addrs("127.0.0.5").unwrap().0.len(), 1);
        assert!(parse_source_addrs("10.0.0.1-10.0.0.5").is_err());
    }

    #[test]
    fn a_batch_body_names_both_the_users_and_the_send_time() {
        assert!(parse_batch_body(r#"{"users":{users},"message":"{ts}"}"#).is_ok());
        let no_users = parse_batch_body(r#"{"users":["a"],"message":"{ts}"}"#);
        assert!(no_users.unwrap_err().contains("{users}"));
        assert!(parse_batch_body(r#"{"users":{users}}"#).is_err());
    }

    #[test]
    fn headers_split_at_the_first_colon() {
        assert_eq!(
            parse_header("Authorization: Bearer a:b").unwrap(),
            ("Authorization".to_owned(), "Bearer a:b".to_owned())
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("X: a\r\nY: b").is_err());
    }
}
