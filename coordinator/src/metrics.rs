//! `/metrics`: the coordinator's Prometheus metrics.
//!
//! - Read from the core at scrape time (`CoreCollector`): jobs by state, the queue's length
//!   and its oldest job's wait, workers registered and busy.
//! - Counted as things happen ([`crate::telemetry::Telemetry`], by the typed events of the
//!   core and the job store): workers lost to missed heartbeats, restarts and preemptions, the
//!   wait from submission to first assignment, jobs ended by state, job records written.
//! - Counted by a tower layer on the gRPC server ([`RpcMetricsLayer`]): calls by service, method
//!   and status code, and their latency (until the response's last byte, so a `WatchJob`
//!   stream counts for as long as it lasts).
//!
//! Names follow Prometheus conventions (`gantry_` prefix, `_total` counters, `_seconds`); the
//! gRPC ones mirror go-grpc-prometheus (`grpc_service`, `grpc_method`, `grpc_code`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::core::now_ms;
use crate::service::Coordinator;
use crate::telemetry::StateLabel;

/// The coordinator's metrics registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// The registry over `coordinator` (its gauges and counters) and the gRPC layer's `rpc`.
    pub fn new(coordinator: &Coordinator, rpc: &RpcMetrics) -> Self {
        let mut registry = Registry::with_prefix("gantry");
        coordinator
            .read(|core| core.telemetry().clone())
            .register(&mut registry);
        registry.register(
            "grpc_server_handled",
            "gRPC calls completed, by service, method and status code",
            rpc.handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Seconds from a gRPC call's request to the end of its response (a stream's whole life)",
            rpc.latency.clone(),
        );
        registry.register_collector(Box::new(CoreCollector {
            coordinator: coordinator.clone(),
        }));
        Self { registry }
    }

    /// The metrics now, answering a scrape whose `Accept` header is `accept`: the content type
    /// and the text ([`base::exposition`]).
    pub fn respond(&self, accept: Option<&str>) -> (&'static str, String) {
        base::exposition::respond(&self.registry, accept)
    }
}

/// Gauges read from the core on each scrape.
#[derive(Debug)]
struct CoreCollector {
    coordinator: Coordinator,
}

impl Collector for CoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let census = self.coordinator.read(|core| core.census(now_ms()));
        let mut jobs = encoder.encode_descriptor("jobs", "Jobs by state.", None, MetricType::Gauge)?;
        for (state, count) in &census.jobs {
            let label = StateLabel::from(*state);
            ConstGauge::new(*count as i64).encode(jobs.encode_family(&label)?)?;
        }
        let queued = census
            .jobs
            .iter()
            .find(|(s, _)| *s == crate::core::State::Queued)
            .map_or(0, |(_, n)| *n);
        let counts: [(&str, &str, u64); 3] = [
            ("queue_length", "Jobs waiting in the queue.", queued),
            ("workers_registered", "Workers in the pool.", census.workers),
            ("workers_busy", "Workers holding a rank of a running job.", census.busy),
        ];
        for (name, help, value) in counts {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value as i64).encode(metric)?;
        }
        let oldest = encoder.encode_descriptor(
            "queue_oldest_wait_seconds",
            "Seconds the longest-waiting queued job has waited (0 when none waits).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(census.oldest_wait_seconds).encode(oldest)?;
        Ok(())
    }
}

/// Labels of a gRPC call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_code: &'static str,
}

/// Labels of a gRPC method.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_service: &'static str,
    grpc_method: &'static str,
}

type LatencyFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

/// Counters and latencies of gRPC calls, shared by the layer and the registry.
#[derive(Debug, Clone)]
pub struct RpcMetrics {
    handled: Family<CallLabels, Counter>,
    latency: LatencyFamily,
}

impl Default for RpcMetrics {
    fn default() -> Self {
        fn latency() -> Histogram {
            Histogram::new(LATENCY_BUCKETS.iter().copied())
        }
        Self {
            handled: Family::default(),
            latency: Family::new_with_constructor(latency as fn() -> Histogram),
        }
    }
}

/// Bucket bounds of the gRPC latencies, seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The services and methods this coordinator serves: anything else is counted as `other`, so
/// that arbitrary request paths cannot grow the label sets.
const METHODS: &[(&str, &[&str])] = &[
    (
        "gantry.v1.JobService",
        &["SubmitJob", "GetJob", "ListJobs", "CancelJob", "WatchJob"],
    ),
    ("gantry.v1.WorkerService", &["Register", "Heartbeat", "Report"]),
    ("grpc.health.v1.Health", &["Check", "Watch"]),
    ("grpc.reflection.v1.ServerReflection", &["ServerReflectionInfo"]),
];

/// `(service, method)` of a request path `/pkg.Service/Method`, from [`METHODS`].
fn method_of(path: &str) -> (&'static str, &'static str) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    for (known, methods) in METHODS {
        if *known == service {
            let method = methods.iter().find(|m| **m == method).copied().unwrap_or("other");
            return (known, method);
        }
    }
    ("other", "other")
}

/// The canonical name of a gRPC status code (`OK`, `UNAUTHENTICATED`, ...).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The `grpc-status` in a header map, if there is one.
fn grpc_status(headers: &axum::http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from_i32(value))
}

/// One call being measured: recorded when dropped, with the code it learnt (a response that
/// ended without one was cut off: `CANCELLED`).
#[derive(Debug)]
struct Call {
    metrics: RpcMetrics,
    service: &'static str,
    method: &'static str,
    started: Instant,
    code: Option<tonic::Code>,
}

impl Drop for Call {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(tonic::Code::Cancelled);
        let labels = CallLabels {
            grpc_service: self.service,
            grpc_method: self.method,
            grpc_code: code_name(code),
        };
        self.metrics.handled.get_or_create(&labels).inc();
        let method = MethodLabels {
            grpc_service: self.service,
            grpc_method: self.method,
        };
        self.metrics
            .latency
            .get_or_create(&method)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// A tower layer that counts and times the gRPC server's calls into [`RpcMetrics`].
#[derive(Debug, Clone)]
pub struct RpcMetricsLayer(pub RpcMetrics);

impl<S> tower_layer::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service [`RpcMetricsLayer`] wraps around the gRPC server's.
#[derive(Debug, Clone)]
pub struct RpcMetricsService<S> {
    inner: S,
    metrics: RpcMetrics,
}

impl<S, B, R> tower_service::Service<axum::http::Request<B>> for RpcMetricsService<S>
where
    S: tower_service::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
{
    type Response = axum::http::Response<RpcBody<R>>;
    type Error = S::Error;
    type Future = RpcFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let (service, method) = method_of(request.uri().path());
        let call = Call {
            metrics: self.metrics.clone(),
            service,
            method,
            started: Instant::now(),
            code: None,
        };
        RpcFuture {
            inner: self.inner.call(request),
            call: Some(call),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RpcMetricsService`].
    pub struct RpcFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, R, E> Future for RpcFuture<F>
where
    F: Future<Output = Result<axum::http::Response<R>, E>>,
{
    type Output = Result<axum::http::Response<RpcBody<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                // An error answered before any message ("trailers only") carries its status in
                // the headers; otherwise it comes in the trailers.
                if let Some(call) = call.as_mut() {
                    call.code = grpc_status(response.headers());
                }
                Ok(response.map(|inner| RpcBody { inner, call }))
            }
            Err(e) => {
                if let Some(call) = call.as_mut() {
                    call.code = Some(tonic::Code::Internal);
                }
                Err(e)
            }
        })
    }
}

/// Records `call` now, with `code` when given (else the one it learnt from its headers).
fn finish(call: &mut Option<Call>, code: Option<tonic::Code>) {
    if let Some(mut call) = call.take()
        && code.is_some()
    {
        call.code = code;
    }
}

pin_project_lite::pin_project! {
    /// A gRPC response body that records its call once its trailers pass, it ends, or it is
    /// dropped unfinished.
    pub struct RpcBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: Body> Body for RpcBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = grpc_status(trailers).unwrap_or(tonic::Code::Unknown);
                    finish(this.call, Some(code));
                }
            }
            Some(Err(_)) => finish(this.call, Some(tonic::Code::Internal)),
            None => {
                let known = this.call.as_ref().and_then(|c| c.code);
                finish(this.call, Some(known.unwrap_or(tonic::Code::Unknown)));
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer as _, ServiceExt as _};

    fn encoded(rpc: &RpcMetrics) -> String {
        let mut registry = Registry::with_prefix("gantry");
        registry.register("grpc_server_handled", "", rpc.handled.clone());
        registry.register("grpc_server_handling_seconds", "", rpc.latency.clone());
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        text
    }

    #[tokio::test]
    async fn the_layer_counts_calls_by_method_and_code() {
        let rpc = RpcMetrics::default();
        let service =
            RpcMetricsLayer(rpc.clone()).layer(tower::service_fn(|request: axum::http::Request<()>| async move {
                let mut response = axum::http::Response::new(axum::body::Body::empty());
                if request.uri().path().ends_with("GetJob") {
                    // A refusal answered in the headers ("trailers only").
                    response.headers_mut().insert("grpc-status", "16".parse().unwrap());
                }
                Ok::<_, std::convert::Infallible>(response)
            }));
        let request = |path: &str| axum::http::Request::post(path).body(()).unwrap();
        let refused = service
            .clone()
            .oneshot(request("/gantry.v1.JobService/GetJob"))
            .await
            .unwrap();
        drop(refused);
        // A body read to its end without a status, and one dropped unread (the client left).
        let ended = service
            .clone()
            .oneshot(request("/gantry.v1.WorkerService/Heartbeat"))
            .await
            .unwrap();
        axum::body::to_bytes(axum::body::Body::new(ended.into_body()), 1024)
            .await
            .unwrap();
        let dropped = service
            .oneshot(request("/gantry.v1.JobService/WatchJob"))
            .await
            .unwrap();
        drop(dropped);
        let text = encoded(&rpc);
        for needle in [
            "gantry_grpc_server_handled_total{grpc_service=\"gantry.v1.JobService\",grpc_method=\"GetJob\",grpc_code=\"UNAUTHENTICATED\"} 1",
            "gantry_grpc_server_handled_total{grpc_service=\"gantry.v1.WorkerService\",grpc_method=\"Heartbeat\",grpc_code=\"UNKNOWN\"} 1",
            "gantry_grpc_server_handled_total{grpc_service=\"gantry.v1.JobService\",grpc_method=\"WatchJob\",grpc_code=\"CANCELLED\"} 1",
            "gantry_grpc_server_handling_seconds_count{grpc_service=\"gantry.v1.JobService\",grpc_method=\"GetJob\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }

    #[test]
    fn paths_map_to_known_methods_only() {
        assert_eq!(
            method_of("/gantry.v1.WorkerService/Heartbeat"),
            ("gantry.v1.WorkerService", "Heartbeat")
        );
        assert_eq!(
            method_of("/gantry.v1.JobService/Nope"),
            ("gantry.v1.JobService", "other")
        );
        assert_eq!(method_of("/x.Y/Z"), ("other", "other"));
        assert_eq!(method_of(""), ("other", "other"));
    }
}
