//! `coordinator serve`: the job and worker services (each behind its own bearer token), gRPC
//! health checking and reflection, optional TLS, the ticker that finds lost workers, and the
//! HTTP listener (`/metrics`, the dashboard) beside them.

use std::future::Future;
use std::time::Duration;

use gantry_proto::auth::{RequireToken, Token};
use gantry_proto::pb::job_service_server::JobServiceServer;
use gantry_proto::pb::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use std::sync::Arc;

use crate::core::Timing;
use crate::lease::{Lease, LeaseOptions};
use crate::metrics::{Metrics, RpcMetrics, RpcMetricsLayer};
use crate::service::Coordinator;
use crate::store::JobStore;
use crate::{Error, Result};

/// How often the count of job records written is logged (when it moved).
const STORE_LOG_PERIOD: Duration = Duration::from_secs(10);

/// Everything `serve` needs besides the listener.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// URL of the job store.
    pub state: String,
    /// Token of the job API.
    pub job_token: Token,
    /// Token of the worker API.
    pub worker_token: Token,
    /// Heartbeat timeout of workers.
    pub heartbeat_timeout: Duration,
    /// PEM certificate chain and private key, for TLS.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// The storage jobs may read and write.
    pub access: crate::service::Access,
    /// How the state's lease is taken.
    pub lease: LeaseOptions,
    /// The lease, when the caller took it already (to say it listens only once it holds it).
    pub held: Option<Lease>,
}

/// Serves on `listener` until `shutdown` resolves (then releases the state's lease), or until
/// another coordinator takes the lease (an error).
pub async fn serve(options: ServeOptions, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<()> {
    serve_with_http(options, listener, HttpListeners::default(), shutdown).await
}

/// The coordinator's HTTP listeners besides gRPC.
#[derive(Debug, Default)]
pub struct HttpListeners {
    /// The dashboard and `/metrics` behind the job API token (HTTPS under TLS).
    pub dashboard: Option<TcpListener>,
    /// Plain HTTP with `/metrics` only, without a token.
    pub metrics: Option<TcpListener>,
}

/// [`serve`], with the HTTP listeners (`/metrics` and the dashboard, HTTPS under TLS; `/metrics`
/// alone) when given.
pub async fn serve_with_http(
    options: ServeOptions,
    listener: TcpListener,
    http: HttpListeners,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let lease = match options.held.clone() {
        Some(lease) => lease,
        None => {
            let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
            Lease::acquire(&options.state, &address, options.lease).await?
        }
    };
    let store = JobStore::open(&options.state)?.fenced(lease.fence());
    let timing = Timing {
        heartbeat_timeout: options.heartbeat_timeout,
    };
    if options.access.read.is_empty() && options.access.write.is_empty() {
        tracing::warn!(
            "no --allow-read or --allow-write: jobs may read and write any storage the workers reach (but the job records)"
        );
    }
    let coordinator = Coordinator::recover_with(store, timing, options.access.clone()).await?;

    let ticker = {
        let coordinator = coordinator.clone();
        let period = (timing.heartbeat_interval() / 2).max(Duration::from_millis(25));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if let Err(e) = coordinator.tick().await {
                    tracing::error!(error = %e, "tick");
                }
            }
        })
    };

    // How many job records are written: proportional to real changes of jobs, not to load.
    let writes = {
        let store = coordinator.store().clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut interval = tokio::time::interval(STORE_LOG_PERIOD);
            interval.tick().await;
            let mut last = 0;
            loop {
                interval.tick().await;
                let written = store.records_written();
                if written != last {
                    let per_s = (written - last) as f64 / STORE_LOG_PERIOD.as_secs_f64();
                    tracing::info!(
                        records_written = written,
                        per_s,
                        uptime_s = started.elapsed().as_secs_f64(),
                        "job store writes"
                    );
                    last = written;
                }
            }
        })
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    for service in ["gantry.v1.JobService", "gantry.v1.WorkerService", ""] {
        health
            .set_service_status(service, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(gantry_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let rpc = RpcMetrics::default();
    let metrics = Arc::new(Metrics::new(&coordinator, &rpc));
    let metrics_only = http
        .metrics
        .map(|listener| tokio::spawn(crate::web::serve_metrics(metrics.clone(), listener)));
    let web = match http.dashboard {
        Some(http) => {
            let tls = match &options.tls {
                Some((cert, key)) => Some(crate::web::tls::server_config(cert, key)?),
                None => None,
            };
            let web = crate::web::Web::new(
                coordinator.clone(),
                metrics,
                Some(options.job_token.clone()),
                tls.is_some(),
            );
            Some(tokio::spawn(crate::web::serve(web, http, tls, std::future::pending())))
        }
        None => None,
    };

    let mut builder = Server::builder();
    if let Some((cert, key)) = &options.tls {
        builder = builder.tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))?;
    }
    let mut builder = builder.layer(RpcMetricsLayer(rpc));
    let jobs = JobServiceServer::with_interceptor(coordinator.clone(), RequireToken(options.job_token));
    let workers = WorkerServiceServer::with_interceptor(coordinator, RequireToken(options.worker_token));
    let serving = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(jobs)
        .add_service(workers)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown);
    let result = tokio::select! {
        served = serving => served.map_err(Error::from),
        lost = lease.keep() => Err(lost),
    };
    ticker.abort();
    writes.abort();
    // Its event streams never end by themselves: it stops with the gRPC server.
    if let Some(web) = web {
        web.abort();
    }
    if let Some(metrics_only) = metrics_only {
        metrics_only.abort();
    }
    if result.is_ok()
        && let Err(e) = lease.release().await
    {
        tracing::error!(error = %base::error_chain(&e), "lease not released: the next coordinator waits for it to expire");
    }
    result
}
