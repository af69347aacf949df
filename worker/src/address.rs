//! The address a `worker serve` agent advertises to its peers, and the port behind it.
//!
//! Rank 0 of a gang hosts the rendezvous store on the port of its advertised address; the other
//! ranks only dial it (their own transports listen on ports the kernel picks). Several agents on
//! one node therefore need one port each: `--advertise HOST` without a port (or with port 0)
//! takes a free one from the kernel and keeps it bound, so no other process (nor one of this
//! node's outgoing connections) takes it, until the agent starts a rank 0, which binds it for
//! real. `--ifname` names the network interface the gang talks over: its IPv4 address is the
//! advertised host, and Gloo and NCCL are told to use it too.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use base::address::HostPort;
use socket2::{Domain, Socket, Type};

/// What is wrong with `--advertise` or `--ifname`.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// `--advertise` is not `HOST` or `HOST:PORT`.
    #[error("--advertise {given:?}: {message}")]
    Advertise {
        /// As given.
        given: String,
        /// What is wrong.
        message: String,
    },
    /// The interface does not exist or has no IPv4 address.
    #[error("--ifname {name:?}: {message}")]
    Interface {
        /// As given.
        name: String,
        /// What is wrong, with the interfaces this host has.
        message: String,
    },
    /// No port could be reserved.
    #[error("reserving a port for the collective store failed: {0}")]
    Reserve(#[source] std::io::Error),
}

/// The environment variables that tell Gloo and NCCL which interface to use.
pub const IFNAME_VARIABLES: [&str; 2] = ["GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"];

/// A port held bound (not listening) while no rank 0 of this agent uses it.
#[derive(Debug)]
pub struct PortHold {
    port: u16,
    socket: Option<Socket>,
}

impl PortHold {
    /// Reserves a free port on every interface.
    pub fn new() -> Result<PortHold, AddressError> {
        let socket = bind(0).map_err(AddressError::Reserve)?;
        let port = socket
            .local_addr()
            .map_err(AddressError::Reserve)?
            .as_socket()
            .map(|a| a.port())
            .ok_or_else(|| AddressError::Reserve(std::io::Error::other("not an inet socket")))?;
        Ok(PortHold {
            port,
            socket: Some(socket),
        })
    }

    /// The reserved port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Lets the port go, for a rank 0 about to bind it.
    pub fn release(&mut self) {
        self.socket = None;
    }

    /// Binds the port again once the rank that used it has ended; a port taken meanwhile is
    /// logged (the next rank 0 here may then fail to bind it, and its job restarts).
    pub fn reclaim(&mut self) {
        if self.socket.is_some() {
            return;
        }
        match bind(self.port) {
            Ok(socket) => self.socket = Some(socket),
            Err(e) => {
                tracing::warn!(port = self.port, error = %e, "the collective port was taken while a job used it; keeping it advertised")
            }
        }
    }
}

fn bind(port: u16) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).into())?;
    Ok(socket)
}

/// The advertised address from `--advertise` (`HOST`, `HOST:PORT`, `HOST:0`), `--ifname` and
/// this host's name; with no port, a reserved one.
pub fn resolve(
    advertise: Option<&str>,
    ifname: Option<&str>,
    hostname: &str,
) -> Result<(String, Option<PortHold>), AddressError> {
    let (host, port) = match advertise {
        Some(given) => split(given)?,
        None => (None, None),
    };
    let host = match (host, ifname) {
        (Some(host), _) => host,
        (None, Some(name)) => interface_address(name)?.to_string(),
        (None, None) => hostname.to_string(),
    };
    match port {
        Some(port) => Ok((join(&host, port), None)),
        None => {
            let hold = PortHold::new()?;
            Ok((join(&host, hold.port()), Some(hold)))
        }
    }
}

/// `HOST[:PORT]` ([`HostPort`]); port 0 reads as none.
fn split(given: &str) -> Result<(Option<String>, Option<u16>), AddressError> {
    let address = HostPort::parse(given).map_err(|message| AddressError::Advertise {
        given: given.to_string(),
        message: message.to_string(),
    })?;
    Ok((Some(address.host), address.port.filter(|&port| port != 0)))
}

fn join(host: &str, port: u16) -> String {
    HostPort {
        host: host.to_string(),
        port: Some(port),
    }
    .to_string()
}

/// The first IPv4 address of a network interface.
pub fn interface_address(name: &str) -> Result<Ipv4Addr, AddressError> {
    let bad = |message: String| AddressError::Interface {
        name: name.to_string(),
        message,
    };
    let interfaces: Vec<_> = nix::ifaddrs::getifaddrs()
        .map_err(|e| bad(format!("listing the interfaces failed: {e}")))?
        .collect();
    let address = interfaces
        .iter()
        .filter(|i| i.interface_name == name)
        .find_map(|i| i.address.as_ref()?.as_sockaddr_in().map(|a| a.ip()));
    if let Some(address) = address {
        return Ok(address);
    }
    let mut names: Vec<&str> = interfaces.iter().map(|i| i.interface_name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let known = interfaces.iter().any(|i| i.interface_name == name);
    Err(bad(if known {
        format!(
            "the interface has no IPv4 address (interfaces here: {})",
            names.join(", ")
        )
    } else {
        format!("no such interface (interfaces here: {})", names.join(", "))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertise_forms() {
        assert_eq!(split("node-a:29500").unwrap(), (Some("node-a".into()), Some(29500)));
        assert_eq!(split("node-a").unwrap(), (Some("node-a".into()), None));
        assert_eq!(split("node-a:0").unwrap(), (Some("node-a".into()), None));
        assert_eq!(split("[fe80::1]:7").unwrap(), (Some("fe80::1".into()), Some(7)));
        assert_eq!(split("[fe80::1]").unwrap(), (Some("fe80::1".into()), None));
        for bad in ["node:99999", ":80", "fe80::1", "[fe80::1", "node:x"] {
            let e = split(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        assert_eq!(join("fe80::1", 5), "[fe80::1]:5");
    }

    #[test]
    fn a_given_port_is_kept_and_none_is_reserved() {
        let (address, hold) = resolve(Some("10.0.0.7:29511"), None, "here").unwrap();
        assert_eq!(address, "10.0.0.7:29511");
        assert!(hold.is_none());
        let (address, hold) = resolve(None, None, "here").unwrap();
        let mut hold = hold.expect("a reserved port");
        assert_eq!(address, format!("here:{}", hold.port()));
        // Held: nobody else binds it (without SO_REUSEADDR games) ...
        assert!(std::net::TcpListener::bind(("0.0.0.0", hold.port())).is_err());
        // ... until a rank 0 needs it, and again after.
        hold.release();
        drop(std::net::TcpListener::bind(("0.0.0.0", hold.port())).unwrap());
        hold.reclaim();
        assert!(std::net::TcpListener::bind(("0.0.0.0", hold.port())).is_err());
        // Two agents on one node get two ports.
        let (other, _hold2) = resolve(Some("here"), None, "x").unwrap();
        assert_ne!(other, address);
    }

    #[test]
    fn interfaces_resolve_or_name_the_ones_there() {
        assert_eq!(interface_address("lo").unwrap(), Ipv4Addr::LOCALHOST);
        let (address, _hold) = resolve(None, Some("lo"), "here").unwrap();
        assert!(address.starts_with("127.0.0.1:"), "{address}");
        let e = interface_address("nope0").unwrap_err().to_string();
        assert!(e.contains("no such interface") && e.contains("lo"), "{e}");
    }
}
