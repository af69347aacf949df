//! `HOST[:PORT]` as an agent advertises it and as peers dial it: one parser for every place
//! that reads an address (IPv6 hosts in brackets, `[::1]:29500`).

use std::fmt;

/// A host and, where one was given, a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// The host: a name, an IPv4 address, or an IPv6 address without its brackets.
    pub host: String,
    /// The port; `None` when the text had none.
    pub port: Option<u16>,
}

impl HostPort {
    /// Parses `HOST` or `HOST:PORT` (`[V6]` or `[V6]:PORT` for IPv6). The error says what is
    /// wrong, for a message that names the text and where it came from.
    pub fn parse(text: &str) -> Result<HostPort, &'static str> {
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or("an IPv6 address needs its closing ]")?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err("expected HOST or HOST:PORT"),
            }
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => (host, Some(port)),
                Some(_) => return Err("write an IPv6 address in brackets: [ADDR]:PORT"),
                None => (text, None),
            }
        };
        if host.is_empty() {
            return Err("the host is empty");
        }
        let port = match port {
            None => None,
            Some(port) => Some(
                port.parse::<u16>()
                    .map_err(|_| "the port is not a number from 0 to 65535")?,
            ),
        };
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }

    /// Parses `HOST:PORT`, where the port is required.
    pub fn parse_with_port(text: &str) -> Result<(String, u16), &'static str> {
        let HostPort { host, port } = HostPort::parse(text)?;
        Ok((host, port.ok_or("expected HOST:PORT")?))
    }

    /// The host of `text`, or `text` itself when it does not parse: for grouping addresses by
    /// host, where a malformed address is simply a host of its own.
    pub fn host_of(text: &str) -> String {
        HostPort::parse(text).map_or_else(|_| text.to_string(), |a| a.host)
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HostPort;

    fn hp(host: &str, port: Option<u16>) -> HostPort {
        HostPort {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn hosts_ports_and_bracketed_v6_parse_and_print_back() {
        for (text, want) in [
            ("10.0.0.5:29500", hp("10.0.0.5", Some(29500))),
            ("node-3", hp("node-3", None)),
            ("[::1]:80", hp("::1", Some(80))),
            ("[fe80::1]", hp("fe80::1", None)),
            ("h:0", hp("h", Some(0))),
        ] {
            let got = HostPort::parse(text).unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), text);
        }
        assert_eq!(HostPort::parse_with_port("[::1]:7").unwrap(), ("::1".to_string(), 7));
    }

    #[test]
    fn malformed_addresses_say_what_is_wrong() {
        assert_eq!(HostPort::parse(":80"), Err("the host is empty"));
        assert_eq!(
            HostPort::parse("h:http"),
            Err("the port is not a number from 0 to 65535")
        );
        assert_eq!(
            HostPort::parse("h:70000"),
            Err("the port is not a number from 0 to 65535")
        );
        assert_eq!(
            HostPort::parse("::1:80"),
            Err("write an IPv6 address in brackets: [ADDR]:PORT")
        );
        assert_eq!(HostPort::parse("[::1"), Err("an IPv6 address needs its closing ]"));
        assert_eq!(HostPort::parse("[::1]x"), Err("expected HOST or HOST:PORT"));
        assert_eq!(HostPort::parse_with_port("h"), Err("expected HOST:PORT"));
        assert_eq!(HostPort::host_of("a:1"), "a");
        assert_eq!(HostPort::host_of("[::1]:2"), "::1");
        assert_eq!(HostPort::host_of(":bad"), ":bad");
    }
}
