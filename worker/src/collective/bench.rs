//! `worker bench-allreduce`: bus bandwidth of [`Collective::all_reduce_mean`] between real
//! processes on loopback, beside a plain memory copy measured in the same run.
//!
//! nccl-tests' definitions: for a buffer of `B` bytes all-reduced in `t` seconds by `n` ranks,
//! algorithm bandwidth `B / t` and bus bandwidth `B / t * 2(n-1)/n` (what each rank sends and
//! receives in a ring), comparable across rank counts and with link (here memory) bandwidth.
//! The copy's bandwidth is `B / t` for a `B`-byte tensor copy (each byte read once and written
//! once), with the same libtorch thread count as each rank.

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::{Collective, GroupSpec, Rendezvous};

/// Why the benchmark stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The group or an exchange failed (in a rank).
    #[error(transparent)]
    Collective(#[from] super::Error),
    /// A rank's result lines could not be written.
    #[error("writing the benchmark's output failed")]
    Output(#[from] std::io::Error),
    /// A group of fewer than two ranks was asked for.
    #[error("an all-reduce benchmark needs at least 2 ranks, not {ranks}")]
    TooFewRanks {
        /// The group size asked for.
        ranks: usize,
    },
    /// A rank process could not be started.
    #[error("starting rank {rank} ({exe}) failed")]
    Start {
        /// The rank.
        rank: usize,
        /// The program.
        exe: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// A rank's output could not be read.
    #[error("reading the output of rank {rank} failed")]
    Read {
        /// The rank.
        rank: usize,
        /// The system's error.
        source: std::io::Error,
    },
    /// Rank 0 ended without reporting its store's port.
    #[error("rank 0 of {ranks} ended before opening its store ({status})")]
    NoStore {
        /// The group size.
        ranks: usize,
        /// How it ended.
        status: ExitStatus,
    },
    /// A rank failed (its error is on the benchmark's stderr).
    #[error("rank {rank} of {ranks} failed ({status}); its error is above")]
    RankFailed {
        /// The rank.
        rank: usize,
        /// The group size.
        ranks: usize,
        /// How it ended.
        status: ExitStatus,
    },
}

/// Bytes in one MiB, the unit of buffer sizes.
const MIB: usize = 1 << 20;

/// Untimed exchanges before each size's timed ones.
const WARMUP: usize = 2;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Group sizes.
    pub ranks: Vec<usize>,
    /// Buffer sizes, MiB of f32.
    pub sizes_mib: Vec<usize>,
    /// libtorch threads in each rank and in the copy.
    pub threads: i32,
    /// Each size runs about this many MiB through the timed all-reduces (at least 3, at most 200
    /// of them).
    pub budget_mib: usize,
    /// The group's timeout.
    pub timeout: Duration,
}

/// Timed all-reduces of each size for a buffer of `size_mib`.
pub fn iterations(size_mib: usize, budget_mib: usize) -> usize {
    (budget_mib / size_mib.max(1)).clamp(3, 200)
}

/// A rank's line of output.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Line {
    /// Rank 0's store is open at this port.
    Store { port: u16 },
    /// The mean time of one all-reduce of `size_mib`.
    Result {
        size_mib: usize,
        iterations: usize,
        seconds_per_op: f64,
    },
}

fn emit(out: &mut dyn Write, line: &Line) -> Result<(), BenchError> {
    writeln!(out, "{}", serde_json::to_string(line).expect("lines serialise"))?;
    out.flush()?;
    Ok(())
}

/// One rank of the benchmark: joins the group, then times the all-reduces of every size
/// (between store barriers, so that all ranks start each size together).
pub fn run_rank(
    spec: &GroupSpec,
    sizes_mib: &[usize],
    budget_mib: usize,
    out: &mut dyn Write,
) -> Result<(), BenchError> {
    let rendezvous = Rendezvous::new(spec)?;
    if spec.rank == 0 {
        emit(
            out,
            &Line::Store {
                port: rendezvous.port(),
            },
        )?;
    }
    let mut group = rendezvous.into_group()?;
    for &size_mib in sizes_mib {
        let buffer = Tensor::ones([(size_mib * MIB / 4) as i64], (Kind::Float, spec.device));
        for _ in 0..WARMUP {
            group.all_reduce_mean(&[&buffer])?;
        }
        group.barrier(spec.timeout)?;
        let iterations = iterations(size_mib, budget_mib);
        let started = Instant::now();
        for _ in 0..iterations {
            group.all_reduce_mean(&[&buffer])?;
        }
        if let Device::Cuda(i) = spec.device {
            tch::Cuda::synchronize(i as i64);
        }
        let seconds_per_op = started.elapsed().as_secs_f64() / iterations as f64;
        emit(
            out,
            &Line::Result {
                size_mib,
                iterations,
                seconds_per_op,
            },
        )?;
    }
    group.barrier(spec.timeout)?;
    Ok(())
}

/// Bandwidth of a plain tensor copy of `size_mib`, bytes per second.
fn copy_bandwidth(size_mib: usize, budget_mib: usize) -> f64 {
    let source = Tensor::ones([(size_mib * MIB / 4) as i64], (Kind::Float, Device::Cpu));
    let mut target = source.empty_like();
    for _ in 0..WARMUP {
        target.copy_(&source);
    }
    let iterations = iterations(size_mib, budget_mib);
    let started = Instant::now();
    for _ in 0..iterations {
        target.copy_(&source);
    }
    (size_mib * MIB * iterations) as f64 / started.elapsed().as_secs_f64()
}

/// One all-reduce measurement.
#[derive(Debug, Clone)]
pub struct AllReduceResult {
    /// Group size.
    pub ranks: usize,
    /// Buffer size, MiB.
    pub size_mib: usize,
    /// Mean time of one all-reduce on the slowest rank.
    pub seconds_per_op: f64,
}

impl AllReduceResult {
    /// Algorithm bandwidth, bytes per second.
    pub fn algbw(&self) -> f64 {
        (self.size_mib * MIB) as f64 / self.seconds_per_op
    }

    /// Bus bandwidth, bytes per second.
    pub fn busbw(&self) -> f64 {
        self.algbw() * 2.0 * (self.ranks - 1) as f64 / self.ranks as f64
    }
}

/// The benchmark's figures.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// libtorch threads per process.
    pub threads: i32,
    /// Copy bandwidth (bytes per second) by buffer size (MiB).
    pub copy: Vec<(usize, f64)>,
    /// All-reduce results.
    pub all_reduce: Vec<AllReduceResult>,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gb = |bytes_per_sec: f64| bytes_per_sec / 1e9;
        for (size_mib, bandwidth) in &self.copy {
            writeln!(
                f,
                "memcpy          size_mib={size_mib:<3} threads={} gb_per_s={:.2}",
                self.threads,
                gb(*bandwidth)
            )?;
        }
        for result in &self.all_reduce {
            let copy = self
                .copy
                .iter()
                .find(|(size, _)| *size == result.size_mib)
                .map_or(f64::NAN, |c| c.1);
            writeln!(
                f,
                "all_reduce_mean ranks={} size_mib={:<3} threads={} ms_per_op={:.2} algbw_gb_per_s={:.2} busbw_gb_per_s={:.2} busbw/memcpy={:.2}",
                result.ranks,
                result.size_mib,
                self.threads,
                result.seconds_per_op * 1e3,
                gb(result.algbw()),
                gb(result.busbw()),
                result.busbw() / copy
            )?;
        }
        Ok(())
    }
}

/// A rank process of the benchmark, and the lines it printed.
struct RankProcess {
    rank: usize,
    child: Child,
    lines: Box<dyn Iterator<Item = std::io::Result<String>> + Send>,
}

/// Starts rank `rank` of `ranks` as `exe bench-allreduce --rank ...`.
fn spawn_rank(
    exe: &Path,
    options: &BenchOptions,
    rank: usize,
    ranks: usize,
    address: &str,
    secret: &str,
) -> Result<RankProcess, BenchError> {
    let sizes = options
        .sizes_mib
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut child = Command::new(exe)
        .args([
            "bench-allreduce",
            "--address",
            address,
            "--secret",
            secret,
            "--sizes-mib",
            &sizes,
        ])
        .args(["--rank", &rank.to_string(), "--world-size", &ranks.to_string()])
        .args([
            "--threads",
            &options.threads.to_string(),
            "--budget-mib",
            &options.budget_mib.to_string(),
        ])
        .args(["--timeout-s", &options.timeout.as_secs_f64().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| BenchError::Start {
            rank,
            exe: exe.display().to_string(),
            source,
        })?;
    let stdout = child.stdout.take().expect("piped stdout");
    Ok(RankProcess {
        rank,
        child,
        lines: Box::new(BufReader::new(stdout).lines()),
    })
}

/// Runs the benchmark, starting every rank as a process of `exe` (the `worker` binary).
pub fn run(exe: &Path, options: &BenchOptions) -> Result<BenchReport, BenchError> {
    tch::set_num_threads(options.threads);
    let copy = options
        .sizes_mib
        .iter()
        .map(|&size| (size, copy_bandwidth(size, options.budget_mib)))
        .collect();
    let mut all_reduce = Vec::new();
    for &ranks in &options.ranks {
        if ranks < 2 {
            return Err(BenchError::TooFewRanks { ranks });
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let secret = format!("bench-{}-{nanos}", std::process::id());
        let mut processes = vec![spawn_rank(exe, options, 0, ranks, "127.0.0.1:0", &secret)?];
        let port = loop {
            match processes[0].lines.next() {
                Some(line) => {
                    let line = line.map_err(|source| BenchError::Read { rank: 0, source })?;
                    if let Ok(Line::Store { port }) = serde_json::from_str(&line) {
                        break port;
                    }
                }
                None => {
                    let status = processes[0].child.wait()?;
                    return Err(BenchError::NoStore { ranks, status });
                }
            }
        };
        let address = format!("127.0.0.1:{port}");
        for rank in 1..ranks {
            processes.push(spawn_rank(exe, options, rank, ranks, &address, &secret)?);
        }
        let mut slowest: Vec<AllReduceResult> = Vec::new();
        for mut process in processes {
            for line in process.lines.by_ref() {
                let line = line.map_err(|source| BenchError::Read {
                    rank: process.rank,
                    source,
                })?;
                if let Ok(Line::Result {
                    size_mib,
                    seconds_per_op,
                    ..
                }) = serde_json::from_str(&line)
                {
                    match slowest.iter_mut().find(|r| r.size_mib == size_mib) {
                        Some(r) => r.seconds_per_op = r.seconds_per_op.max(seconds_per_op),
                        None => slowest.push(AllReduceResult {
                            ranks,
                            size_mib,
                            seconds_per_op,
                        }),
                    }
                }
            }
            let status = process.child.wait()?;
            if !status.success() {
                return Err(BenchError::RankFailed {
                    rank: process.rank,
                    ranks,
                    status,
                });
            }
        }
        all_reduce.extend(slowest);
    }
    Ok(BenchReport {
        threads: options.threads,
        copy,
        all_reduce,
    })
}
