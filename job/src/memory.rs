//! How much memory a job's training step needs on one rank, from its spec alone: before a
//! coordinator queues it, when the scheduler places it, and before a worker builds its model.
//!
//! `bytes = BASE + 4 (PARAM_COPIES params + ACTIVATION_COPIES rows (critic + generator
//! activations per image))`, float32 throughout, `rows` being the per-rank batch. The copies
//! are fitted (least squares, then rounded up) to the peak resident memory of `worker bench`
//! on the CPU at eight sizes from 32x32/width 32/batch 8 (497 MiB) to 64x64/width 128/batch 64
//! (881 MiB) and 32x32/width 512/batch 8 (949 MiB): the estimate is within -4.1% and +7.3% of
//! each. A CUDA device holds the same tensors, without the process's base.

use std::fmt;

use crate::JobConfig;

/// What a worker process holds before any model: libtorch with its CUDA backend loaded
/// (measured: 469 MiB resident for `worker device`).
pub const BASE_BYTES: u64 = 470 << 20;
/// Parameter-sized tensors alive during a step (fitted: 8.6): the weights, Adam's flat gradient
/// buffer and two moments, the gradients autograd returns, and oneDNN's reordered weights.
pub const PARAM_COPIES: f64 = 9.0;
/// Activation-sized tensors alive at a step's peak, per image, in units of one forward pass's
/// activations of both networks (fitted: 5.8): the fakes' and reals' critic passes with their
/// graphs, the interpolates' tape and hand-built input gradient, the backward's temporaries.
pub const ACTIVATION_COPIES: f64 = 6.0;

/// A step's memory on one rank, and what it is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryEstimate {
    /// Trainable parameters of both networks.
    pub parameters: u64,
    /// Activation elements of one forward pass of both networks, per image.
    pub activations_per_image: u64,
    /// Images per rank and step.
    pub rows: u64,
    /// The estimate, bytes.
    pub bytes: u64,
}

impl MemoryEstimate {
    /// The estimate for `config` on a dataset with `channels` and `classes`.
    pub fn of(config: &JobConfig, channels: u64, classes: u64) -> MemoryEstimate {
        let m = &config.model;
        let size = m.image_size.max(4) as u64;
        let width = m.width.max(2) as u64;
        let z = m.z_dim.max(1) as u64;
        let doublings = (size / 4).max(1).trailing_zeros() as u64;
        let conv = |cin: u64, cout: u64| cin * cout * 16 + cout;
        // Critic: the image with its label planes, then one stride-2 block per halving (the
        // first at half width), then a 4x4 convolution to one score.
        let mut critic_params = 0;
        let mut critic_acts = (channels + classes) * size * size;
        let mut cin = channels + classes;
        for i in 0..doublings {
            let cout = if i == 0 { width / 2 } else { width };
            let side = size >> (i + 1);
            critic_params += conv(cin, cout);
            critic_acts += cout * side * side;
            cin = cout;
        }
        critic_params += conv(cin, 1);
        // Generator: z and the label to 4x4, one stride-2 block per doubling (the last hidden
        // one at half width), each with BatchNorm, then the image.
        let mut gen_params = (z + classes) * width * 16 + 2 * width;
        let mut gen_acts = width * 16;
        let mut cin = width;
        let hidden = doublings.saturating_sub(1);
        for i in 0..hidden {
            let cout = if i + 1 == hidden { width / 2 } else { width };
            let side = 8u64 << i;
            gen_params += cin * cout * 16 + 2 * cout;
            gen_acts += cout * side * side;
            cin = cout;
        }
        gen_params += conv(cin, channels);
        gen_acts += channels * size * size;
        let parameters = critic_params + gen_params;
        let activations_per_image = critic_acts + gen_acts;
        let workers = u64::from(config.job.workers.max(1));
        let rows = (config.train.batch_size.max(1) as u64).div_ceil(workers);
        let floats = PARAM_COPIES * parameters as f64 + ACTIVATION_COPIES * (rows * activations_per_image) as f64;
        MemoryEstimate {
            parameters,
            activations_per_image,
            rows,
            bytes: BASE_BYTES + (4.0 * floats) as u64,
        }
    }
}

/// Bytes as people read them: `31.2 GiB`, `640 MiB`.
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        if b >= (1u64 << 30) as f64 {
            write!(f, "{:.1} GiB", b / (1u64 << 30) as f64)
        } else {
            write!(f, "{:.0} MiB", b / (1u64 << 20) as f64)
        }
    }
}

impl JobConfig {
    /// The memory a step of this job needs on one rank, on a dataset with `channels` and
    /// `classes`.
    pub fn memory_estimate(&self, channels: u64, classes: u64) -> MemoryEstimate {
        MemoryEstimate::of(self, channels, classes)
    }

    /// Why the job cannot run in `available` bytes (`where_` says whose, e.g. "the largest
    /// worker has"), naming the keys that size it and the figures; None when it fits.
    pub fn memory_problem(&self, estimate: &MemoryEstimate, available: u64, where_: &str) -> Option<String> {
        (estimate.bytes > available).then(|| {
            format!(
                "model.width {}, model.image_size {} and train.batch_size {} ({} per rank) need about {} per rank; {where_} {}",
                self.model.width,
                self.model.image_size,
                self.train.batch_size,
                estimate.rows,
                Bytes(estimate.bytes),
                Bytes(available)
            )
        })
    }
}

/// `8GiB`, `512MiB`, `2G`, `1048576`: a byte count with an optional binary unit.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 8GiB, 512MiB)"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1u64,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        "t" | "tib" | "tb" => 1 << 40,
        other => return Err(format!("{text:?}: unknown unit {other:?} (B, KiB, MiB, GiB, TiB)")),
    };
    Ok((value * scale as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(width: i64, size: i64, batch: i64, workers: u32) -> JobConfig {
        let mut c =
            JobConfig::from_toml("[data]\nurl = \"memory://d\"\n[output]\nurl = \"memory://o\"\n", "test").unwrap();
        c.model.width = width;
        c.model.image_size = size;
        c.train.batch_size = batch;
        c.job.workers = workers;
        c
    }

    #[test]
    fn the_estimate_follows_the_measured_peaks() {
        // Peak resident memory of `worker bench` at these sizes (MiB), and the tolerance stated
        // in the module's documentation.
        for (width, size, batch, measured) in [(32, 32, 8, 496.9), (128, 64, 64, 881.2), (512, 32, 8, 948.5)] {
            let e = job(width, size, batch, 1).memory_estimate(3, 2);
            let mib = e.bytes as f64 / (1u64 << 20) as f64;
            let error = (mib - measured) / measured;
            assert!(
                (-0.05..0.08).contains(&error),
                "width {width}: {mib:.0} MiB against {measured}"
            );
        }
        // The book's networks: 0.73 M + 0.66 M parameters.
        assert_eq!(job(128, 64, 128, 1).memory_estimate(3, 2).parameters, 728_963 + 662_977);
    }

    #[test]
    fn a_job_too_large_for_its_worker_is_named_with_its_figures() {
        let huge = job(6000, 32, 8, 1);
        let e = huge.memory_estimate(3, 2);
        let problem = huge.memory_problem(&e, 24 << 30, "the largest worker has").unwrap();
        assert!(
            problem
                .starts_with("model.width 6000, model.image_size 32 and train.batch_size 8 (8 per rank) need about "),
            "{problem}"
        );
        assert!(
            problem.ends_with("per rank; the largest worker has 24.0 GiB"),
            "{problem}"
        );
        assert!(e.bytes > 24 << 30);
        // Ranks share the batch: per-rank rows shrink with the workers.
        let book = job(128, 64, 128, 4);
        assert_eq!(book.memory_estimate(3, 2).rows, 32);
        assert!(book.memory_problem(&book.memory_estimate(3, 2), 2 << 30, "x").is_none());
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_bytes("8GiB"), Ok(8 << 30));
        assert_eq!(parse_bytes("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5G"), Ok(3 << 29));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("lots").unwrap_err().contains("is not a size"));
        assert!(parse_bytes("3 parsecs").unwrap_err().contains("unknown unit"));
    }
}
