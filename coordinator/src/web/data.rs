//! What the dashboard shows, as JSON: job summaries (state, progress, ETA, attempts), a job's
//! curves, its ranks and latest sample grid, and the workers.
//!
//! A job's curves are its `<output>/metrics.jsonl` in storage (rewritten by rank 0 at each
//! checkpoint; read again only when it changed), followed by the steps reported live since,
//! which [`History`] keeps for the most recently active jobs.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use base::layout::{self, METRICS_FILE};
use gantry_proto::pb;
use serde_json::{Value, json};

use crate::core::{Core, JobRecord, State, WorkerInfo};

/// Steps kept per job from the live stream (those since its last `metrics.jsonl`).
const LIVE_STEPS: usize = 4096;
/// Jobs whose live steps are kept; the least recently active go first.
const LIVE_JOBS: usize = 32;
/// Points of a loss curve sent to the page, at most (longer runs are thinned evenly).
pub const MAX_POINTS: usize = 1500;
/// Jobs in the dashboard's table: every job that has not ended (up to this many) ...
const TABLE_ACTIVE: usize = 1000;
/// ... and the most recent that have.
const TABLE_RECENT: usize = 200;
/// Runs whose parsed `metrics.jsonl` is kept.
const FILE_CACHE: usize = 16;

/// Steps reported live, per job.
#[derive(Debug, Default)]
pub struct History {
    jobs: Mutex<HashMap<String, (u64, VecDeque<pb::StepMetrics>)>>,
    clock: std::sync::atomic::AtomicU64,
}

impl History {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (u64, VecDeque<pb::StepMetrics>)>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A step of `job`.
    pub fn record(&self, job: &str, metrics: &pb::StepMetrics) {
        let now = self.clock.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut jobs = self.lock();
        if !jobs.contains_key(job)
            && jobs.len() >= LIVE_JOBS
            && let Some(stalest) = jobs.iter().min_by_key(|(_, (t, _))| *t).map(|(k, _)| k.clone())
        {
            jobs.remove(&stalest);
        }
        let (touched, steps) = jobs.entry(job.to_string()).or_default();
        *touched = now;
        // A restarted attempt replays steps after its checkpoint: the newer ones replace them.
        while steps.back().is_some_and(|last| last.step >= metrics.step) {
            steps.pop_back();
        }
        if steps.len() == LIVE_STEPS {
            steps.pop_front();
        }
        steps.push_back(metrics.clone());
    }

    /// The live steps of `job` after step `after`.
    pub fn after(&self, job: &str, after: u64) -> Vec<pb::StepMetrics> {
        self.lock()
            .get(job)
            .map(|(_, steps)| steps.iter().filter(|m| m.step > after).cloned().collect())
            .unwrap_or_default()
    }
}

/// Parsed `metrics.jsonl` files, by output URL, with the version they were read at.
#[derive(Debug, Default)]
pub struct MetricsFiles {
    entries: Mutex<HashMap<String, (FileVersion, Steps)>>,
}

type FileVersion = base::ObjectVersion;
/// The steps of a metrics file, shared with the requests that read it.
type Steps = Arc<Vec<pb::StepMetrics>>;

impl MetricsFiles {
    /// The steps in `<output>/metrics.jsonl` (none when it does not exist yet).
    pub async fn read(&self, output: &str) -> base::Result<Steps> {
        let location = base::Location::parse(output)?;
        let Some(version) = location.version(METRICS_FILE).await? else {
            return Ok(Arc::default());
        };
        if let Some((known, steps)) = self.lock().get(output)
            && *known == version
        {
            return Ok(steps.clone());
        }
        let Some(bytes) = location.get_opt(METRICS_FILE).await? else {
            return Ok(Arc::default());
        };
        let steps = tokio::task::spawn_blocking(move || parse_metrics(&bytes))
            .await
            .unwrap_or_default();
        let steps = Arc::new(steps);
        let mut entries = self.lock();
        if entries.len() >= FILE_CACHE {
            entries.clear();
        }
        entries.insert(output.to_string(), (version, steps.clone()));
        Ok(steps)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (FileVersion, Steps)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The steps of a `metrics.jsonl`, in step order (a line that does not parse is skipped; a
/// step written twice keeps its last line).
pub fn parse_metrics(bytes: &[u8]) -> Vec<pb::StepMetrics> {
    let mut steps: Vec<pb::StepMetrics> = bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect();
    steps.reverse();
    steps.sort_by_key(|m| m.step);
    steps.dedup_by_key(|m| m.step);
    steps
}

/// Every `stride`-th element and the last, so that at most `max` remain.
pub fn thin<T: Clone>(items: &[T], max: usize) -> Vec<T> {
    if items.len() <= max || max < 2 {
        return items.to_vec();
    }
    let stride = items.len().div_ceil(max - 1);
    let mut out: Vec<T> = items.iter().step_by(stride).cloned().collect();
    if !(items.len() - 1).is_multiple_of(stride) {
        out.push(items[items.len() - 1].clone());
    }
    out
}

/// A step as a point of the loss curves: `[step, c_loss, c_wass_loss, c_gp, g_loss, images/s]`.
pub fn point(m: &pb::StepMetrics) -> Value {
    json!([m.step, m.c_loss, m.c_wass_loss, m.c_gp, m.g_loss, m.images_per_sec])
}

/// An evaluation as the page draws it.
pub fn evaluation(e: &pb::Evaluation) -> Value {
    json!({
        "step": e.step,
        "accuracy": e.accuracy,
        "label_swap": e.label_swap,
        "frechet": e.frechet,
        "classifier_accuracy": e.classifier_accuracy,
        "samples_per_class": e.samples_per_class,
        "classes": e.classes.iter().map(|c| json!({
            "name": c.name,
            "accuracy": c.accuracy,
            "frechet": c.frechet,
            "classifier_accuracy": c.classifier_accuracy,
        })).collect::<Vec<_>>(),
    })
}

/// One job as the table shows it. `view` is the core's view of it (its derived reason).
pub fn summary(record: &JobRecord, view: &pb::Job) -> Value {
    let steps = record.config.train.steps;
    let metrics = record.metrics.as_ref();
    let step = metrics.map_or(0, |m| m.step);
    let images_per_sec = metrics.map_or(0.0, |m| m.images_per_sec);
    let batch = record.config.train.batch_size.max(1) as f64;
    let eta = (record.state == State::Running && images_per_sec > 0.0 && step < steps)
        .then(|| (steps - step) as f64 * batch / images_per_sec);
    let restarts = record
        .attempts
        .iter()
        .filter(|a| !a.preempted)
        .count()
        .saturating_sub(1);
    let preemptions = record.attempts.iter().filter(|a| a.preempted).count();
    json!({
        "id": record.id,
        "name": record.config.job.name,
        "state": record.state.label(),
        "reason": view.reason,
        "queue_position": view.queue_position,
        "step": step,
        "steps": steps,
        "epoch": metrics.map_or(0, |m| m.epoch),
        "images_per_sec": images_per_sec,
        "eta_seconds": eta,
        "losses": metrics.map(|m| json!({
            "c_loss": m.c_loss, "c_wass_loss": m.c_wass_loss, "c_gp": m.c_gp, "g_loss": m.g_loss,
        })),
        // Where a step's time goes (0 from workers that do not measure it).
        "timing": metrics.filter(|m| m.step_seconds > 0.0).map(|m| json!({
            "step_seconds": m.step_seconds,
            "loader_wait_seconds": m.loader_wait_seconds,
            "collective_seconds": m.collective_seconds,
        })),
        "workers": record.config.job.workers,
        "device": record.config.train.device.to_string(),
        "batch_size": record.config.train.batch_size,
        "priority": record.config.job.priority,
        "max_restarts": record.config.job.max_restarts,
        "restarts": restarts,
        "preemptions": preemptions,
        "attempts": record.attempts.iter().map(|a| json!({
            "number": a.number,
            "workers": a.workers,
            "started_ms": a.started_ms,
            "ended_ms": a.ended_ms,
            "resumed_from": a.resumed_from,
            "reason": a.reason,
            "preempted": a.preempted,
        })).collect::<Vec<_>>(),
        "submitted_ms": record.submitted_ms,
        "finished_ms": record.finished_ms,
        "checkpoint_step": record.checkpoint.as_ref().map(|(s, _)| *s),
        "output": record.config.output.url,
        "data": record.config.data.url,
        "evaluation": record.evaluation.as_ref().map(evaluation),
    })
}

/// The jobs of the table, newest first: those that have not ended, then the latest that have.
pub fn jobs(core: &Core) -> Value {
    let all = core.list(&[]);
    let active: Vec<&JobRecord> = all
        .iter()
        .rev()
        .filter(|j| matches!(j.state, State::Queued | State::Running))
        .take(TABLE_ACTIVE)
        .copied()
        .collect();
    let ended: Vec<&JobRecord> = all
        .iter()
        .rev()
        .filter(|j| !matches!(j.state, State::Queued | State::Running))
        .take(TABLE_RECENT)
        .copied()
        .collect();
    let mut shown: Vec<&JobRecord> = active.into_iter().chain(ended).collect();
    shown.sort_by_key(|j| std::cmp::Reverse(j.seq));
    let views = core.views(&shown);
    let total = all.len();
    json!({
        "total": total,
        "jobs": shown.iter().zip(&views).map(|(r, v)| summary(r, v)).collect::<Vec<_>>(),
    })
}

/// The pool.
pub fn workers(workers: &[WorkerInfo]) -> Value {
    json!({ "workers": workers })
}

/// A job's ranks in its current (or last) attempt, each with its worker when still registered.
pub fn ranks(record: &JobRecord, workers: &[WorkerInfo]) -> Value {
    let Some(attempt) = record.attempts.last() else {
        return json!([]);
    };
    let ranks: Vec<Value> = attempt
        .workers
        .iter()
        .enumerate()
        .map(|(rank, id)| {
            let worker = workers.iter().find(|w| &w.id == id);
            json!({
                "rank": rank,
                "worker_id": id,
                "address": attempt.peers.get(rank),
                "hostname": worker.map(|w| w.hostname.clone()),
                "device": worker.map(|w| w.device.clone()),
                "registered": worker.is_some(),
                "running_it": worker.is_some_and(|w| w.job_id.as_deref() == Some(record.id.as_str())
                    && w.attempt == Some(attempt.number)),
            })
        })
        .collect();
    json!({ "attempt": attempt.number, "ended": attempt.ended_ms != 0, "ranks": ranks })
}

/// The latest sample grid in `<output>/samples/`, if any: (file name, step).
pub async fn latest_sample(output: &str) -> base::Result<Option<(String, u64)>> {
    let samples = base::Location::parse(output)?.join(layout::SAMPLES);
    let names = match samples.list_names().await {
        Ok(names) => names,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(names
        .into_iter()
        .filter_map(|n| Some((layout::sample_step(&n)?, n)))
        .max_by_key(|(step, _)| *step)
        .map(|(step, n)| (n, step)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_lines_parse_in_step_order_and_thin_evenly() {
        let text = "{\"step\":2,\"c_loss\":1.5}\n{\"step\":1}\nnot json\n\n{\"step\":2,\"c_loss\":2.5}\n";
        let steps = parse_metrics(text.as_bytes());
        assert_eq!(steps.iter().map(|m| m.step).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(steps[1].c_loss, 2.5);
        let items: Vec<u32> = (0..10).collect();
        assert_eq!(thin(&items, 20), items);
        let thinned = thin(&items, 4);
        assert!(thinned.len() <= 5, "{thinned:?}");
        assert_eq!((thinned[0], *thinned.last().unwrap()), (0, 9));
    }

    #[test]
    fn live_steps_replace_replayed_ones_and_stay_bounded() {
        let history = History::default();
        let m = |step| pb::StepMetrics {
            step,
            ..Default::default()
        };
        for step in 1..=10 {
            history.record("a", &m(step));
        }
        // A restart from step 6 replays 7..
        history.record("a", &m(7));
        assert_eq!(
            history.after("a", 4).iter().map(|m| m.step).collect::<Vec<_>>(),
            vec![5, 6, 7]
        );
        for job in 0..LIVE_JOBS + 5 {
            history.record(&format!("j{job}"), &m(1));
        }
        assert!(history.lock().len() <= LIVE_JOBS);
        assert!(history.after("a", 0).is_empty());
        assert_eq!(layout::sample_step("step-0000040.png"), Some(40));
        assert!(layout::sample_step("step-40.png").is_none() && layout::sample_step("../x.png").is_none());
    }
}
