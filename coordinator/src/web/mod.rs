//! The coordinator's HTTP listener (`serve --http-listen`): `/metrics` for Prometheus and a
//! live dashboard, HTTPS with the gRPC certificate when the coordinator has one.
//!
//! - [`server`]: the router, its routes and the listener.
//! - [`auth`]: the job API token as a bearer header or a login session (a cookie).
//! - [`data`]: what the dashboard shows: job summaries, a job's curves (its `metrics.jsonl` in
//!   storage, then the live steps since), its latest sample grid, the workers.
//! - [`tls`]: a listener of TLS connections.
//!
//! The page itself (`assets/`: HTML, CSS and JavaScript, curves drawn in SVG) is compiled into
//! the binary: it fetches nothing from elsewhere.

pub mod auth;
pub mod data;
pub mod server;
pub mod tls;

pub use server::{Web, serve, serve_metrics};
