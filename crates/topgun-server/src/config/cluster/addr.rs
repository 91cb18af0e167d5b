//! The addresses of cluster settings, as text checked once: hosts peers dial (`--advertise-host`),
//! seed entries (`host:port`) and DNS discovery (`dns:<name>:<port>`). Hostnames stay
//! unresolved: `localhost` may be `::1` or `127.0.0.1` depending on the machine, and a DNS name
//! may change address, so they are resolved each time they are dialled.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// The longest DNS name (RFC 1035 §2.3.4).
const HOSTNAME_BYTES_MAX: usize = 253;

/// One `--seed-nodes` entry: another member's cluster address, kept as written (a hostname
/// is resolved when dialled, and every address it resolves to is tried).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeedAddr {
    /// A hostname (in lower case) or an IP address (IPv6 without brackets).
    pub host: String,
    /// 1..=65535: a seed's port is where it listens, never "any".
    pub port: u16,
}

impl SeedAddr {
    /// `host:port`, or `[v6]:port`; `None` if the host or the port is not one.
    pub fn parse(entry: &str) -> Option<Self> {
        let (host, port) = split_port(entry.trim())?;
        Some(Self {
            host: host_of(host)?,
            port,
        })
    }
}

impl fmt::Display for SeedAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&host_port(&self.host, self.port))
    }
}

/// How a member finds the others besides its seeds (`--discovery`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// `dns:<name>:<port>`: every A and AAAA record of `name` is a seed at `port`, resolved
    /// again while the cluster forms (a Kubernetes headless service).
    Dns { name: String, port: u16 },
}

impl Discovery {
    /// `dns:<name>:<port>`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.trim().strip_prefix("dns:")?;
        let (name, port) = split_port(rest)?;
        Some(Self::Dns {
            name: hostname(name)?,
            port,
        })
    }
}

/// `host` and a port of 1..=65535 from `host:port`; an IPv6 host must be in brackets, or its
/// last group could not be told from the port.
fn split_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    Some((host, port))
}

/// A host peers can dial: an IP address other than "any" (IPv6 with or without brackets),
/// or a hostname. IP addresses come back in their canonical text, hostnames in lower case.
pub(super) fn host_of(text: &str) -> Option<String> {
    let text = text.trim();
    let unbracketed = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .filter(|t| t.parse::<Ipv6Addr>().is_ok())
        .unwrap_or(text);
    match unbracketed.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => None,
        Ok(ip) => Some(ip.to_string()),
        Err(_) => hostname(text),
    }
}

/// A DNS name: letters, digits, `-` and `_` in dot-separated labels, at most 253 bytes; in
/// lower case, as DNS compares names.
fn hostname(text: &str) -> Option<String> {
    let name = text.strip_suffix('.').unwrap_or(text);
    let label_ok = |label: &str| {
        !label.is_empty()
            && !label.starts_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let ok = !name.is_empty() && name.len() <= HOSTNAME_BYTES_MAX && name.split('.').all(label_ok);
    ok.then(|| name.to_ascii_lowercase())
}

/// `host:port`, with an IPv6 host in brackets.
pub(super) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(host: &str, port: u16) -> SeedAddr {
        SeedAddr {
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn seeds_are_host_and_port_with_ipv6_in_brackets() {
        assert_eq!(
            SeedAddr::parse("localhost:9081"),
            Some(seed("localhost", 9081))
        );
        assert_eq!(
            SeedAddr::parse(" Node-1.Svc:1 "),
            Some(seed("node-1.svc", 1))
        );
        assert_eq!(
            SeedAddr::parse("10.0.0.7:65535"),
            Some(seed("10.0.0.7", 65535))
        );
        assert_eq!(SeedAddr::parse("[::1]:9000"), Some(seed("::1", 9000)));
        for bad in [
            "",
            "localhost",
            ":9000",
            "localhost:0",
            "localhost:65536",
            "localhost:x",
            "::1:9000",
            "[::1:9000",
            "0.0.0.0:9000",
            "[::]:9000",
            "a b:9000",
            "-a:9000",
            "a..b:9000",
            "http://a:9000",
        ] {
            assert_eq!(SeedAddr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn seeds_print_as_they_are_dialled() {
        assert_eq!(
            SeedAddr::parse("[::1]:9000").unwrap().to_string(),
            "[::1]:9000"
        );
        assert_eq!(SeedAddr::parse("A:1").unwrap().to_string(), "a:1");
    }

    #[test]
    fn dns_discovery_names_a_host_and_a_port() {
        assert_eq!(
            Discovery::parse("dns:topgun-headless.default.svc.cluster.local:9000"),
            Some(Discovery::Dns {
                name: "topgun-headless.default.svc.cluster.local".into(),
                port: 9000
            })
        );
        for bad in [
            "dns:svc",
            "dns::9000",
            "dns:svc:0",
            "srv:svc:9000",
            "svc:9000",
            "dns:a b:1",
        ] {
            assert_eq!(Discovery::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn hosts_are_specific_addresses_or_names() {
        assert_eq!(host_of("[::1]").as_deref(), Some("::1"));
        assert_eq!(host_of("::1").as_deref(), Some("::1"));
        assert_eq!(host_of("Pod-0.Svc").as_deref(), Some("pod-0.svc"));
        assert_eq!(host_of("0.0.0.0"), None);
        assert_eq!(host_of("::"), None);
        assert_eq!(host_of(""), None);
        assert_eq!(host_port("::1", 80), "[::1]:80");
        assert_eq!(host_port("a", 80), "a:80");
    }
}
