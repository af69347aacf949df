//! Watching a run: the coordinator's HTTP listener (`serve --http-listen`) against a real
//! coordinator and `worker serve` agent training on the CPU.
//!
//! - `/metrics`, scraped during a running job and parsed by the Prometheus Python client's own
//!   parsers (`tests/browser/scrape_metrics.py`, through [`scrape`]: the hook for the worker's
//!   `/metrics` too).
//! - The dashboard in headless Chromium (`tests/browser/dashboard.py`, selenium with Debian's
//!   chromium and chromedriver): login, a long job RUNNING with its step advancing, then
//!   CANCELLED; a short job SUCCEEDED with its sample grid. `GANTRY_DASHBOARD_SCREENSHOT=PATH`
//!   saves the short job's view there (`docs/dashboard.png` in the README comes from it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gantry_proto::pb;
use gantry_proto::pb::job_event::Event;
use serde_json::Value;

use crate::cluster::*;
use crate::python_client::{python, root};
use crate::util::*;

const LIMIT: Duration = Duration::from_secs(180);

/// A coordinator with its HTTP listener.
struct Observed {
    _process: Process,
    /// The gRPC address.
    addr: String,
    /// The dashboard's URL (`http://127.0.0.1:PORT/`).
    url: String,
    /// With `--metrics-listen`: the URL of its `/metrics` without a token.
    metrics_only: Option<String>,
}

/// `coordinator serve` with `--http-listen 127.0.0.1:0`: reads the gRPC address and the
/// dashboard's URL from its first two lines.
fn observed_coordinator(scratch: &Scratch) -> Observed {
    observed_coordinator_with(scratch, &[])
}

/// [`observed_coordinator`] with more flags.
fn observed_coordinator_with(scratch: &Scratch, extra: &[&str]) -> Observed {
    let log = std::fs::File::create(scratch.path("coordinator.log")).unwrap();
    let mut args = vec!["--http-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut child = serve_command(scratch, scratch.path("state").to_str().unwrap(), "127.0.0.1:0", &args)
        .stderr(log)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = |prefix: &str| {
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        line.strip_prefix(prefix)
            .unwrap_or_else(|| {
                panic!(
                    "coordinator: expected {prefix:?}, got {line:?}\n{}",
                    scratch.log("coordinator.log")
                )
            })
            .to_string()
    };
    let addr = next("listening on ");
    let url = next("dashboard on ");
    let metrics_only = extra.contains(&"--metrics-listen").then(|| next("metrics on "));
    Observed {
        _process: Process { child },
        addr,
        url,
        metrics_only,
    }
}

/// A job file: 32x32, width 8, batch 8 on one CPU thread, samples and checkpoints every
/// `every` steps.
fn job_file(scratch: &Scratch, name: &str, steps: u64, every: u64) -> PathBuf {
    let text = format!(
        "[data]\nurl = \"{data}\"\n[model]\nimage_size = 32\nwidth = 8\n\
         [train]\nbatch_size = 8\nsteps = {steps}\ncheckpoint_every = {every}\nsample_every = {every}\n\
         sample_rows = 4\ndevice = \"cpu\"\nthreads = 1\n\
         [output]\nurl = \"{out}\"\n[job]\nname = \"{name}\"\n",
        data = scratch.data(),
        out = scratch.path(&format!("runs/{name}")).display(),
    );
    let file = scratch.path(&format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    file
}

/// Submits a job file; returns its id.
fn submit(scratch: &Scratch, addr: &str, file: &Path) -> String {
    let out = ok(scratch.cli(addr, &["submit", file.to_str().unwrap()]));
    out.lines().next().unwrap().trim().to_string()
}

/// What one scrape of a Prometheus endpoint held, parsed by `prometheus_client`.
pub(crate) struct Scrape {
    /// Family name -> {"type", "samples": [[name, {labels}, value]]}.
    families: serde_json::Map<String, Value>,
    /// The families OpenMetrics' strict parser read from the same endpoint.
    openmetrics: Vec<String>,
    /// The endpoint's answer without the token.
    status_without_token: u64,
    /// Seconds the scrape took.
    seconds: f64,
}

impl Scrape {
    /// The value of sample `name` with (at least) these labels; None when absent.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.families
            .values()
            .flat_map(|f| f["samples"].as_array().unwrap())
            .find(|s| {
                s[0] == name
                    && labels
                        .iter()
                        .all(|(k, v)| s[1].get(*k).and_then(Value::as_str) == Some(*v))
            })
            .map(|s| s[2].as_f64().unwrap())
    }

    /// The type of family `name`.
    pub(crate) fn family_type(&self, name: &str) -> Option<&str> {
        self.families.get(name).and_then(|f| f["type"].as_str())
    }
}

/// Scrapes `url` with `tests/browser/scrape_metrics.py` (the bearer token in `token_file`)
/// and parses it with the Prometheus Python client. The worker's `/metrics` goes through here
/// too once it serves one.
pub(crate) fn scrape(url: &str, token_file: Option<&Path>) -> Scrape {
    scrape_with(url, token_file, None)
}

/// [`scrape`] of an `https://` endpoint whose certificate `ca` signed.
pub(crate) fn scrape_with(url: &str, token_file: Option<&Path>, ca: Option<&Path>) -> Scrape {
    let mut command = Command::new(python());
    command.arg(root().join("tests/browser/scrape_metrics.py")).arg(url);
    if let Some(file) = token_file {
        command.arg("--token-file").arg(file);
    }
    if let Some(ca) = ca {
        command.arg("--ca").arg(ca);
    }
    let out = run_with(&mut command);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "scrape of {url} failed:\n{stdout}\n{stderr}");
    let parsed: Value = serde_json::from_str(&stdout).unwrap();
    Scrape {
        families: parsed["families"].as_object().unwrap().clone(),
        openmetrics: parsed["openmetrics_families"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect(),
        status_without_token: parsed["status_without_token"].as_u64().unwrap(),
        seconds: parsed["scrape_seconds"].as_f64().unwrap(),
    }
}

/// The URL a `worker serve --metrics-listen` logged it serves its metrics at.
pub(crate) fn worker_metrics_url(scratch: &Scratch, log: &str) -> String {
    let text = scratch.log(log);
    let line = text
        .lines()
        .find(|l| l.contains("serving Prometheus metrics at "))
        .unwrap_or_else(|| panic!("{log} does not say where the metrics are:\n{text}"));
    let url = line.split("serving Prometheus metrics at ").nth(1).unwrap();
    url.split_whitespace().next().unwrap().to_string()
}

#[test]
fn the_coordinator_and_the_worker_serve_prometheus_metrics_during_a_real_job() {
    serial(async {
        let scratch = Scratch::new();
        let coord = observed_coordinator_with(&scratch, &["--metrics-listen", "127.0.0.1:0"]);
        let _worker = worker_with(&scratch, &coord.addr, "w1", &["--metrics-listen", "127.0.0.1:0"]);
        let id = submit(&scratch, &coord.addr, &job_file(&scratch, "long", 100_000, 50));
        let mut client = jobs(&coord.addr, JOB_TOKEN);
        // A refused call, counted with its code.
        let refused = jobs(&coord.addr, "not-the-token")
            .get_job(pb::GetJobRequest { id: id.clone() })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        watch_until(
            &mut client,
            &id,
            LIMIT,
            |e| matches!(e, Event::Metrics(m) if m.step >= 3),
        )
        .await;

        let token = scratch.path("job.token");
        let metrics = format!("{}metrics", coord.url);
        let running = scrape(&metrics, Some(&token));
        let worker_url = worker_metrics_url(&scratch, "w1.log");
        let worker_during = scrape(&worker_url, None);
        println!(
            "scrape during the job: {:.1} ms, {} families",
            running.seconds * 1e3,
            running.families.len()
        );
        assert_eq!(running.status_without_token, 401);
        let gauge = |name: &str, labels: &[(&str, &str)]| {
            running
                .value(name, labels)
                .unwrap_or_else(|| panic!("{name} {labels:?} missing from the scrape"))
        };
        assert_eq!(gauge("gantry_jobs", &[("state", "running")]), 1.0);
        assert_eq!(gauge("gantry_jobs", &[("state", "queued")]), 0.0);
        assert_eq!(gauge("gantry_queue_length", &[]), 0.0);
        assert_eq!(gauge("gantry_queue_oldest_wait_seconds", &[]), 0.0);
        assert_eq!(gauge("gantry_workers_registered", &[]), 1.0);
        assert_eq!(gauge("gantry_workers_busy", &[]), 1.0);
        assert_eq!(gauge("gantry_workers_lost_total", &[]), 0.0);
        assert_eq!(gauge("gantry_job_restarts_total", &[]), 0.0);
        assert_eq!(gauge("gantry_job_preemptions_total", &[]), 0.0);
        assert_eq!(gauge("gantry_queue_wait_seconds_count", &[]), 1.0);
        let waited = gauge("gantry_queue_wait_seconds_sum", &[]);
        assert!((0.0..60.0).contains(&waited), "queue wait {waited} s");
        for (service, method) in [
            ("gantry.v1.WorkerService", "Register"),
            ("gantry.v1.WorkerService", "Heartbeat"),
            ("gantry.v1.WorkerService", "Report"),
            ("gantry.v1.JobService", "SubmitJob"),
        ] {
            let labels = [("grpc_service", service), ("grpc_method", method), ("grpc_code", "OK")];
            let handled = gauge("gantry_grpc_server_handled_total", &labels);
            assert!(handled >= 1.0, "{method}: {handled}");
            let timed = gauge("gantry_grpc_server_handling_seconds_count", &labels[..2]);
            assert!(timed >= handled, "{method}: {timed} timed, {handled} handled");
            let bucket = gauge(
                "gantry_grpc_server_handling_seconds_bucket",
                &[("grpc_method", method), ("le", "+Inf")],
            );
            assert_eq!(bucket, timed, "{method}");
        }
        let unauthenticated = [("grpc_method", "GetJob"), ("grpc_code", "UNAUTHENTICATED")];
        assert_eq!(gauge("gantry_grpc_server_handled_total", &unauthenticated), 1.0);
        assert_eq!(running.family_type("gantry_jobs"), Some("gauge"));
        assert_eq!(running.family_type("gantry_grpc_server_handled"), Some("counter"));
        assert_eq!(
            running.family_type("gantry_grpc_server_handling_seconds"),
            Some("histogram")
        );
        for family in [
            "gantry_jobs",
            "gantry_workers_busy",
            "gantry_grpc_server_handled",
            "gantry_queue_wait_seconds",
        ] {
            assert!(
                running.openmetrics.iter().any(|f| f == family),
                "{family} not in the OpenMetrics scrape: {:?}",
                running.openmetrics
            );
        }

        ok(scratch.cli(&coord.addr, &["cancel", &id]));
        let ended = watch_to_end(&mut client, &id, LIMIT).await;
        assert_eq!(ended.state(), pb::JobState::Cancelled);
        let after = scrape(&metrics, Some(&token));
        assert_eq!(after.value("gantry_jobs", &[("state", "running")]), Some(0.0));
        assert_eq!(after.value("gantry_jobs", &[("state", "cancelled")]), Some(1.0));
        assert_eq!(after.value("gantry_workers_busy", &[]), Some(0.0));
        let cancels = [("grpc_method", "CancelJob"), ("grpc_code", "OK")];
        assert_eq!(after.value("gantry_grpc_server_handled_total", &cancels), Some(1.0));
        // The same families on the token-less listener of `--metrics-listen`.
        let open = scrape(coord.metrics_only.as_deref().unwrap(), None);
        assert_eq!(open.status_without_token, 200);
        assert_eq!(open.value("gantry_jobs", &[("state", "cancelled")]), Some(1.0));
        assert_eq!(open.families.len(), after.families.len());

        // The worker's own: what its run reported, and idle again after the cancel.
        let during = &worker_during;
        assert_eq!(during.status_without_token, 200);
        let value = |name: &str, labels: &[(&str, &str)]| {
            during
                .value(name, labels)
                .unwrap_or_else(|| panic!("{name} {labels:?} missing from the worker's scrape"))
        };
        assert_eq!(value("gantry_worker_busy", &[]), 1.0);
        assert_eq!(
            value(
                "gantry_worker_assignment",
                &[("job", id.as_str()), ("rank", "0"), ("attempt", "1")]
            ),
            1.0
        );
        let step = value("gantry_worker_step", &[]);
        assert!(step >= 3.0, "step {step}");
        let steps = value("gantry_worker_steps_total", &[]);
        assert_eq!(value("gantry_worker_step_duration_seconds_count", &[]), steps);
        let step_time = value("gantry_worker_step_time_seconds_total", &[]);
        let loader = value("gantry_worker_loader_wait_seconds_total", &[]);
        let collective = value("gantry_worker_collective_time_seconds_total", &[]);
        assert!(
            step_time > 0.0 && loader >= 0.0 && collective >= 0.0,
            "{step_time} {loader} {collective}"
        );
        assert!(
            loader + collective <= step_time,
            "parts {loader} + {collective} of {step_time}"
        );
        let share = value("gantry_worker_collective_share", &[]);
        assert!((0.0..=1.0).contains(&share), "share {share}");
        assert!(value("gantry_worker_images_per_second", &[]) > 0.0);
        // A checkpoint every 50 steps: none yet at step 3 or so, but the histogram is there.
        assert_eq!(
            during.family_type("gantry_worker_checkpoint_write_seconds"),
            Some("histogram")
        );
        assert_eq!(
            during.family_type("gantry_worker_step_duration_seconds"),
            Some("histogram")
        );
        let idle = scrape(&worker_url, None);
        assert_eq!(idle.value("gantry_worker_busy", &[]), Some(0.0));
        assert_eq!(
            idle.value("gantry_worker_runs_total", &[("outcome", "stopped")]),
            Some(1.0)
        );
        assert!(
            idle.value("gantry_worker_assignment", &[("job", id.as_str())])
                .is_none()
        );
    });
}

#[test]
fn under_tls_the_http_listener_speaks_https_with_the_same_certificate() {
    serial(async {
        let scratch = Scratch::new();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        std::fs::write(scratch.path("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(scratch.path("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        let coord = observed_coordinator_with(
            &scratch,
            &[
                "--tls-cert",
                scratch.path("cert.pem").to_str().unwrap(),
                "--tls-key",
                scratch.path("key.pem").to_str().unwrap(),
            ],
        );
        assert!(coord.url.starts_with("https://127.0.0.1:"), "{}", coord.url);
        let scraped = scrape_with(
            &format!("{}metrics", coord.url),
            Some(&scratch.path("job.token")),
            Some(&scratch.path("cert.pem")),
        );
        assert_eq!(scraped.status_without_token, 401);
        assert_eq!(scraped.value("gantry_workers_registered", &[]), Some(0.0));
        // The login's cookie is for HTTPS only.
        let login = format!(
            "import ssl, urllib.request, urllib.error\n\
             ctx = ssl.create_default_context(cafile='{ca}')\n\
             class Stay(urllib.request.HTTPRedirectHandler):\n    def redirect_request(self, *a): return None\n\
             opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), Stay)\n\
             try: opener.open('{url}login', data=('token=' + open('{token}').read().strip()).encode())\n\
             except urllib.error.HTTPError as e: print(e.code, e.headers['Set-Cookie'])\n",
            ca = scratch.path("cert.pem").display(),
            url = coord.url,
            token = scratch.path("job.token").display(),
        );
        let answer = ok(run_with(Command::new(python()).args(["-c", &login])));
        assert!(answer.starts_with("303 gantry_session="), "{answer}");
        assert!(answer.contains("; Secure"), "{answer}");
    });
}

#[test]
fn the_dashboard_in_a_browser_follows_real_jobs() {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(tool).is_file(),
            "{tool} is missing: run deploy/bootstrap.sh (it installs Debian's chromium and chromium-driver)"
        );
    }
    serial(async {
        let scratch = Scratch::new();
        let coord = observed_coordinator(&scratch);
        let _worker = worker(&scratch, &coord.addr, "w1");
        let long = submit(&scratch, &coord.addr, &job_file(&scratch, "long", 100_000, 25));
        let short = submit(&scratch, &coord.addr, &job_file(&scratch, "short", 40, 10));
        let screenshot = std::env::var_os("GANTRY_DASHBOARD_SCREENSHOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| scratch.path("dashboard.png"));
        let started = Instant::now();
        let out = run_with(
            Command::new(python())
                .arg(root().join("tests/browser/dashboard.py"))
                .env("GANTRY_DASHBOARD", &coord.url)
                .env("GANTRY_TOKEN_FILE", scratch.path("job.token"))
                .env("GANTRY_COORDINATOR", &coord.addr)
                .env("GANTRY_COORDINATOR_BIN", bin("coordinator"))
                .env("GANTRY_LONG_JOB", &long)
                .env("GANTRY_SHORT_JOB", &short)
                .env("GANTRY_SCREENSHOT", &screenshot)
                .env("GANTRY_BROWSER_LIMIT", LIMIT.as_secs().to_string()),
        );
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "tests/browser/dashboard.py failed ({}):\n{stdout}\n{stderr}\n--- coordinator.log\n{}\n--- w1.log\n{}",
            out.status,
            scratch.log("coordinator.log"),
            scratch.log("w1.log")
        );
        println!("{stdout}browser checks: {:.1} s", started.elapsed().as_secs_f64());
        let png = std::fs::read(&screenshot).unwrap();
        let image = image::load_from_memory(&png).unwrap();
        assert_eq!((image.width(), image.height()), (1280, 900));

        // What the page showed is what the job API says.
        let mut client = jobs(&coord.addr, JOB_TOKEN);
        for (id, expected) in [(&long, pb::JobState::Cancelled), (&short, pb::JobState::Succeeded)] {
            let job = get(&mut client, id).await;
            assert_eq!(job.state(), expected, "{id}: {}", job.reason);
        }
    });
}
