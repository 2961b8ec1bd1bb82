//! Where a webhook may send: its url parsed once, and the rule on addresses (no loopback,
//! private, link-local, shared, unspecified or IPv4-mapped private address unless the server
//! allows private webhooks), applied to the address actually connected to.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

/// A webhook url, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `https` (true) or `http`.
    pub tls: bool,
    /// The host name or address (IPv6 without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The `Host` header's value (authority as written).
    pub authority: String,
    /// Path and query (`/` at least).
    pub path: String,
}

/// Parses a webhook url: `http://` or `https://`, a host, no user info, ≤ 2 048 bytes.
pub fn parse(url: &str) -> Result<Target, String> {
    if url.len() > 2048 {
        return Err("must be at most 2048 bytes".into());
    }
    let uri: http::Uri = url.parse().map_err(|_| "is not a URL".to_string())?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("must be an http:// or https:// URL".into()),
    };
    let authority = uri.authority().ok_or("must name a host")?;
    if authority.as_str().contains('@') {
        return Err("must not hold user info".into());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err("must name a host".into());
    }
    Ok(Target {
        tls,
        host: host.to_owned(),
        port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        authority: authority.as_str().to_owned(),
        path: uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
    })
}

/// Whether an address is one webhooks may not reach by default: loopback, private,
/// link-local, shared (100.64/10), unspecified, broadcast, documentation, unique-local, or an
/// IPv4-mapped/compatible form of one.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let seg = v6.segments();
            // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96) embed an IPv4.
            let embedded = Ipv4Addr::new(
                (seg[6] >> 8) as u8,
                seg[6] as u8,
                (seg[7] >> 8) as u8,
                seg[7] as u8,
            );
            if (seg[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified())
                || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
            {
                return forbidden_v4(embedded);
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || seg[0] == 0x2001 && seg[1] == 0x0db8 // documentation
                || v6.is_multicast()
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0 // "this network" 0/8
        || (a == 100 && (64..128).contains(&b)) // shared address space 100.64/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments 192.0.0/24
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || a >= 240 // reserved 240/4
}

/// The addresses `target` resolves to, refused if any is forbidden (so a name cannot mix a
/// public address with a private one and win on a retry).
pub async fn resolve(target: &Target, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, target.port)],
        Err(_) => tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("{} resolves to no address", target.host));
    }
    if !allow_private && let Some(bad) = addrs.iter().find(|a| is_forbidden(a.ip())) {
        return Err(format!(
            "{} resolves to {}, a private, loopback or reserved address",
            target.host,
            bad.ip()
        ));
    }
    Ok(addrs)
}

/// Connects to `target`, checking the address connected to (after resolution, at every
/// delivery).
pub async fn connect(
    target: &Target,
    allow_private: bool,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let mut last = String::from("no address");
    for addr in resolve(target, allow_private).await? {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let peer = stream.peer_addr().map_err(|e| e.to_string())?;
                if !allow_private && is_forbidden(peer.ip()) {
                    return Err(format!("connected to a forbidden address {}", peer.ip()));
                }
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = format!("connecting to {addr}: {e}"),
            Err(_) => last = format!("connecting to {addr}: timed out"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_and_mapped_addresses_are_forbidden() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(is_forbidden(bad.parse().unwrap()), "{bad}");
        }
        for good in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "100.128.0.1"] {
            assert!(!is_forbidden(good.parse().unwrap()), "{good}");
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_when_connecting() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = parse(&format!("http://localhost:{port}/")).unwrap();
        let refused = connect(&target, false, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(refused.contains("private"), "{refused}");
        assert!(connect(&target, true, Duration::from_secs(1)).await.is_ok());
    }

    #[test]
    fn urls_are_http_or_https_with_a_host() {
        let t = parse("https://hooks.example.com/in?x=1").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path.as_str()),
            (true, "hooks.example.com", 443, "/in?x=1")
        );
        let t = parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 8080, "/")
        );
        for bad in [
            "ftp://x/",
            "example.com/x",
            "http://user:pw@x/",
            "https:///x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
