//! `worker parallel-check`: what data-parallel training guarantees, computed by real processes
//! so tests can compare them.
//!
//! Every rank builds the same small networks and the same global batches, takes its share of
//! each batch (rank r the r-th of `world_size` equal slices), seeds libtorch per (step, rank) as
//! the trainer does, and then:
//! - [`Check::Gradient`]: one critic update's gradients, averaged across the ranks: by DDP's
//!   definition, the mean of the gradients one process computes on the same shares with the same
//!   latents, interpolation weights and dropout masks ([`reference_gradient`] computes that mean
//!   in one process);
//! - [`Check::Steps`]: full training steps; every rank then writes all its state (weights,
//!   BatchNorm statistics, Adam moments), which must be bitwise equal across ranks.

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use crate::adam::AdamConfig;
use crate::collective::{self, Collective};
use crate::gan::{Gan, StepConfig};
use crate::model::{ModelSpec, one_hot};
use crate::train::step_seed;

/// The seed of the networks, the batches and the steps.
const SEED: u64 = 7;
/// Rows of the global batch.
pub const GLOBAL_BATCH: i64 = 8;

/// What to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// One critic update's averaged gradients.
    Gradient,
    /// This many full training steps.
    Steps(u64),
}

/// The networks every rank starts from.
pub fn small_gan() -> Gan {
    let spec = ModelSpec {
        image_size: 16,
        channels: 3,
        classes: 2,
        z_dim: 8,
        width: 8,
        dropout: 0.3,
    };
    let adam = AdamConfig {
        lr: 1e-3,
        beta1: 0.5,
        beta2: 0.9,
        eps: 1e-7,
    };
    let step = StepConfig {
        critic_steps: 3,
        gp_weight: 10.0,
    };
    Gan::new(spec, Device::Cpu, adam, step, SEED)
}

/// Rank `rank`'s share of step `step`'s global batch: images in [-1, 1] and class indices.
pub fn share(step: u64, rank: usize, world_size: usize) -> (Tensor, Tensor) {
    tch::manual_seed(base::seed::mix(&[SEED, step, base::seed::tag::PARALLEL_CHECK]) as i64);
    let opts = (Kind::Float, Device::Cpu);
    let images = Tensor::rand([GLOBAL_BATCH, 3, 16, 16], opts) * 2.0 - 1.0;
    let classes = Tensor::randint(2, [GLOBAL_BATCH], (Kind::Int64, Device::Cpu));
    let rows = GLOBAL_BATCH / world_size as i64;
    let start = rows * rank as i64;
    (images.narrow(0, start, rows), classes.narrow(0, start, rows))
}

/// One critic update's gradients on `rank`'s share of step 1, as the flat buffer the ranks
/// exchange (not yet averaged).
fn rank_gradient(gan: &mut Gan, rank: usize, world_size: usize) -> Tensor {
    let (images, classes) = share(1, rank, world_size);
    tch::manual_seed(step_seed(SEED, 1, rank));
    let (grads, _) = gan.critic_gradients(&images, &one_hot(&classes, 2));
    gan.flat_critic_gradients(&grads)
}

/// The mean over `world_size` ranks' gradients, all computed in this process.
pub fn reference_gradient(world_size: usize) -> Tensor {
    let mut gan = small_gan();
    let sum = (0..world_size)
        .map(|rank| rank_gradient(&mut gan, rank, world_size))
        .reduce(|a, b| a + b)
        .expect("at least one rank");
    sum / world_size as f64
}

/// Runs `check` as this rank of `ranks`; returns the named tensors to compare.
pub fn run(check: Check, ranks: &mut dyn Collective) -> collective::Result<HashMap<String, Tensor>> {
    let (rank, world_size) = (ranks.rank(), ranks.world_size());
    let mut gan = small_gan();
    gan.broadcast_from_rank0(ranks)?;
    let mut out = HashMap::new();
    match check {
        Check::Gradient => {
            let gradient = rank_gradient(&mut gan, rank, world_size);
            ranks.all_reduce_mean(&[&gradient])?;
            out.insert("critic_gradient".to_string(), gradient);
        }
        Check::Steps(steps) => {
            for step in 1..=steps {
                let (images, classes) = share(step, rank, world_size);
                tch::manual_seed(step_seed(SEED, step, rank));
                let metrics = gan.step(&images, &classes, ranks)?;
                out.insert(format!("metrics.{step:04}"), metrics);
            }
            out.extend(gan.generator_tensors().into_iter().map(|(n, t)| (format!("g.{n}"), t)));
            out.extend(gan.critic_tensors().into_iter().map(|(n, t)| (format!("c.{n}"), t)));
            out.extend(gan.optimizer_tensors());
        }
    }
    Ok(out)
}
