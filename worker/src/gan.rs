//! The two networks, their optimisers, and the WGAN-GP training step of the seed.
//!
//! One step, for a batch of real images `x` with labels `y`:
//! - `critic_steps` times: `fake = G(z, y)` (no generator gradients), `alpha ~ U[0,1]` per
//!   sample, `x_hat = x + alpha (fake - x)`; the critic scores the fakes and the reals in two
//!   passes, `c_wass_loss = mean C(fake) - mean C(x)`; `c_gp = mean((||dC(x_hat)/dx_hat|| -
//!   1)^2)` with the norm over all pixels of each sample and an epsilon inside the square root,
//!   the input gradient built by [`Critic::input_gradient`] as a differentiable function of the
//!   critic's weights (a third pass, over `x_hat`'s rows only); `c_loss = c_wass_loss +
//!   gp_weight c_gp`; Adam on the critic only.
//! - Then `g_loss = -mean C(G(z', y), y)` with fresh `z'`; Adam on the generator only.
//!
//! Gradients are taken only with respect to the network being stepped.

use std::collections::HashMap;

use tch::{Device, Kind, Tensor, nn};

use crate::adam::{Adam, AdamConfig};
use crate::collective::{self, Collective};
use crate::config::JobConfig;
use crate::model::{Critic, Generator, ModelSpec, channels_last, one_hot};

/// Epsilon inside the gradient norm's square root (the book has none: NaN at zero gradient).
pub const GP_EPSILON: f64 = 1e-12;

/// The four metrics of a step, as in the book (the critic's from its last update).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepMetrics {
    /// `c_wass_loss + gp_weight * c_gp`.
    pub c_loss: f64,
    /// `mean C(fake) - mean C(real)`.
    pub c_wass_loss: f64,
    /// The gradient penalty.
    pub c_gp: f64,
    /// `-mean C(G(z))`.
    pub g_loss: f64,
}

impl StepMetrics {
    /// The first metric that is NaN or infinite, with its value.
    pub fn non_finite(&self) -> Option<(&'static str, f64)> {
        [
            ("c_loss", self.c_loss),
            ("c_wass_loss", self.c_wass_loss),
            ("c_gp", self.c_gp),
            ("g_loss", self.g_loss),
        ]
        .into_iter()
        .find(|(_, v)| !v.is_finite())
    }
}

/// The phases of a training step, in the order [`Gan::marked_step`] ends them (the first six
/// once per critic update).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Latents, the fakes (generator forward without gradients) and the interpolation weights.
    Fakes,
    /// The critic's scores of the fakes and the reals (the Wasserstein term).
    CriticScores,
    /// The critic on the interpolates (no graph), their input gradient as a differentiable
    /// function of the weights, the norm and the losses.
    Penalty,
    /// The critic's parameter gradients, through the scores and the input gradient.
    CriticBackward,
    /// The critic's gradients averaged across data-parallel ranks (nothing with one rank).
    CriticExchange,
    /// Adam on the critic.
    CriticAdam,
    /// Generator and critic forward for the generator loss.
    GeneratorForward,
    /// The generator's parameter gradients.
    GeneratorBackward,
    /// The generator's gradients averaged across ranks.
    GeneratorExchange,
    /// Adam on the generator; then rank 0's BatchNorm statistics to every rank and the metrics
    /// averaged.
    GeneratorAdam,
}

impl Phase {
    /// Every phase, in step order.
    pub const ALL: [Phase; 10] = [
        Phase::Fakes,
        Phase::CriticScores,
        Phase::Penalty,
        Phase::CriticBackward,
        Phase::CriticExchange,
        Phase::CriticAdam,
        Phase::GeneratorForward,
        Phase::GeneratorBackward,
        Phase::GeneratorExchange,
        Phase::GeneratorAdam,
    ];

    /// How many of [`Phase::ALL`] repeat per critic update.
    pub const CRITIC: usize = 6;

    /// A short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Fakes => "fakes",
            Phase::CriticScores => "critic_scores",
            Phase::Penalty => "penalty",
            Phase::CriticBackward => "critic_backward",
            Phase::CriticExchange => "critic_exchange",
            Phase::CriticAdam => "critic_adam",
            Phase::GeneratorForward => "generator_forward",
            Phase::GeneratorBackward => "generator_backward",
            Phase::GeneratorExchange => "generator_exchange",
            Phase::GeneratorAdam => "generator_adam",
        }
    }
}

/// Step hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepConfig {
    /// Critic updates per generator update.
    pub critic_steps: u64,
    /// Weight of the gradient penalty.
    pub gp_weight: f64,
}

/// Generator, critic, their variables and optimisers, on one device.
#[derive(Debug)]
pub struct Gan {
    /// Network shapes.
    pub spec: ModelSpec,
    /// Where tensors live.
    pub device: Device,
    g_vs: nn::VarStore,
    c_vs: nn::VarStore,
    /// The generator.
    pub generator: Generator,
    /// The critic.
    pub critic: Critic,
    g_opt: Adam,
    c_opt: Adam,
    step_config: StepConfig,
}

/// Trainable variables of a store, sorted by name (a stable order for optimiser state).
fn trainable(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

impl Gan {
    /// Builds both networks with weights drawn from `seed` (on the CPU, so every device starts
    /// from the same weights), then moves them to `device`.
    pub fn new(spec: ModelSpec, device: Device, adam: AdamConfig, step_config: StepConfig, seed: u64) -> Self {
        if device.is_cuda() {
            // A job's shapes never change: let cuDNN time its algorithms once per shape and keep
            // the fastest (process-wide; PyTorch leaves it off by default).
            tch::Cuda::cudnn_set_benchmark(true);
        }
        tch::manual_seed(seed as i64);
        let mut g_vs = nn::VarStore::new(Device::Cpu);
        let mut c_vs = nn::VarStore::new(Device::Cpu);
        let generator = Generator::new(&g_vs.root(), spec);
        let critic = Critic::new(&c_vs.root(), spec);
        g_vs.set_device(device);
        c_vs.set_device(device);
        for vs in [&g_vs, &c_vs] {
            for (_, mut var) in vs.variables() {
                tch::no_grad(|| var.set_data(&channels_last(&var)));
            }
        }
        let g_opt = Adam::new(trainable(&g_vs), adam);
        let c_opt = Adam::new(trainable(&c_vs), adam);
        Self {
            spec,
            device,
            g_vs,
            c_vs,
            generator,
            critic,
            g_opt,
            c_opt,
            step_config,
        }
    }

    /// The networks a job's config describes, for a dataset with `channels` and `classes`:
    /// its `[model]` shapes, its Adam and step settings and its seed.
    pub fn for_job(config: &JobConfig, channels: i64, classes: i64, device: Device) -> Self {
        let m = &config.model;
        let t = &config.train;
        let spec = ModelSpec {
            image_size: m.image_size,
            channels,
            classes,
            z_dim: m.z_dim,
            width: m.width,
            dropout: m.dropout,
        };
        let adam = AdamConfig {
            lr: t.lr,
            beta1: t.beta1,
            beta2: t.beta2,
            eps: t.adam_eps,
        };
        let step = StepConfig {
            critic_steps: t.critic_steps,
            gp_weight: t.gp_weight,
        };
        Self::new(spec, device, adam, step, t.seed)
    }

    /// `c_loss, c_wass_loss, c_gp` for given fakes and interpolation weights `alpha` `[batch]`:
    /// critic passes over the fakes and the reals for the Wasserstein term, and one over the
    /// interpolated images alone for the penalty, so that its gradient runs through `batch`
    /// rows. (Scoring all three in one concatenated pass made the penalty's double backward run
    /// through three times the rows, two thirds of them with a zero input gradient: 27.1 against
    /// 43.8 images/s at the book's settings on 2 cores.) Differentiable with respect to the
    /// critic's parameters.
    pub fn critic_losses(
        &self,
        real: &Tensor,
        fake: &Tensor,
        alpha: &Tensor,
        onehot: &Tensor,
    ) -> (Tensor, Tensor, Tensor) {
        self.marked_critic_losses(real, fake, alpha, onehot, &mut |_| {})
    }

    /// [`Gan::critic_losses`], calling `mark` at the end of each of its phases.
    fn marked_critic_losses(
        &self,
        real: &Tensor,
        fake: &Tensor,
        alpha: &Tensor,
        onehot: &Tensor,
        mark: &mut impl FnMut(Phase),
    ) -> (Tensor, Tensor, Tensor) {
        let batch = real.size()[0];
        let alpha = alpha.view([batch, 1, 1, 1]);
        let c_wass_loss = self.critic.forward(fake, onehot, true).mean(Kind::Float)
            - self.critic.forward(real, onehot, true).mean(Kind::Float);
        mark(Phase::CriticScores);
        let x_hat = real + &alpha * (fake - real);
        let grad = self.critic.input_gradient(&x_hat, onehot, true);
        let norm = (grad
            .square()
            .sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Float)
            + GP_EPSILON)
            .sqrt();
        let c_gp = (norm - 1.0).square().mean(Kind::Float);
        let c_loss = &c_wass_loss + &c_gp * self.step_config.gp_weight;
        mark(Phase::Penalty);
        (c_loss, c_wass_loss, c_gp)
    }

    /// One training step on real images in [-1, 1] `[batch, channels, size, size]` with class
    /// indices `[batch]`: this rank's share of the global batch. Randomness comes from
    /// libtorch's global generator (seed it per step and rank). Every optimiser update uses the
    /// gradients averaged over `ranks` (the gradient penalty's included), so all ranks take the
    /// same update; after it every rank holds rank 0's BatchNorm running statistics (DDP's
    /// choice), and the metrics are averaged too, so a NaN on one rank is a NaN on all.
    /// Returns the metrics as a `[4]` tensor on the device (read it once, to avoid syncs).
    pub fn step(&mut self, real: &Tensor, classes: &Tensor, ranks: &mut dyn Collective) -> collective::Result<Tensor> {
        self.marked_step(real, classes, ranks, |_| {})
    }

    /// [`Gan::step`], calling `mark` at the end of each [`Phase`] (`worker bench --profile`
    /// times them; the device must be synchronised there for the times to mean anything).
    pub fn marked_step(
        &mut self,
        real: &Tensor,
        classes: &Tensor,
        ranks: &mut dyn Collective,
        mut mark: impl FnMut(Phase),
    ) -> collective::Result<Tensor> {
        let batch = real.size()[0];
        let onehot = one_hot(classes, self.spec.classes);
        let opts = (Kind::Float, self.device);
        let mut critic_metrics = None;
        for _ in 0..self.step_config.critic_steps {
            let (grads, losses) = self.marked_critic_gradients(real, &onehot, &mut mark);
            self.c_opt.load_gradients(&grads);
            ranks.all_reduce_mean(&[self.c_opt.gradients()])?;
            mark(Phase::CriticExchange);
            self.c_opt.update();
            mark(Phase::CriticAdam);
            critic_metrics = Some(losses);
        }
        let z = Tensor::randn([batch, self.spec.z_dim], opts);
        let fake = self.generator.forward(&z, &onehot, true);
        let g_loss = -self.critic.forward(&fake, &onehot, true).mean(Kind::Float);
        mark(Phase::GeneratorForward);
        let grads = Tensor::run_backward(&[&g_loss], &self.g_opt.params(), false, false);
        mark(Phase::GeneratorBackward);
        self.g_opt.load_gradients(&grads);
        ranks.all_reduce_mean(&[self.g_opt.gradients()])?;
        mark(Phase::GeneratorExchange);
        self.g_opt.update();
        if ranks.world_size() > 1 {
            ranks.broadcast(&self.batch_norm_statistics().iter().collect::<Vec<_>>(), 0)?;
        }
        let [c_loss, c_wass_loss, c_gp] = critic_metrics.expect("at least one critic step");
        let metrics = Tensor::stack(&[c_loss, c_wass_loss, c_gp, g_loss.detach()], 0);
        ranks.all_reduce_mean(&[&metrics])?;
        mark(Phase::GeneratorAdam);
        Ok(metrics)
    }

    /// One critic update's gradients on this rank's batch, one per critic parameter in the
    /// optimiser's order, and its `[c_loss, c_wass_loss, c_gp]`: latents, interpolation weights
    /// and dropout masks drawn from libtorch's global generator, as [`Gan::step`] draws them.
    pub fn critic_gradients(&self, real: &Tensor, onehot: &Tensor) -> (Vec<Tensor>, [Tensor; 3]) {
        self.marked_critic_gradients(real, onehot, &mut |_| {})
    }

    fn marked_critic_gradients(
        &self,
        real: &Tensor,
        onehot: &Tensor,
        mark: &mut impl FnMut(Phase),
    ) -> (Vec<Tensor>, [Tensor; 3]) {
        let batch = real.size()[0];
        let opts = (Kind::Float, self.device);
        let z = Tensor::randn([batch, self.spec.z_dim], opts);
        let fake = tch::no_grad(|| self.generator.forward(&z, onehot, true));
        let alpha = Tensor::rand([batch], opts);
        mark(Phase::Fakes);
        let (c_loss, c_wass_loss, c_gp) = self.marked_critic_losses(real, &fake, &alpha, onehot, mark);
        let grads = Tensor::run_backward(&[&c_loss], &self.c_opt.params(), false, false);
        mark(Phase::CriticBackward);
        (grads, [c_loss.detach(), c_wass_loss.detach(), c_gp.detach()])
    }

    /// `grads` (from [`Gan::critic_gradients`]) as one flat tensor, in the order the ranks
    /// exchange them (a copy of the optimiser's gradient buffer).
    pub fn flat_critic_gradients(&mut self, grads: &[Tensor]) -> Tensor {
        self.c_opt.load_gradients(grads);
        self.c_opt.gradients().copy()
    }

    /// The generator's BatchNorm running means and variances.
    fn batch_norm_statistics(&self) -> Vec<Tensor> {
        let mut named: Vec<(String, Tensor)> = self
            .g_vs
            .variables()
            .into_iter()
            .filter(|(name, _)| name.ends_with(".running_mean") || name.ends_with(".running_var"))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named.into_iter().map(|(_, t)| t).collect()
    }

    /// Makes every rank's weights, BatchNorm statistics and optimiser moments rank 0's (at the
    /// start of a run and after a resume).
    pub fn broadcast_from_rank0(&mut self, ranks: &mut dyn Collective) -> collective::Result<()> {
        if ranks.world_size() == 1 {
            return Ok(());
        }
        // HashMap order differs between processes: every rank must list the same tensors in the
        // same order.
        let mut named: Vec<(String, Tensor)> = self
            .generator_tensors()
            .into_iter()
            .map(|(n, t)| (format!("g.{n}"), t))
            .collect();
        named.extend(self.critic_tensors().into_iter().map(|(n, t)| (format!("c.{n}"), t)));
        named.extend(
            self.optimizer_tensors()
                .into_iter()
                .filter(|(name, _)| !name.ends_with(".step")),
        );
        named.sort_by(|a, b| a.0.cmp(&b.0));
        ranks.broadcast(&named.iter().map(|(_, t)| t).collect::<Vec<_>>(), 0)
    }

    /// Reads a metrics tensor from [`Gan::step`].
    pub fn read_metrics(metrics: &Tensor) -> StepMetrics {
        let v: Vec<f64> =
            Vec::<f64>::try_from(metrics.to_kind(Kind::Double).to_device(Device::Cpu)).expect("4 metrics");
        StepMetrics {
            c_loss: v[0],
            c_wass_loss: v[1],
            c_gp: v[2],
            g_loss: v[3],
        }
    }

    /// Images in [-1, 1] for latents and class indices, with BatchNorm in inference mode.
    pub fn generate(&self, z: &Tensor, classes: &Tensor) -> Tensor {
        tch::no_grad(|| {
            self.generator.forward(
                &z.to_device(self.device),
                &one_hot(&classes.to_device(self.device), self.spec.classes),
                false,
            )
        })
    }

    /// Generator variables (weights and BatchNorm statistics) by name.
    pub fn generator_tensors(&self) -> HashMap<String, Tensor> {
        self.g_vs.variables()
    }

    /// Critic variables by name.
    pub fn critic_tensors(&self) -> HashMap<String, Tensor> {
        self.c_vs.variables()
    }

    /// Both optimisers' state.
    pub fn optimizer_tensors(&self) -> Vec<(String, Tensor)> {
        let mut state = self.g_opt.state("generator");
        state.extend(self.c_opt.state("critic"));
        state
    }

    /// Generator updates taken (restored from checkpoints).
    pub fn generator_steps(&self) -> i64 {
        self.g_opt.step_count()
    }

    /// Copies saved variables into a network; names any missing or mis-shaped one.
    pub fn load_generator(&mut self, named: &HashMap<String, Tensor>) -> Result<(), String> {
        copy_into(&self.g_vs, named)
    }

    /// Copies saved variables into the critic.
    pub fn load_critic(&mut self, named: &HashMap<String, Tensor>) -> Result<(), String> {
        copy_into(&self.c_vs, named)
    }

    /// Restores both optimisers.
    pub fn load_optimizers(&mut self, named: &HashMap<String, Tensor>) -> Result<(), String> {
        self.g_opt.load_state("generator", named)?;
        self.c_opt.load_state("critic", named)
    }
}

/// Copies saved tensors into a network's variables by name, refusing a missing name or a
/// shape that differs.
pub(crate) fn copy_into(vs: &nn::VarStore, named: &HashMap<String, Tensor>) -> Result<(), String> {
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            let saved = named.get(&name).ok_or_else(|| format!("{name} is missing"))?;
            if saved.size() != var.size() {
                return Err(format!(
                    "{name} has shape {:?}, the model needs {:?}",
                    saved.size(),
                    var.size()
                ));
            }
            var.copy_(saved);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collective::Single;

    fn small_gan() -> Gan {
        let spec = ModelSpec {
            image_size: 8,
            channels: 3,
            classes: 2,
            z_dim: 4,
            width: 4,
            dropout: 0.3,
        };
        let adam = AdamConfig {
            lr: 1e-3,
            beta1: 0.5,
            beta2: 0.9,
            eps: 1e-7,
        };
        let step = StepConfig {
            critic_steps: 2,
            gp_weight: 10.0,
        };
        Gan::new(spec, Device::Cpu, adam, step, 7)
    }

    #[test]
    fn a_marked_step_ends_every_phase_in_order_and_computes_the_same_step() {
        let _rng = crate::global_generator_lock();
        let real = Tensor::rand([4, 3, 8, 8], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let classes = Tensor::from_slice(&[0i64, 1, 1, 0]);
        let (mut plain, mut marked) = (small_gan(), small_gan());
        tch::manual_seed(3);
        let expected = Gan::read_metrics(&plain.step(&real, &classes, &mut Single).unwrap());
        let mut phases = Vec::new();
        tch::manual_seed(3);
        let metrics = Gan::read_metrics(
            &marked
                .marked_step(&real, &classes, &mut Single, |p| phases.push(p))
                .unwrap(),
        );
        assert_eq!(metrics, expected);
        let critic = &Phase::ALL[..Phase::CRITIC];
        let wanted: Vec<Phase> = [critic, critic, &Phase::ALL[Phase::CRITIC..]].concat();
        assert_eq!(phases, wanted);
    }
}
