//! Reading the coordinator's `/metrics` (`serve --metrics-listen`, plain HTTP, no token): one
//! GET over a loopback connection, and the Prometheus text format's samples (`name{labels}
//! value` lines; comments and types skipped).

use std::collections::HashMap;
use std::time::Instant;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// One scrape: the samples by series (`name` or `name{labels}` as written), and when it was read.
#[derive(Debug, Clone)]
pub(super) struct Scrape {
    pub(super) samples: HashMap<String, f64>,
    pub(super) at: Instant,
}

impl Scrape {
    /// The value of a series without labels.
    pub(super) fn value(&self, name: &str) -> Option<f64> {
        self.samples.get(name).copied()
    }
}

/// The samples of a Prometheus text exposition.
pub(super) fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The series ends at the closing brace of its labels, or at the first space.
        let end = match line.find('{') {
            Some(open) if line[..open].find(' ').is_none() => line[open..].find('}').map(|close| open + close + 1),
            _ => line.find(' '),
        };
        let Some(end) = end else { continue };
        let (series, rest) = line.split_at(end);
        // A timestamp may follow the value.
        if let Some(Ok(value)) = rest.split_whitespace().next().map(str::parse::<f64>) {
            samples.insert(series.to_string(), value);
        }
    }
    samples
}

/// GETs `url` (`http://HOST:PORT/PATH`) and parses the answer.
pub(super) async fn fetch(url: &str) -> std::io::Result<Scrape> {
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidData, message);
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| invalid(format!("{url}: not an http:// URL")))?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    // HTTP/1.0: the body ends with the connection, never chunked.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: text/plain\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let at = Instant::now();
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid(format!("{url}: an answer without a body")))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(invalid(format!("{url}: {status}")));
    }
    Ok(Scrape {
        samples: parse(body),
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_by_series_with_their_labels() {
        let text = "# HELP gantry_workers_lost Workers dropped.\n\
                    # TYPE gantry_workers_lost counter\n\
                    gantry_workers_lost_total 3\n\
                    gantry_jobs{state=\"queued\"} 12\n\
                    gantry_grpc_server_handled_total{grpc_method=\"Get Job\",grpc_code=\"OK\"} 7 1700000000000\n\
                    gantry_queue_oldest_wait_seconds 0.25\n\
                    broken_line\n";
        let samples = parse(text);
        assert_eq!(samples.get("gantry_workers_lost_total"), Some(&3.0));
        assert_eq!(samples.get("gantry_jobs{state=\"queued\"}"), Some(&12.0));
        assert_eq!(
            samples.get("gantry_grpc_server_handled_total{grpc_method=\"Get Job\",grpc_code=\"OK\"}"),
            Some(&7.0)
        );
        assert_eq!(samples.get("gantry_queue_oldest_wait_seconds"), Some(&0.25));
        assert_eq!(samples.len(), 4);
    }
}
