//! What a bench run measured ([`BenchReport`]), its latencies ([`Latencies`]) and the figures
//! it prints.

use std::io::Write;
use std::time::Duration;

use super::run::BenchOptions;

/// Latencies of one kind of call, in microseconds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Latencies(Vec<u32>);

impl Latencies {
    /// Adds one call's latency.
    pub(super) fn push(&mut self, d: Duration) {
        self.0.push(d.as_micros().min(u128::from(u32::MAX)) as u32);
    }

    /// Adds the latencies measured elsewhere.
    pub(super) fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// Calls measured.
    pub(crate) fn count(&self) -> usize {
        self.0.len()
    }

    /// The `q` quantile (0..=1), in milliseconds.
    pub(crate) fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let i = ((sorted.len() - 1) as f64 * q).round() as usize;
        f64::from(sorted[i]) / 1000.0
    }

    fn line(&self) -> String {
        format!(
            "n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms max={:.1} ms",
            self.count(),
            self.quantile_ms(0.5),
            self.quantile_ms(0.9),
            self.quantile_ms(0.99),
            self.quantile_ms(1.0)
        )
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct BenchReport {
    /// Workers registered, and how long that took.
    pub(crate) registered: usize,
    /// Seconds all registrations took.
    pub(crate) register_s: f64,
    /// Jobs submitted in the first burst.
    pub(crate) submitted: usize,
    /// Seconds the burst took.
    pub(crate) submit_s: f64,
    /// Latency of every submission (burst and replacements).
    pub(crate) submit: Latencies,
    /// Heartbeats during the submissions and the steady load.
    pub(crate) heartbeat: Latencies,
    /// Heartbeats during the steady load only.
    pub(crate) heartbeat_steady: Latencies,
    /// Reports (start, steps, checkpoints, ends).
    pub(crate) report: Latencies,
    /// Calls that failed (before the kill).
    pub(crate) heartbeat_errors: u64,
    /// Reports that failed (before the kill).
    pub(crate) report_errors: u64,
    /// Submissions that failed.
    pub(crate) submit_errors: u64,
    /// "register again" answers to live workers.
    pub(crate) register_again: u64,
    /// Workers the coordinator counted lost (`gantry_workers_lost_total` of its `/metrics`);
    /// `None`: its `/metrics` did not answer.
    pub(crate) workers_lost: Option<u64>,
    /// Simulated runs that ended (every rank's end acknowledged).
    pub(crate) runs_finished: u64,
    /// Seconds of steady load.
    pub(crate) steady_s: f64,
    /// Queued jobs at the end of the steady load.
    pub(crate) queued_at_end: usize,
    /// Job records written per second during the steady load, from the coordinator's
    /// `/metrics` (`gantry_job_records_written_total`).
    pub(crate) records_per_s: Option<f64>,
    /// The coordinator's resident memory at the end, and its peak, bytes.
    pub(crate) memory: Option<(u64, u64)>,
    /// Records in the store when the coordinator was killed (as listed after the restart).
    pub(crate) records: usize,
    /// Seconds from starting the killed coordinator's successor to its first answer.
    pub(crate) restart_s: Option<f64>,
    /// Seconds to list every job (pages of 1000) after the restart.
    pub(crate) list_all_s: Option<f64>,
    /// Acknowledged jobs missing, or in the wrong state, after the restart.
    pub(crate) missing: Vec<String>,
}

impl BenchReport {
    /// Submissions per second of the first burst.
    pub(crate) fn submit_rate(&self) -> f64 {
        self.submitted as f64 / self.submit_s.max(1e-9)
    }

    /// What must not happen at any speed: a lost live worker, a failed call, a lost record.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let lost = self.workers_lost.unwrap_or(0);
        if lost > 0 || self.register_again > 0 {
            problems.push(format!(
                "false losses: {lost} workers lost, {} \"register again\" answers",
                self.register_again
            ));
        }
        if self.workers_lost.is_none() {
            problems.push("the coordinator's /metrics did not answer: lost workers not counted".to_string());
        }
        for (what, n) in [
            ("heartbeats", self.heartbeat_errors),
            ("reports", self.report_errors),
            ("submissions", self.submit_errors),
        ] {
            if n > 0 {
                problems.push(format!("{n} {what} failed"));
            }
        }
        if !self.missing.is_empty() {
            problems.push(format!(
                "{} acknowledged jobs missing or wrong after the restart: {}",
                self.missing.len(),
                self.missing.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
            ));
        }
        problems
    }

    /// The figures, one per line.
    pub(crate) fn write(&self, options: &BenchOptions, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "load: {} workers, {} jobs of {} ranks queued, runs of {:.0} s, heartbeat timeout {:.1} s (heartbeat every {:.2} s)",
            options.workers,
            options.jobs,
            options.ranks,
            options.run_seconds,
            options.heartbeat_timeout,
            options.heartbeat_timeout / 4.0
        )?;
        writeln!(
            out,
            "register:  {} workers in {:.2} s",
            self.registered, self.register_s
        )?;
        writeln!(
            out,
            "submit:    {} jobs in {:.2} s = {:.0} jobs/s; latency {}",
            self.submitted,
            self.submit_s,
            self.submit_rate(),
            self.submit.line()
        )?;
        writeln!(out, "heartbeat: {}", self.heartbeat.line())?;
        writeln!(out, "heartbeat (steady load only): {}", self.heartbeat_steady.line())?;
        writeln!(out, "report:    {}", self.report.line())?;
        writeln!(
            out,
            "errors:    heartbeats {}, reports {}, submissions {}",
            self.heartbeat_errors, self.report_errors, self.submit_errors
        )?;
        let lost = self.workers_lost.unwrap_or(0);
        writeln!(
            out,
            "false losses: {} (workers lost: {}, \"register again\" answers: {})",
            lost + self.register_again,
            self.workers_lost.map_or("not read".to_string(), |n| n.to_string()),
            self.register_again
        )?;
        writeln!(
            out,
            "steady:    {:.0} s, {} runs ended ({:.1}/s), {} jobs queued at the end",
            self.steady_s,
            self.runs_finished,
            self.runs_finished as f64 / self.steady_s.max(1e-9),
            self.queued_at_end
        )?;
        match self.records_per_s {
            Some(rate) => writeln!(out, "records written: {rate:.1}/s during the steady load")?,
            None => writeln!(
                out,
                "records written: not measured (the coordinator's /metrics did not answer)"
            )?,
        }
        if let Some((rss, peak)) = self.memory {
            writeln!(
                out,
                "coordinator memory: {:.0} MiB resident, {:.0} MiB peak",
                rss as f64 / 1048576.0,
                peak as f64 / 1048576.0
            )?;
        }
        if let Some(restart) = self.restart_s {
            writeln!(
                out,
                "restart after SIGKILL: {} records, first answer after {restart:.2} s, all listed after {:.2} s, {} acknowledged jobs missing or wrong",
                self.records,
                self.list_all_s.unwrap_or(0.0),
                self.missing.len()
            )?;
        }
        Ok(())
    }
}
