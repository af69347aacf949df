//! Adam, with its state in the open so checkpoints can save and restore it exactly.
//!
//! Same update as `torch.optim.Adam` (no weight decay, no amsgrad):
//! `m = b1 m + (1-b1) g`, `v = b2 v + (1-b2) g^2`,
//! `p -= lr / (1-b1^t) * m / (sqrt(v) / sqrt(1-b2^t) + eps)`.

use tch::{Kind, Tensor};

/// Hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
}

/// Adam over a fixed list of named parameters.
#[derive(Debug)]
pub struct Adam {
    config: AdamConfig,
    params: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: i64,
}

impl Adam {
    /// An optimiser for `params` (name, tensor), with zero moments.
    pub fn new(params: Vec<(String, Tensor)>, config: AdamConfig) -> Self {
        let m = params.iter().map(|(_, p)| p.zeros_like()).collect();
        let v = params.iter().map(|(_, p)| p.zeros_like()).collect();
        Self {
            config,
            params,
            m,
            v,
            step: 0,
        }
    }

    /// The parameters, in order.
    pub fn params(&self) -> Vec<&Tensor> {
        self.params.iter().map(|(_, p)| p).collect()
    }

    /// Updates taken so far.
    pub fn step_count(&self) -> i64 {
        self.step
    }

    /// Applies one update with `grads` (one per parameter, in order).
    pub fn step(&mut self, grads: &[Tensor]) {
        assert_eq!(grads.len(), self.params.len(), "one gradient per parameter");
        let AdamConfig { lr, beta1, beta2, eps } = self.config;
        self.step += 1;
        let bias1 = 1.0 - beta1.powi(self.step as i32);
        let bias2_sqrt = (1.0 - beta2.powi(self.step as i32)).sqrt();
        let step_size = lr / bias1;
        tch::no_grad(|| {
            for (((_, p), m), (v, g)) in self
                .params
                .iter_mut()
                .zip(&mut self.m)
                .zip(self.v.iter_mut().zip(grads))
            {
                let _ = m.lerp_(g, 1.0 - beta1);
                let _ = v.g_mul_scalar_(beta2);
                let _ = v.g_add_(&(g * g * (1.0 - beta2)));
                let denom = v.sqrt() / bias2_sqrt + eps;
                let _ = p.g_sub_(&(&*m / denom * step_size));
            }
        });
    }

    /// The state as named tensors (`<prefix>.m.<param>`, `<prefix>.v.<param>`, `<prefix>.step`).
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len() + 1);
        for ((name, _), (m, v)) in self.params.iter().zip(self.m.iter().zip(&self.v)) {
            out.push((format!("{prefix}.m.{name}"), m.shallow_clone()));
            out.push((format!("{prefix}.v.{name}"), v.shallow_clone()));
        }
        out.push((format!("{prefix}.step"), Tensor::from_slice(&[self.step])));
        out
    }

    /// Restores the state written by [`Adam::state`]; names what is missing or mis-shaped.
    pub fn load_state(
        &mut self,
        prefix: &str,
        named: &std::collections::HashMap<String, Tensor>,
    ) -> Result<(), String> {
        let get = |key: String, like: &Tensor| -> Result<Tensor, String> {
            let t = named.get(&key).ok_or_else(|| format!("{key} is missing"))?;
            if t.size() != like.size() {
                return Err(format!(
                    "{key} has shape {:?}, the model needs {:?}",
                    t.size(),
                    like.size()
                ));
            }
            Ok(t.to_device(like.device()).to_kind(like.kind()))
        };
        for ((name, p), (m, v)) in self.params.iter().zip(self.m.iter_mut().zip(self.v.iter_mut())) {
            *m = get(format!("{prefix}.m.{name}"), p)?;
            *v = get(format!("{prefix}.v.{name}"), p)?;
        }
        let step = named
            .get(&format!("{prefix}.step"))
            .ok_or_else(|| format!("{prefix}.step is missing"))?;
        self.step = step.to_kind(Kind::Int64).int64_value(&[0]);
        Ok(())
    }
}
