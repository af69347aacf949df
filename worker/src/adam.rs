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

/// Tensors shaped like a list of parameters, all in one buffer: each parameter's part is a view
/// with the parameter's shape and memory order (a channels-last 4-D tensor's part is stored in
/// NHWC order), so that whole-list arithmetic is a few kernels over the buffer.
#[derive(Debug)]
struct Flat {
    buffer: Tensor,
    views: Vec<Tensor>,
}

impl Flat {
    fn zeros_like(params: &[Tensor]) -> Self {
        let total: i64 = params.iter().map(|p| p.numel() as i64).sum();
        let (kind, device) = params
            .first()
            .map_or((Kind::Float, tch::Device::Cpu), |p| (p.kind(), p.device()));
        let buffer = Tensor::zeros([total], (kind, device));
        let mut offset = 0;
        let views = params
            .iter()
            .map(|p| {
                let count = p.numel() as i64;
                let view = view_like(&buffer.narrow(0, offset, count), p);
                offset += count;
                view
            })
            .collect();
        Self { buffer, views }
    }
}

/// `segment` (1-D, as many elements as `like`) viewed with `like`'s shape and memory order.
fn view_like(segment: &Tensor, like: &Tensor) -> Tensor {
    let size = like.size();
    match size[..] {
        [n, c, h, w] if !like.is_contiguous() && like.stride() == [h * w * c, 1, w * c, c] => {
            segment.view([n, h, w, c]).permute([0, 3, 1, 2])
        }
        _ => segment.view(size.as_slice()),
    }
}

/// Adam over a fixed list of named parameters.
///
/// The parameters, their gradients and both moments each live in one flat buffer (the
/// parameters' variables are re-pointed at views of theirs): an update is six kernels whatever
/// the number of parameters, where a loop over them launches six per parameter (the cost that
/// ATen's `_foreach_` and fused Adam remove on GPUs), and the gradients are one tensor to
/// exchange between data-parallel ranks. The arithmetic per element is the same.
#[derive(Debug)]
pub struct Adam {
    config: AdamConfig,
    names: Vec<String>,
    params: Vec<Tensor>,
    flat_params: Flat,
    grads: Flat,
    m: Flat,
    v: Flat,
    step: i64,
}

impl Adam {
    /// An optimiser for `params` (name, tensor), with zero moments. The parameters' data moves
    /// into the optimiser's buffer (same values, same memory order); the variables stay the
    /// same tensors for autograd and their owners.
    pub fn new(params: Vec<(String, Tensor)>, config: AdamConfig) -> Self {
        let (names, mut params): (Vec<String>, Vec<Tensor>) = params.into_iter().unzip();
        let flat_params = Flat::zeros_like(&params);
        tch::no_grad(|| {
            for (param, view) in params.iter_mut().zip(&flat_params.views) {
                let mut view = view.shallow_clone();
                view.copy_(param);
                param.set_data(&view);
            }
        });
        Self {
            config,
            grads: Flat::zeros_like(&params),
            m: Flat::zeros_like(&params),
            v: Flat::zeros_like(&params),
            names,
            params,
            flat_params,
            step: 0,
        }
    }

    /// The parameters, in order.
    pub fn params(&self) -> Vec<&Tensor> {
        self.params.iter().collect()
    }

    /// Updates taken so far.
    pub fn step_count(&self) -> i64 {
        self.step
    }

    /// Applies one update with `grads` (one per parameter, in order).
    pub fn step(&mut self, grads: &[Tensor]) {
        self.load_gradients(grads);
        self.update();
    }

    /// Copies `grads` (one per parameter, in order) into the gradient buffer.
    pub fn load_gradients(&mut self, grads: &[Tensor]) {
        assert_eq!(grads.len(), self.params.len(), "one gradient per parameter");
        tch::no_grad(|| {
            for (view, grad) in self.grads.views.iter_mut().zip(grads) {
                view.copy_(grad);
            }
        });
    }

    /// The gradient buffer: every parameter's gradient from [`Adam::load_gradients`], flat, in
    /// parameter order (what data-parallel ranks average before [`Adam::update`]).
    pub fn gradients(&self) -> &Tensor {
        &self.grads.buffer
    }

    /// Applies one update with the gradients in the buffer.
    pub fn update(&mut self) {
        let AdamConfig { lr, beta1, beta2, eps } = self.config;
        self.step += 1;
        let bias1 = 1.0 - beta1.powi(self.step as i32);
        let bias2_sqrt = (1.0 - beta2.powi(self.step as i32)).sqrt();
        let step_size = lr / bias1;
        let (p, g, m, v) = (
            &mut self.flat_params.buffer,
            &self.grads.buffer,
            &mut self.m.buffer,
            &mut self.v.buffer,
        );
        tch::no_grad(|| {
            let _ = m.lerp_(g, 1.0 - beta1);
            let _ = v.g_mul_scalar_(beta2);
            let _ = v.g_add_(&(g * g * (1.0 - beta2)));
            let denom = v.sqrt() / bias2_sqrt + eps;
            let _ = p.g_sub_(&(&*m / denom * step_size));
        });
    }

    /// The state as named tensors (`<prefix>.m.<param>`, `<prefix>.v.<param>`, `<prefix>.step`).
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len() + 1);
        for (name, (m, v)) in self.names.iter().zip(self.m.views.iter().zip(&self.v.views)) {
            out.push((format!("{prefix}.m.{name}"), m.shallow_clone()));
            out.push((format!("{prefix}.v.{name}"), v.shallow_clone()));
        }
        out.push((format!("{prefix}.step"), Tensor::from_slice(&[self.step])));
        out
    }

    /// Restores the state written by [`Adam::state`]; names what is missing or mis-shaped, and
    /// changes nothing then.
    pub fn load_state(
        &mut self,
        prefix: &str,
        named: &std::collections::HashMap<String, Tensor>,
    ) -> Result<(), String> {
        let get = |key: String, like: &Tensor| -> Result<&Tensor, String> {
            let t = named.get(&key).ok_or_else(|| format!("{key} is missing"))?;
            if t.size() != like.size() {
                return Err(format!(
                    "{key} has shape {:?}, the model needs {:?}",
                    t.size(),
                    like.size()
                ));
            }
            Ok(t)
        };
        let step = named
            .get(&format!("{prefix}.step"))
            .ok_or_else(|| format!("{prefix}.step is missing"))?;
        let mut loaded = Vec::with_capacity(2 * self.names.len());
        for (name, param) in self.names.iter().zip(&self.params) {
            loaded.push(get(format!("{prefix}.m.{name}"), param)?);
            loaded.push(get(format!("{prefix}.v.{name}"), param)?);
        }
        tch::no_grad(|| {
            let views = self.m.views.iter_mut().zip(self.v.views.iter_mut());
            for ((m, v), pair) in views.zip(loaded.chunks(2)) {
                m.copy_(pair[0]);
                v.copy_(pair[1]);
            }
        });
        self.step = step.to_kind(Kind::Int64).int64_value(&[0]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::channels_last;

    #[test]
    fn the_flat_update_moves_the_callers_variables_by_adams_formula() {
        let config = AdamConfig {
            lr: 0.1,
            beta1: 0.5,
            beta2: 0.9,
            eps: 1e-7,
        };
        let opts = (Kind::Double, tch::Device::Cpu);
        let conv = channels_last(&Tensor::randn([4, 3, 2, 2], opts)).set_requires_grad(true);
        let bias = Tensor::randn([4], opts).set_requires_grad(true);
        let (conv0, bias0) = (conv.copy(), bias.copy());
        let mut adam = Adam::new(
            vec![("a".into(), conv.shallow_clone()), ("b".into(), bias.shallow_clone())],
            config,
        );
        assert_eq!(conv.stride(), conv0.stride(), "memory order kept");
        let grads = [Tensor::randn([4, 3, 2, 2], opts), Tensor::randn([4], opts)];
        adam.step(&grads);
        assert_eq!(adam.gradients().size(), vec![52]);
        // First step: m = (1-b1) g, v = (1-b2) g^2, p -= lr/(1-b1) m / (sqrt(v)/sqrt(1-b2) + eps).
        for ((p, p0), g) in [(&conv, &conv0), (&bias, &bias0)].into_iter().zip(&grads) {
            let m = g * (1.0 - config.beta1);
            let v = g * g * (1.0 - config.beta2);
            let expected = p0 - m / (v.sqrt() / (1.0 - config.beta2).sqrt() + config.eps) * (config.lr / 0.5);
            let diff = (p - expected).abs().max().double_value(&[]);
            assert!(diff < 1e-12, "parameter off by {diff}");
        }
        // The state round-trips, and a wrong shape is named and changes nothing.
        let saved: std::collections::HashMap<String, Tensor> =
            adam.state("x").into_iter().map(|(n, t)| (n, t.copy())).collect();
        let mut fresh = Adam::new(vec![("a".into(), conv0.copy()), ("b".into(), bias0.copy())], config);
        let mut wrong = saved
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect::<std::collections::HashMap<_, _>>();
        wrong.insert("x.v.b".into(), Tensor::zeros([5], opts));
        assert_eq!(
            fresh.load_state("x", &wrong).unwrap_err(),
            "x.v.b has shape [5], the model needs [4]"
        );
        assert_eq!(fresh.step_count(), 0);
        fresh.load_state("x", &saved).unwrap();
        assert_eq!(fresh.step_count(), 1);
        for (name, t) in fresh.state("x") {
            assert!(t.equal(&saved[&name]), "{name} restored");
        }
    }
}
