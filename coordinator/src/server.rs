//! `coordinator serve`: the job and worker services (each behind its own bearer token), gRPC
//! health checking and reflection, optional TLS, and the ticker that finds lost workers.

use std::future::Future;
use std::time::Duration;

use gantry_proto::auth::{RequireToken, Token};
use gantry_proto::pb::job_service_server::JobServiceServer;
use gantry_proto::pb::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::core::Timing;
use crate::service::Coordinator;
use crate::store::JobStore;
use crate::{Error, Result};

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
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn serve(options: ServeOptions, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<()> {
    let store = JobStore::open(&options.state)?;
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

    let mut builder = Server::builder();
    if let Some((cert, key)) = &options.tls {
        builder = builder.tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))?;
    }
    let jobs = JobServiceServer::with_interceptor(coordinator.clone(), RequireToken(options.job_token));
    let workers = WorkerServiceServer::with_interceptor(coordinator, RequireToken(options.worker_token));
    let result = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(jobs)
        .add_service(workers)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
        .map_err(Error::from);
    ticker.abort();
    result
}
