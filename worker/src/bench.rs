//! `worker bench`: the speed of full training steps (critic steps + generator step, book
//! settings) on random data, without any I/O.

use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::adam::AdamConfig;
use crate::collective::{self, Collective};
use crate::gan::{Gan, Phase, StepConfig};
use crate::model::{ModelSpec, channels_last};

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Image size.
    pub image_size: i64,
    /// Batch size of each rank.
    pub batch: i64,
    /// Timed steps.
    pub steps: u64,
    /// Untimed warm-up steps.
    pub warmup: u64,
    /// Base channel count.
    pub width: i64,
    /// Device.
    pub device: Device,
    /// Also time each [`Phase`] of the step (the device is synchronised at every phase's end).
    pub profile: bool,
}

/// Result of [`run`].
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// Real images consumed per second, by all ranks together.
    pub images_per_sec: f64,
    /// Milliseconds per full step.
    pub ms_per_step: f64,
    /// With `profile`: milliseconds per step spent in each phase, in step order.
    pub phases: Vec<(Phase, f64)>,
}

impl std::fmt::Display for BenchResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "train_step images_per_sec={:.2} ms_per_step={:.1}",
            self.images_per_sec, self.ms_per_step
        )?;
        let total: f64 = self.phases.iter().map(|(_, ms)| ms).sum();
        for (phase, ms) in &self.phases {
            write!(
                f,
                "\n  phase {:<18} ms_per_step={ms:>8.1} share={:>5.1}%",
                phase.name(),
                100.0 * ms / total.max(f64::MIN_POSITIVE)
            )?;
        }
        Ok(())
    }
}

/// Waits for the device's queued work (CUDA runs asynchronously; the CPU does not).
fn synchronize(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Times `steps` training steps after `warmup` untimed ones, on this rank of `ranks` (the
/// batch is this rank's share).
pub fn run(options: &BenchOptions, ranks: &mut dyn Collective) -> collective::Result<BenchResult> {
    let spec = ModelSpec {
        image_size: options.image_size,
        channels: 3,
        classes: 2,
        z_dim: 32,
        width: options.width,
        dropout: 0.3,
    };
    let adam = AdamConfig {
        lr: 5e-5,
        beta1: 0.5,
        beta2: 0.9,
        eps: 1e-7,
    };
    let mut gan = Gan::new(
        spec,
        options.device,
        adam,
        StepConfig {
            critic_steps: 3,
            gp_weight: 10.0,
        },
        0,
    );
    let opts = (Kind::Float, options.device);
    // Real batches arrive channels-last from the loader (NHWC bytes viewed as NCHW).
    let real =
        channels_last(&(Tensor::rand([options.batch, 3, options.image_size, options.image_size], opts) * 2.0 - 1.0));
    let labels = Tensor::randint(2, [options.batch], (Kind::Int64, options.device));
    for _ in 0..options.warmup {
        Gan::read_metrics(&gan.step(&real, &labels, ranks)?);
    }
    let mut spent = [0.0f64; Phase::ALL.len()];
    let started = Instant::now();
    for _ in 0..options.steps {
        if options.profile {
            synchronize(options.device);
            let mut last = Instant::now();
            let metrics = gan.marked_step(&real, &labels, ranks, |phase| {
                synchronize(options.device);
                let now = Instant::now();
                spent[phase as usize] += (now - last).as_secs_f64();
                last = now;
            })?;
            Gan::read_metrics(&metrics);
        } else {
            Gan::read_metrics(&gan.step(&real, &labels, ranks)?);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let per_step = |s: f64| s * 1000.0 / options.steps as f64;
    Ok(BenchResult {
        images_per_sec: (options.steps as f64 * (options.batch * ranks.world_size() as i64) as f64) / seconds,
        ms_per_step: per_step(seconds),
        phases: if options.profile {
            Phase::ALL.iter().map(|&p| (p, per_step(spent[p as usize]))).collect()
        } else {
            Vec::new()
        },
    })
}
