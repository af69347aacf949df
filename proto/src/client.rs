//! Connecting to the coordinator: `http://host:port`, or `https://host:port` with the CA
//! certificate that signed the coordinator's certificate.
//!
//! Errors here, as everywhere in gantry, say what failed in their text and keep the cause as
//! their `source()`: print the chain (`{:#}` of `anyhow`).

use std::path::Path;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// A coordinator address or TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The address is not a URL tonic can dial.
    #[error("coordinator address {url:?} is not http://HOST:PORT or https://HOST:PORT")]
    Address {
        /// The address as given.
        url: String,
        /// Why it cannot be dialled.
        source: tonic::transport::Error,
    },
    /// The CA certificate could not be read.
    #[error("cannot read the CA certificate {path}")]
    Ca {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error("cannot set up TLS to {url}")]
    Tls {
        /// The address.
        url: String,
        /// Why.
        source: tonic::transport::Error,
    },
}

/// A channel to the coordinator at `url` (a bare `host:port` means `http://host:port`). It
/// connects on first use and reconnects after failures, so a coordinator that is down or
/// restarting shows up as `Unavailable` on calls, not as an error here.
pub fn channel(url: &str, ca: Option<&Path>) -> Result<Channel, ConnectError> {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let mut endpoint = Endpoint::from_shared(url.clone()).map_err(|source| ConnectError::Address {
        url: url.clone(),
        source,
    })?;
    if url.starts_with("https://") || ca.is_some() {
        let mut tls = ClientTlsConfig::new();
        if let Some(path) = ca {
            let pem = std::fs::read(path).map_err(|source| ConnectError::Ca {
                path: path.display().to_string(),
                source,
            })?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(|source| ConnectError::Tls {
            url: url.clone(),
            source,
        })?;
    }
    Ok(endpoint
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect_lazy())
}
