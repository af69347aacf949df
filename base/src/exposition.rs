//! Prometheus metrics over HTTP: the Prometheus text format by default, OpenMetrics when the
//! scraper asks for it in `Accept` (as Prometheus itself does). The workers' and the
//! coordinator's `/metrics` both answer through [`Format::negotiate`] and [`encode`].

use prometheus_client::registry::Registry;

/// Content type of the Prometheus text format (version 0.0.4).
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// Content type of OpenMetrics text.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A text format of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format.
    Prometheus,
    /// OpenMetrics text (ends with `# EOF`).
    OpenMetrics,
}

impl Format {
    /// The format a request's `Accept` header asks for.
    pub fn negotiate(accept: Option<&str>) -> Format {
        if accept.is_some_and(|accept| accept.contains("application/openmetrics-text")) {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => PROMETHEUS_TEXT,
            Format::OpenMetrics => OPENMETRICS_TEXT,
        }
    }
}

/// The metrics of `registry` in `format`.
pub fn encode(registry: &Registry, format: Format) -> String {
    let mut out = String::new();
    let encoded = match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, registry),
        Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut out, registry),
    };
    encoded.expect("writing to a String");
    out
}

/// The answer to a scrape with `accept`: its content type and body.
pub fn respond(registry: &Registry, accept: Option<&str>) -> (&'static str, String) {
    let format = Format::negotiate(accept);
    (format.content_type(), encode(registry, format))
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn the_scraper_gets_openmetrics_only_when_it_asks() {
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        registry.register("gantry_things", "Things", counter.clone());
        counter.inc();
        let (plain_type, plain) = respond(&registry, None);
        assert_eq!(plain_type, PROMETHEUS_TEXT);
        assert!(
            plain.contains("gantry_things_total 1") && !plain.contains("# EOF"),
            "{plain}"
        );
        let (om_type, om) = respond(&registry, Some("application/openmetrics-text; version=1.0.0,*/*;q=0.1"));
        assert_eq!(om_type, OPENMETRICS_TEXT);
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Prometheus);
    }
}
