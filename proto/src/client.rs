//! Connecting to the coordinator: `http://host:port`, or `https://host:port` with the CA
//! certificate that signed the coordinator's certificate.

use std::path::Path;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// A coordinator address or TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The address is not a URL tonic can dial.
    #[error("coordinator address {url:?}: {message} (expected http://HOST:PORT or https://HOST:PORT)")]
    Address {
        /// The address as given.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The CA certificate could not be read.
    #[error("CA certificate {path}: {source}")]
    Ca {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error("TLS to {url}: {message}")]
    Tls {
        /// The address.
        url: String,
        /// What is wrong.
        message: String,
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
    let bad = |message: String| ConnectError::Address {
        url: url.clone(),
        message,
    };
    let mut endpoint = Endpoint::from_shared(url.clone()).map_err(|e| bad(e.to_string()))?;
    if url.starts_with("https://") || ca.is_some() {
        let mut tls = ClientTlsConfig::new();
        if let Some(path) = ca {
            let pem = std::fs::read(path).map_err(|source| ConnectError::Ca {
                path: path.display().to_string(),
                source,
            })?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| ConnectError::Tls {
            url: url.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(endpoint
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect_lazy())
}
