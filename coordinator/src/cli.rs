//! The job CLI: `coordinator submit|status|list|cancel|watch`, as a thin layer over the job
//! service's client. Output is line-oriented so scripts can read it: `submit` prints the job id
//! alone on its first line; `--wait` and `watch` end with the job's final state and exit
//! non-zero unless it SUCCEEDED.

use std::io::Write;
use std::path::Path;

use gantry_job::{JobConfig, JobError};
use gantry_proto::auth::Token;
use gantry_proto::client::ConnectError;
use gantry_proto::pb;
use gantry_proto::pb::job_service_client::JobServiceClient;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;

/// What the CLI can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The coordinator address or TLS settings.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The job file.
    #[error(transparent)]
    Job(#[from] JobError),
    /// A call failed; `status` carries the coordinator's code and message.
    #[error("{call}: {}: {}", status.code(), status.message())]
    Rpc {
        /// The call.
        call: &'static str,
        /// The answer.
        status: tonic::Status,
    },
    /// The job ended without succeeding.
    #[error("job {id} is {state}: {reason}")]
    NotSucceeded {
        /// The job.
        id: String,
        /// Its final state.
        state: &'static str,
        /// Why.
        reason: String,
    },
    /// Writing the output failed.
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
}

type Result<T, E = CliError> = std::result::Result<T, E>;

/// A job-service client that sends the token on every call.
pub type JobClient = JobServiceClient<InterceptedService<Channel, Token>>;

/// A client of the coordinator at `url`.
pub fn connect(url: &str, token: Token, ca: Option<&Path>) -> Result<JobClient> {
    let channel = gantry_proto::client::channel(url, ca)?;
    Ok(JobServiceClient::with_interceptor(channel, token))
}

fn rpc(call: &'static str) -> impl FnOnce(tonic::Status) -> CliError {
    move |status| CliError::Rpc { call, status }
}

/// Reads a job file, submits it, and prints the new job's id.
pub async fn submit(client: &mut JobClient, file: &Path, out: &mut impl Write) -> Result<pb::Job> {
    let mut config = JobConfig::from_file(file)?;
    // The coordinator and the workers run elsewhere, in other folders: a relative path means
    // this shell's folder, as it does for `worker train`.
    config.data.url = absolute(&config.data.url);
    config.output.url = absolute(&config.output.url);
    let request = pb::SubmitJobRequest {
        spec: Some(pb::JobSpec::from(&config)),
    };
    let response = client.submit_job(request).await.map_err(rpc("submit"))?;
    let job = response.into_inner().job.expect("submit answers the job");
    writeln!(out, "{}", job.id)?;
    Ok(job)
}

/// A relative local path made absolute against the current folder; URLs and absolute paths
/// are left alone.
fn absolute(url: &str) -> String {
    let path = Path::new(url);
    if url.is_empty() || url.contains("://") || path.is_absolute() {
        return url.to_string();
    }
    match std::env::current_dir() {
        Ok(cwd) => cwd.join(path).display().to_string(),
        Err(_) => url.to_string(),
    }
}

/// One job, in full.
pub async fn status(client: &mut JobClient, id: &str, out: &mut impl Write) -> Result<pb::Job> {
    let job = client
        .get_job(pb::GetJobRequest { id: id.to_string() })
        .await
        .map_err(rpc("status"))?
        .into_inner();
    write_status(&job, out)?;
    Ok(job)
}

fn write_status(job: &pb::Job, out: &mut impl Write) -> std::io::Result<()> {
    let config = job.spec.as_ref().and_then(|s| JobConfig::from_spec(s).ok());
    writeln!(out, "id:         {}", job.id)?;
    if let Some(c) = &config {
        if !c.job.name.is_empty() {
            writeln!(out, "name:       {}", c.job.name)?;
        }
        writeln!(
            out,
            "data:       {} ({}, {})",
            c.data.url, c.data.condition, c.data.split
        )?;
        writeln!(out, "output:     {}", c.output.url)?;
        writeln!(
            out,
            "workers:    {} (priority {}, max_restarts {})",
            c.job.workers, c.job.priority, c.job.max_restarts
        )?;
    }
    writeln!(out, "state:      {}", job.state().label())?;
    writeln!(out, "reason:     {}", job.reason)?;
    if job.queue_position > 0 {
        writeln!(out, "queue:      place {}", job.queue_position)?;
    }
    if let Some(m) = &job.metrics {
        let total = config.as_ref().map_or(0, |c| c.train.steps);
        writeln!(out, "step:       {}/{total}  {}", m.step, metrics_line(m))?;
    }
    if let Some(c) = &job.checkpoint {
        writeln!(out, "checkpoint: step {} {}", c.step, c.url)?;
    }
    for a in &job.attempts {
        let resumed = if a.resumed_from > 0 {
            format!(", resumed from step {}", a.resumed_from)
        } else {
            String::new()
        };
        let ended = if a.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", a.reason)
        };
        writeln!(
            out,
            "attempt {}:  on {}{resumed}{ended}",
            a.number,
            a.workers.join(", ")
        )?;
    }
    Ok(())
}

fn metrics_line(m: &pb::StepMetrics) -> String {
    format!(
        "c_loss {:.4}  c_wass_loss {:.4}  c_gp {:.4}  g_loss {:.4}  {:.1} img/s",
        m.c_loss, m.c_wass_loss, m.c_gp, m.g_loss, m.images_per_sec
    )
}

/// Jobs (in `states` and named `name`, when given), one line each, reading the coordinator's
/// pages in turn.
pub async fn list(
    client: &mut JobClient,
    states: Vec<pb::JobState>,
    name: &str,
    out: &mut impl Write,
) -> Result<Vec<pb::Job>> {
    writeln!(
        out,
        "{:<12} {:<10} {:>7} {:>9}  {:<16} REASON",
        "ID", "STATE", "ATTEMPT", "STEP", "NAME"
    )?;
    let mut request = pb::ListJobsRequest {
        states: states.into_iter().map(|s| s as i32).collect(),
        page_size: LIST_PAGE,
        page_token: String::new(),
        name: name.to_string(),
    };
    let mut jobs = Vec::new();
    loop {
        let page = client
            .list_jobs(request.clone())
            .await
            .map_err(rpc("list"))?
            .into_inner();
        for job in &page.jobs {
            let config = job.spec.as_ref().and_then(|s| JobConfig::from_spec(s).ok());
            let steps = config.as_ref().map_or(0, |c| c.train.steps);
            // A run resumed at its last step reports no step, only its checkpoint.
            let step = job
                .metrics
                .as_ref()
                .map(|m| m.step)
                .max(job.checkpoint.as_ref().map(|c| c.step))
                .unwrap_or(0);
            writeln!(
                out,
                "{:<12} {:<10} {:>7} {:>9}  {:<16} {}",
                job.id,
                job.state().label(),
                job.attempts.len(),
                format!("{step}/{steps}"),
                config.map(|c| c.job.name).unwrap_or_default(),
                job.reason
            )?;
        }
        jobs.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return Ok(jobs);
        }
        request.page_token = page.next_page_token;
    }
}

/// Jobs per ListJobs call of [`list`] (the coordinator's most).
const LIST_PAGE: u32 = 1000;

/// Cancels a job.
pub async fn cancel(client: &mut JobClient, id: &str, reason: &str, out: &mut impl Write) -> Result<pb::Job> {
    let request = pb::CancelJobRequest {
        id: id.to_string(),
        reason: reason.to_string(),
    };
    let job = client.cancel_job(request).await.map_err(rpc("cancel"))?.into_inner();
    writeln!(out, "{} {}: {}", job.id, job.state().label(), job.reason)?;
    Ok(job)
}

/// Follows a job to its end, one line per event (with `bar`, steps move a progress bar
/// instead, for a terminal); fails unless it SUCCEEDED.
pub async fn watch(client: &mut JobClient, id: &str, out: &mut impl Write, bar: bool) -> Result<pb::Job> {
    let mut stream = client
        .watch_job(pb::WatchJobRequest { id: id.to_string() })
        .await
        .map_err(rpc("watch"))?
        .into_inner();
    let mut last: Option<pb::Job> = None;
    let progress = bar.then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("step {pos}/{len} {bar:30} eta {eta}  {msg}")
                .expect("valid template"),
        );
        bar
    });
    // Lines go above the bar, when there is one.
    let line = |out: &mut dyn Write, text: String| -> std::io::Result<()> {
        match &progress {
            Some(bar) => {
                bar.println(text);
                Ok(())
            }
            None => writeln!(out, "{text}").and_then(|()| out.flush()),
        }
    };
    while let Some(event) = stream.message().await.map_err(rpc("watch"))? {
        match event.event {
            Some(pb::job_event::Event::Job(job)) => {
                let changed = last
                    .as_ref()
                    .is_none_or(|l| l.state != job.state || l.reason != job.reason);
                if changed {
                    line(out, format!("{} {}: {}", job.id, job.state().label(), job.reason))?;
                }
                if let Some(bar) = &progress {
                    let total = job.spec.as_ref().and_then(|s| s.train.as_ref()).and_then(|t| t.steps);
                    bar.set_length(total.unwrap_or(0));
                    if job.state().is_final() {
                        bar.finish_and_clear();
                    }
                }
                last = Some(job);
            }
            Some(pb::job_event::Event::Metrics(m)) => {
                match &progress {
                    Some(bar) => {
                        bar.set_position(m.step);
                        bar.set_message(metrics_line(&m));
                    }
                    None => line(out, format!("step {}  {}", m.step, metrics_line(&m)))?,
                }
                if let Some(e) = &m.evaluation {
                    line(out, evaluation_line(e))?;
                }
            }
            Some(pb::job_event::Event::Checkpoint(c)) => line(out, format!("checkpoint step {} {}", c.step, c.url))?,
            None => {}
        }
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let job = last.ok_or_else(|| CliError::Rpc {
        call: "watch",
        status: tonic::Status::internal("the stream ended before the job's state arrived"),
    })?;
    if !job.state().is_final() {
        return Err(CliError::Rpc {
            call: "watch",
            status: tonic::Status::unavailable(format!(
                "the coordinator ended the stream while job {} was {}",
                job.id,
                job.state().label()
            )),
        });
    }
    if job.state() == pb::JobState::Succeeded {
        Ok(job)
    } else {
        Err(CliError::NotSucceeded {
            id: job.id.clone(),
            state: job.state().label(),
            reason: job.reason.clone(),
        })
    }
}

/// One line for an evaluation: overall figures, then per-class accuracy.
fn evaluation_line(e: &pb::Evaluation) -> String {
    let classes: Vec<String> = e
        .classes
        .iter()
        .map(|c| format!("{} {:.3}", c.name, c.accuracy))
        .collect();
    format!(
        "eval step {}  accuracy {:.3} (classifier {:.3})  label swap {:.3}  feature Fréchet {:.3}  [{}]  {}",
        e.step,
        e.accuracy,
        e.classifier_accuracy,
        e.label_swap,
        e.frechet,
        classes.join(", "),
        e.url
    )
}
